"""Held-out regression benchmark: the shipped regressor against the mean face and per-image fitting.

    python -m benchmarks.regression --json docs/results/regression_benchmark.json

On the synthetic ``benchmark`` split (seeds no training config uses; geometry beyond the model
on, so the scan is never exactly reachable), NoW protocol (``regressor.evaluation.now``), with
the trivial baseline always beside the learned figure:

* ``mean_face``: the model's mean shape (what a regressor that learnt nothing predicts);
* ``shipped``: ``checkpoints/regressor.ckpt`` (read from the exported int8 file, as users get it);
* ``fitting``: per-image fitting without the critic from noisy landmarks (sigma 1.5 px),
  ``benchmarks.fitting.fit_benchmark_faces`` with the calibrated ``configs/fitting/no_critic.yaml``;
* ``shifted.*``: mean face and shipped regressor on a distribution the regressor never trained
  on (harsh single light, bright studio background, wider skin tones), so that overfitting to
  the generator shows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_json
from benchmarks.psl_common import FaceSet, benchmark_config, face_set, score_meshes, summarise
from regressor.evaluation.metrics import vertex_errors_mm
from regressor.inference import SHIPPED_REGRESSOR, Reconstructor
from regressor.synthetic.config import SyntheticConfig
from regressor.types import FaceMesh


def shifted_config() -> SyntheticConfig:
    """Lighting, background and skin the shipped regressor's pool never shows."""
    config = benchmark_config()
    config.max_lights = 1
    config.multi_light = True
    config.key_intensity_range = (0.9, 1.2)
    config.ambient_range = (0.03, 0.1)
    config.background = "constant"
    config.background_value = 0.85
    config.albedo_std = 2.0
    config.hair_strand_probability = 0.0
    return config


def score(faces: FaceSet, mesh: FaceMesh, refine_steps: int) -> dict[str, Any]:
    results = summarise(score_meshes(mesh.vertices, mesh.now_landmarks3d, mesh.faces, faces, refine_steps))
    _, aligned = vertex_errors_mm(mesh.vertices, faces.vertices)
    return {"median_mm": results["median_mm"], "mean_mm": results["mean_mm"], "std_mm": results["std_mm"],
            "vertex_error_aligned_mm": float(aligned.mean()),
            "per_image_median_mm": [round(v, 4) for v in results["per_image_median_mm"]]}


def mean_face(face_model, count: int) -> FaceMesh:
    with torch.no_grad():
        return face_model(face_model.zero_params(count))


def regressor_meshes(reconstructor: Reconstructor, faces: FaceSet) -> FaceMesh:
    return reconstructor.predict(faces.image, batch_size=16).mesh


def with_ratio(arm: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    arm["ratio_to_mean_face"] = round(arm["median_mm"] / baseline["median_mm"], 4)
    improved = sum(a < b for a, b in zip(arm["per_image_median_mm"], baseline["per_image_median_mm"]))
    arm["faces_better_than_mean_face"] = f"{improved}/{len(baseline['per_image_median_mm'])}"
    return arm


def run(count: int, checkpoint: Path, refine_steps: int, fitting: bool, fitting_count: int) -> dict[str, Any]:
    started = time.perf_counter()
    reconstructor = Reconstructor.from_checkpoint(checkpoint)
    face_model = reconstructor.pipeline.face_model
    size = reconstructor.image_size
    faces = face_set(face_model, "benchmark", count, size)
    out: dict[str, Any] = {"faces": count, "image_size": size, "checkpoint": str(checkpoint),
                           "refine_steps": refine_steps}
    out["mean_face"] = score(faces, mean_face(face_model, count), refine_steps)
    out["shipped"] = with_ratio(score(faces, regressor_meshes(reconstructor, faces), refine_steps), out["mean_face"])
    print(f"mean face {out['mean_face']['median_mm']:.3f} mm, shipped {out['shipped']['median_mm']:.3f} mm "
          f"({out['shipped']['ratio_to_mean_face']:.3f}x)", flush=True)
    shifted = face_set(face_model, "benchmark", count, size, config=shifted_config())
    base = score(shifted, mean_face(face_model, count), refine_steps)
    out["shifted"] = {"mean_face": base,
                      "shipped": with_ratio(score(shifted, regressor_meshes(reconstructor, shifted), refine_steps), base)}
    out["shifted"]["shipped_ratio_to_mean_face"] = out["shifted"]["shipped"]["ratio_to_mean_face"]
    print(f"shifted: mean face {base['median_mm']:.3f} mm, shipped {out['shifted']['shipped']['median_mm']:.3f} mm "
          f"({out['shifted']['shipped_ratio_to_mean_face']:.3f}x)", flush=True)
    if fitting:
        from benchmarks.fitting import fit_benchmark_faces

        subset = faces.slice(0, fitting_count)
        fitted = fit_benchmark_faces(subset, face_model)
        fit_score = score(subset, fitted.mesh, refine_steps)
        sub_mean = score(subset, mean_face(face_model, fitting_count), refine_steps)
        out["fitting"] = with_ratio(fit_score, sub_mean)
        out["fitting"]["faces"] = fitting_count
        out["fitting"]["seconds_per_image"] = round(fitted.seconds_per_image, 2)
        print(f"fitting ({fitting_count} faces): {fit_score['median_mm']:.3f} mm "
              f"({out['fitting']['ratio_to_mean_face']:.3f}x the mean face on those faces)", flush=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def save_grid(reconstructor: Reconstructor, faces: FaceSet, path: Path, count: int = 4) -> None:
    """Rows of input | mean face at the predicted pose | prediction (grey) | prediction over the input."""
    from torchvision.utils import make_grid, save_image

    from regressor.io.visuals import grey_to_rgb, overlay

    pipeline = reconstructor.pipeline
    with torch.no_grad():
        result = reconstructor.predict(faces.image[:count])
        mean_params = result.params.clone()
        for name in ("shape", "expression", "jaw_pose"):
            getattr(mean_params, name).zero_()
        _, mean_renders = pipeline.render_params(mean_params)
    image = result.images.float()
    panels = [image, overlay(image, mean_renders.shaded, mean_renders.mask),
              grey_to_rgb(result.renders.shaded), overlay(image, result.renders.shaded, result.renders.mask)]
    grid = make_grid(torch.stack(panels, 1).flatten(0, 1).clamp(0, 1), nrow=len(panels), padding=2, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.regression", description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=30, help="benchmark faces (>= 30 for reported figures)")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_REGRESSOR)
    p.add_argument("--refine-steps", type=int, default=20, help="NoW scan-to-mesh refinement steps")
    p.add_argument("--no-fitting", action="store_true", help="skip the per-image fitting arm")
    p.add_argument("--fitting-faces", type=int, default=30, help="faces fitted for the fitting arm")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None,
                   help="png: input | mean face at the predicted pose | prediction | prediction over the input")
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        raise SystemExit(f"benchmarks.regression: checkpoint {args.checkpoint} does not exist")
    if args.grid:
        reconstructor = Reconstructor.from_checkpoint(args.checkpoint)
        save_grid(reconstructor, face_set(reconstructor.pipeline.face_model, "benchmark", 4, reconstructor.image_size),
                  args.grid)
    out = run(args.faces, args.checkpoint, args.refine_steps, not args.no_fitting, args.fitting_faces)
    write_json(args.json, out, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k not in ("mean_face", "shipped", "shifted", "fitting")}))
    print(f"took {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
