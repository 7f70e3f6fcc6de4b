"""Rasterizer speed on the CPU: our torch backend vs pytorch3d, forward + backward.

    python -m benchmarks.rasterizer --json rasterizer.json [--quick] [--threads N]

The built-in head (``build_face_model()``) in 8 poses is rasterized at 64, 128 and 224 px
(batch 8, back faces culled as in ``Renderer``); each timed step is ``rasterize`` plus a
backward pass through barycentrics and depth. Torch: one warm-up, then the median of
``--repeats`` runs. pytorch3d's CPU rasterizer takes seconds to a minute per batch, so it
gets no warm-up and ``--pytorch3d-repeats`` (default 2; ``--quick``: 1 run, 64/128 px only).
Also reported: the share of pixels where both backends pick the same face, the full
``Renderer`` (torch backend) throughput, and process CPU time per batch. img/s figures are
wall-clock on whatever else the machine is running (the load average at the start is in the
JSON); the CPU-time speedup is the steadier figure on a shared machine. ``--threads 1`` avoids
OpenMP oversubscription there; both backends always run under the same setting.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.output import write_json
from regressor.face_model import FaceModel, build_face_model
from regressor.render import Renderer, project_weak_perspective, rasterize

BATCH = 8
SIZES = (64, 128, 224)


def posed_heads(model: FaceModel, batch: int = BATCH):
    """The built-in head in ``batch`` poses (yaw sweep, some pitch/roll, jaw opening)."""
    params = model.zero_params(batch)
    steps = torch.linspace(-1.0, 1.0, batch)
    params.global_pose = torch.stack([0.25 * steps.flip(0), 0.7 * steps, 0.1 * steps], dim=1)
    params.jaw_pose[:, 0] = 0.15 * (steps + 1.0)
    with torch.no_grad():
        mesh = model(params)
    return mesh, params.camera


def time_step(step, repeats: int, warmup: int) -> tuple[float, float, object]:
    """Median wall-clock and process-CPU seconds of ``step()`` over ``repeats`` runs after ``warmup``.

    CPU time is reported too because on a shared machine it is far less sensitive to the
    other processes than wall-clock time.
    """
    result = None
    for _ in range(warmup):
        result = step()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), result


def rasterize_step(verts_screen: torch.Tensor, faces: torch.Tensor, size: int, backend: str):
    def step():
        verts = verts_screen.clone().requires_grad_(True)
        fragments = rasterize(verts, faces, size, backend=backend, cull_backfaces=True)
        covered = fragments.mask
        loss = fragments.bary_coords[covered].square().sum() + fragments.zbuf[covered].sum()
        loss.backward()
        return fragments.pix_to_face.detach()
    return step


def renderer_step(mesh, camera, size: int):
    renderer = Renderer(image_size=size, backend="torch")

    def step():
        vertices = mesh.vertices.clone().requires_grad_(True)
        renders = renderer(type(mesh)(vertices, mesh.faces, mesh.landmarks3d, mesh.now_landmarks3d), camera)
        (renders.shaded.mean() + renders.albedo_shaded.mean()).backward()
    return step


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_face_model()
    mesh, camera = posed_heads(model)
    results: dict = {
        "batch": BATCH, "num_faces": int(mesh.faces.shape[0]), "num_vertices": int(mesh.vertices.shape[1]),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0], "quick": args.quick,
        "torch_repeats": args.repeats, "pytorch3d_repeats": 1 if args.quick else args.pytorch3d_repeats,
    }
    rows = []
    for size in SIZES:
        verts_screen = project_weak_perspective(mesh.vertices, camera, size)
        torch_s, torch_cpu, torch_faces = time_step(rasterize_step(verts_screen, mesh.faces, size, "torch"),
                                                    args.repeats, 1)
        render_s, _, _ = time_step(renderer_step(mesh, camera, size), args.repeats, 1)
        results[f"torch_img_per_s_{size}"] = BATCH / torch_s
        results[f"torch_cpu_s_per_batch_{size}"] = torch_cpu
        results[f"torch_renderer_img_per_s_{size}"] = BATCH / render_s
        row = {"size": size, "torch_ms": 1e3 * torch_s, "renderer_ms": 1e3 * render_s}
        if not (args.quick and size > 128) and not args.skip_pytorch3d:
            p3d_s, p3d_cpu, p3d_faces = time_step(rasterize_step(verts_screen, mesh.faces, size, "pytorch3d"),
                                                  results["pytorch3d_repeats"], 0)
            results[f"pytorch3d_cpu_s_per_batch_{size}"] = p3d_cpu
            results[f"speedup_cpu_time_{size}"] = p3d_cpu / torch_cpu
            agreement = (torch_faces == p3d_faces).float().mean().item()
            results[f"pytorch3d_img_per_s_{size}"] = BATCH / p3d_s
            results[f"speedup_vs_pytorch3d_{size}"] = p3d_s / torch_s
            results[f"pix_to_face_agreement_{size}"] = agreement
            row.update(pytorch3d_ms=1e3 * p3d_s, speedup=p3d_s / torch_s, agreement=agreement,
                       cpu_speedup=p3d_cpu / torch_cpu)
        rows.append(row)
        print_row(row, header=size == SIZES[0])
    if "pix_to_face_agreement_128" in results:
        results["pix_to_face_agreement"] = results["pix_to_face_agreement_128"]
    return results


def print_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'size':>5} | {'torch ms/batch':>14} | {'img/s':>7} | {'pytorch3d ms/batch':>18} | {'img/s':>6} | "
              f"{'speedup':>7} | {'CPU-time speedup':>16} | {'same face':>9} | {'Renderer img/s':>14}", flush=True)
    p3d = row.get("pytorch3d_ms")
    p3d_cols = (f"{p3d:18.0f} | {BATCH * 1e3 / p3d:6.2f} | {row['speedup']:6.0f}x | {row['cpu_speedup']:15.0f}x | "
                f"{100 * row['agreement']:8.3f}%"
                if p3d is not None else f"{'-':>18} | {'-':>6} | {'-':>7} | {'-':>16} | {'-':>9}")
    print(f"{row['size']:>5} | {row['torch_ms']:14.1f} | {BATCH * 1e3 / row['torch_ms']:7.1f} | {p3d_cols} | "
          f"{BATCH * 1e3 / row['renderer_ms']:14.1f}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the measured figures here")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of the torch backend")
    parser.add_argument("--pytorch3d-repeats", type=int, default=2, help="timed runs of pytorch3d (slow)")
    parser.add_argument("--quick", action="store_true", help="pytorch3d once, and not at 224 px")
    parser.add_argument("--skip-pytorch3d", action="store_true", help="time only our backend")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    results = run(args)
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
