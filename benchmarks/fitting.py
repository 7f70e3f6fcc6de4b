"""Per-image fitting on synthetic face sets: the calibration sweep (``val``) and the benchmark.

    OMP_NUM_THREADS=1 python -m benchmarks.fitting calibrate --json docs/results/fitting_calibration.json
    OMP_NUM_THREADS=1 python -m benchmarks.fitting benchmark --json docs/results/fitting_benchmark.json

Both fit with **noisy landmarks**: the true 68 plus Gaussian noise of ``sigma`` px (1.5 px, as
as the critic's operating point needs), so the fit cannot lean on landmarks no detector gives. Errors are the NoW
protocol (``regressor.evaluation.now``) against the ground-truth scan (model mesh + geometry
beyond the model), beside the mean face, as ``benchmarks.psl_common`` builds them.

``calibrate`` chooses the prior weights and the schedule on the ``val`` split only; the
``benchmark`` split is measured once, with the config the sweep chose.

``fit_benchmark_faces`` is the entry point other benchmarks call (``benchmarks.regression``'s
``fitting.*`` arm): a ``FaceSet`` in, fitted meshes out.
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks.output import write_json
from torch import Tensor

from benchmarks.psl_common import FaceSet, face_set, score_meshes, summarise
from regressor.fitting import fit_images, stages_from_config
from regressor.fitting_cli import build_components
from regressor.fitting_config import load_config
from regressor.types import FaceMesh

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIT_CONFIG = REPO_ROOT / "configs" / "fitting" / "no_critic.yaml"
LANDMARK_NOISE_PX = 1.5


@dataclass
class FittedFaces:
    """Fitted meshes of a ``FaceSet`` (same order) and the wall time per image."""

    mesh: FaceMesh
    seconds_per_image: float


def noisy_landmarks(faces: FaceSet, sigma_px: float = LANDMARK_NOISE_PX, seed: int = 0) -> Tensor:
    """(B, 68, 2) the true landmarks plus N(0, sigma_px^2) per coordinate (fixed by ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(faces.landmarks.shape, generator=generator, dtype=faces.landmarks.dtype)
    return faces.landmarks + sigma_px * noise


def with_overrides(config: dict[str, Any], priors: Optional[dict[str, float]] = None,
                   stages: Optional[list[dict[str, Any]]] = None,
                   photometric: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A copy of a fitting config with regulariser prior weights, the stage list and/or the
    photometric term's settings (e.g. ``{"trim": 0.3}``) replaced."""
    config = copy.deepcopy(config)
    if photometric:
        for loss in config["losses"]:
            if loss["name"] == "photometric":
                loss.update(photometric)
    if priors:
        for loss in config["losses"]:
            if loss["name"] == "regularizers":
                loss.update(priors)
    if stages is not None:
        config["stages"] = copy.deepcopy(stages)
    return config


def fit_benchmark_faces(
    faces: FaceSet,
    face_model: torch.nn.Module,
    config: str | Path | dict[str, Any] | None = None,
    landmark_noise_px: float = LANDMARK_NOISE_PX,
    noise_seed: int = 0,
    batch_size: int = 8,
    steps_scale: float = 1.0,
    progress: bool = False,
) -> FittedFaces:
    """Fit every face of ``faces`` from its noisy landmarks; returns the fitted meshes.

    Args:
        faces: the set (its image side must be the config's ``image_size``; build it with
            ``benchmarks.psl_common.face_set(face_model, split, count, image_size)``).
        face_model: the model to fit (the one the faces were generated with).
        config: a fitting yaml path or an already loaded dict; default the calibrated
            ``configs/fitting/no_critic.yaml`` (``configs/fitting/default.yaml`` adds the critic).
        landmark_noise_px: sigma of the Gaussian landmark noise (0 = the true landmarks).
        noise_seed: seed of that noise (both arms of a comparison should share it).
        batch_size: faces fitted at once (fits are per sample; this only trades memory for speed).
        steps_scale: multiplies every stage's steps (quick runs).
    """
    config = load_config(config or DEFAULT_FIT_CONFIG) if not isinstance(config, dict) else config
    size = int(config.get("image_size", 64))
    if faces.image.shape[-1] != size:
        raise ValueError(f"fit_benchmark_faces: the faces are {faces.image.shape[-1]} px, the config fits at {size} px")
    _, renderer, stack = build_components(config)
    stages = stages_from_config(config["stages"])
    for stage in stages:
        stage.steps = max(0, round(stage.steps * steps_scale))
    landmarks = noisy_landmarks(faces, landmark_noise_px, noise_seed) if landmark_noise_px > 0 else faces.landmarks
    meshes = []
    start = time.perf_counter()
    for first in range(0, len(faces), batch_size):
        part = slice(first, first + batch_size)
        result = fit_images(faces.image[part], landmarks[part], stack, face_model, renderer, stages=stages,
                            landmarks_valid=faces.landmarks_valid[part], learning_rates=config.get("learning_rates"),
                            progress=progress)
        meshes.append(result.mesh)
    seconds = (time.perf_counter() - start) / max(len(faces), 1)
    return FittedFaces(FaceMesh.cat(meshes), seconds)


def evaluate(faces: FaceSet, mesh: FaceMesh, refine_steps: int = 50) -> dict[str, Any]:
    """Pooled NoW statistics of fitted meshes against the set's scans."""
    return summarise(score_meshes(mesh.vertices, mesh.now_landmarks3d, mesh.faces, faces, refine_steps))


def mean_face_summary(faces: FaceSet, face_model, refine_steps: int = 50) -> dict[str, Any]:
    with torch.no_grad():
        mesh = face_model(face_model.zero_params(len(faces)))
    return evaluate(faces, mesh, refine_steps)


# ----------------------------------------------------------------------------------- schedules
def schedule(rigid: int, shape: int, appearance: int, photometric: float = 1.0) -> list[dict[str, Any]]:
    """The no-critic schedule with the given stage lengths (steps)."""
    geometry = ["shape", "expression", "jaw_pose", "neck_pose", "global_pose", "camera"]
    return [
        {"name": "rigid", "steps": rigid, "optimize": ["global_pose", "camera"], "weights": {"landmarks": 1.0},
         "lr_scale": 2.0},
        {"name": "shape", "steps": shape, "optimize": geometry, "weights": {"landmarks": 1.0, "regularizers": 1.0}},
        {"name": "appearance", "steps": appearance, "optimize": geometry + ["albedo", "light"],
         "weights": {"landmarks": 1.0, "regularizers": 1.0, "photometric": photometric}},
    ]


SWEEP_PRIORS = [  # (shape, expression) prior weights; phase 1 of the sweep
    (1e-3, 1e-3), (1e-4, 1e-3), (1e-4, 1e-4), (1e-5, 1e-4), (1e-5, 1e-5), (3e-5, 3e-4),
]
SWEEP_SCHEDULES = {  # phase 2, at the best priors of phase 1
    "20/70/110 (shipped)": schedule(20, 70, 110),
    "20/130/50": schedule(20, 130, 50),
    "20/40/140": schedule(20, 40, 140),
    "20/70/110, photometric x3": schedule(20, 70, 110, photometric=3.0),
}


SWEEP_REFINE = {  # phase 3: around the best of phases 1-2 (shape 1e-4, expression 1e-4, 20/70/110)
    "priors 2e-4 / 1e-4": ({"shape": 2e-4, "expression": 1e-4}, schedule(20, 70, 110)),
    "priors 5e-5 / 1e-4": ({"shape": 5e-5, "expression": 1e-4}, schedule(20, 70, 110)),
    "priors 1e-4 / 3e-5": ({"shape": 1e-4, "expression": 3e-5}, schedule(20, 70, 110)),
    "photometric x0.3": ({"shape": 1e-4, "expression": 1e-4}, schedule(20, 70, 110, photometric=0.3)),
    "landmarks only 20/180/0": ({"shape": 1e-4, "expression": 1e-4}, schedule(20, 180, 0)),
}


SWEEP_PHOTOMETRIC = {  # phase 4: the photometric weight, the one lever phase 3 found
    "photometric x0.1": ({"shape": 1e-4, "expression": 1e-4}, schedule(20, 70, 110, photometric=0.1)),
    "photometric x0.3, priors 2e-4 / 2e-4": ({"shape": 2e-4, "expression": 2e-4}, schedule(20, 70, 110, photometric=0.3)),
    "photometric x0.3, 20/130/50": ({"shape": 1e-4, "expression": 1e-4}, schedule(20, 130, 50, photometric=0.3)),
}


SWEEP_ROBUST = {  # phase 5: a trimmed (robust) photometric term, at priors 1e-4 / 1e-4; 24 val faces
    "untrimmed, photometric x0.3, 20/130/50 (phase 4's choice)": (0.0, schedule(20, 130, 50, photometric=0.3)),
    "trim 0.2, photometric x0.3, 20/130/50": (0.2, schedule(20, 130, 50, photometric=0.3)),
    "trim 0.3, photometric x0.3, 20/130/50": (0.3, schedule(20, 130, 50, photometric=0.3)),
    "trim 0.4, photometric x0.3, 20/130/50": (0.4, schedule(20, 130, 50, photometric=0.3)),
    "trim 0.3, photometric x0.3, 20/130/100": (0.3, schedule(20, 130, 100, photometric=0.3)),
    "trim 0.3, photometric x0.5, 20/130/100": (0.3, schedule(20, 130, 100, photometric=0.5)),
    "trim 0.3, photometric x1, 20/130/100": (0.3, schedule(20, 130, 100, photometric=1.0)),
    "trim 0.3, photometric x0.5, 20/100/100": (0.3, schedule(20, 100, 100, photometric=0.5)),
    "trim 0.3, photometric x0.5, 20/130/150": (0.3, schedule(20, 130, 150, photometric=0.5)),
    "trim 0.3, photometric x0.7, 20/130/150": (0.3, schedule(20, 130, 150, photometric=0.7)),
    "trim 0.3, photometric x0.5, 20/130/200": (0.3, schedule(20, 130, 200, photometric=0.5)),
    "trim 0.2, photometric x0.5, 20/130/150": (0.2, schedule(20, 130, 150, photometric=0.5)),
}


def _load_set(face_model, split: str, count: int, size: int) -> FaceSet:
    """The split's first ``count`` faces, cached under outputs/fitting_cache (delete it to regenerate)."""
    path = REPO_ROOT / "outputs" / "fitting_cache" / f"{split}_{count}_{size}px.pt"
    if path.is_file():
        return FaceSet(**torch.load(path, map_location="cpu", weights_only=True))
    faces = face_set(face_model, split, count, size, cache=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(faces.__dict__, path)
    return faces


def _run(faces, face_model, config, args) -> dict[str, Any]:
    fitted = fit_benchmark_faces(faces, face_model, config, args.sigma, args.noise_seed, args.batch_size,
                                 args.steps_scale)
    return {**evaluate(faces, fitted.mesh, args.refine_steps), "seconds_per_image": fitted.seconds_per_image}


def calibrate(args, face_model) -> dict[str, Any]:
    faces = _load_set(face_model, "val", args.count, args.size)
    base = load_config(args.config)
    base["image_size"] = args.size
    mean = mean_face_summary(faces, face_model, args.refine_steps)
    print(f"mean face: median {mean['median_mm']:.3f} mm", flush=True)
    out: dict[str, Any] = {"split": "val", "faces": len(faces), "image_size": args.size, "sigma_px": args.sigma,
                           "mean_face": mean, "priors": [], "schedules": []}
    if args.phase == 5:
        out["robust"] = []
        for name, (trim, stages) in SWEEP_ROBUST.items():
            result = _run(faces, face_model, with_overrides(base, {"shape": 1e-4, "expression": 1e-4}, stages,
                                                            {"trim": trim}), args)
            out["robust"].append({"variant": name, "trim": trim, **result})
            print(f"{name}: median {result['median_mm']:.3f} mm ({result['median_mm'] / mean['median_mm']:.3f}x mean "
                  f"face), {result['seconds_per_image']:.1f} s/img", flush=True)
        return out
    if args.phase in (3, 4):
        out["refine"] = []
        for name, (priors, stages) in (SWEEP_REFINE if args.phase == 3 else SWEEP_PHOTOMETRIC).items():
            result = _run(faces, face_model, with_overrides(base, priors, stages), args)
            out["refine"].append({"variant": name, **priors, **result})
            print(f"{name}: median {result['median_mm']:.3f} mm ({result['median_mm'] / mean['median_mm']:.3f}x mean "
                  f"face), {result['seconds_per_image']:.1f} s/img", flush=True)
        return out
    for shape, expression in SWEEP_PRIORS:
        result = _run(faces, face_model, with_overrides(base, {"shape": shape, "expression": expression}), args)
        out["priors"].append({"shape": shape, "expression": expression, **result})
        print(f"priors shape {shape:g} expression {expression:g}: median {result['median_mm']:.3f} mm "
              f"({result['median_mm'] / mean['median_mm']:.3f}x mean face), {result['seconds_per_image']:.1f} s/img",
              flush=True)
    best = min(out["priors"], key=lambda r: r["median_mm"])
    priors = {"shape": best["shape"], "expression": best["expression"]}
    for name, stages in SWEEP_SCHEDULES.items():
        result = _run(faces, face_model, with_overrides(base, priors, stages), args)
        out["schedules"].append({"schedule": name, **priors, **result})
        print(f"schedule {name}: median {result['median_mm']:.3f} mm "
              f"({result['median_mm'] / mean['median_mm']:.3f}x mean face)", flush=True)
    return out


def benchmark(args, face_model) -> dict[str, Any]:
    faces = _load_set(face_model, "benchmark", args.count, args.size)
    config = load_config(args.config)
    if int(config.get("image_size", 64)) != args.size:
        raise SystemExit(f"--size {args.size} differs from the config's image_size {config.get('image_size')}")
    mean = mean_face_summary(faces, face_model, args.refine_steps)
    fitting = _run(faces, face_model, config, args)
    out = {"split": "benchmark", "faces": len(faces), "image_size": args.size, "sigma_px": args.sigma,
           "config": str(args.config), "mean_face": mean, "fitting": fitting,
           "ratio_to_mean_face": fitting["median_mm"] / mean["median_mm"]}
    print(f"mean face {mean['median_mm']:.3f} mm, fitting {fitting['median_mm']:.3f} mm "
          f"({out['ratio_to_mean_face']:.3f}x), {fitting['seconds_per_image']:.2f} s per image", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fitting", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("calibrate", "benchmark"))
    parser.add_argument("--config", default=str(DEFAULT_FIT_CONFIG))
    parser.add_argument("--count", type=int, default=None, help="faces (default: 12 for calibrate, 32 for benchmark)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=LANDMARK_NOISE_PX, help="landmark noise, px")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--refine-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phase", type=int, default=1, choices=(1, 3, 4, 5),
                        help="calibrate: 1 = priors grid then schedules (phases 1-2), 3 = refinement around the "
                             "best, 4 = photometric weight, 5 = trimmed photometric term (run with --count 24)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.count = args.count or (12 if args.mode == "calibrate" else 32)
    torch.set_num_threads(args.threads)
    from regressor.face_model import build_face_model

    face_model = build_face_model()
    start = time.perf_counter()
    out = calibrate(args, face_model) if args.mode == "calibrate" else benchmark(args, face_model)
    out["wall_seconds"] = time.perf_counter() - start
    out["command"] = "OMP_NUM_THREADS=1 python -m benchmarks.fitting " + " ".join(argv if argv is not None else
                                                                                   __import__("sys").argv[1:])
    write_json(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
