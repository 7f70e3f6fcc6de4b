"""Does the perceptual shape loss (PSL) make shapes better? NoW-style error with and without it.

    python -m benchmarks.psl_effect --budget quick|full [--json PATH] [--plot PNG] [--critic checkpoints/critic.pt]

Both modes compare two runs that differ *only* in the weight of the ``perceptual_shape`` term
(the configured weight, or 0), on the held-out synthetic ``benchmark`` split with geometry
beyond the model switched on (``benchmarks.psl_common``):

* **fitting**: ``regressor.fitting.fit_images`` with the stages and losses of
  ``configs/fitting/default.yaml`` (steps scaled by the budget), same images, same init;
* **regression**: a ``RegressorModule`` with the losses of ``configs/regressor/quickstart.yaml``,
  trained twice from the same seed, on the same ``train``-split pool, the same batches and steps
  (Lightning ``Trainer``), then run on the benchmark faces.

Predicted meshes are scored with ``regressor.evaluation.now`` (7-landmark Procrustes, scan-to-
surface refinement, point-to-surface error) against the ground-truth scan (mesh + displacement).
Writes JSON (``fitting.*`` / ``regression.*`` with ``median_mm_without``, ``median_mm_with``,
``reduction`` = 1 - with / without), a markdown table and a cumulative-error plot.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.psl_common import BUDGETS, CACHE_DIR, Budget, FaceSet, compare, face_set, score_meshes, summarise
from benchmarks.psl_report import markdown, plot_cumulative
from regressor.fitting import fit_images, stages_from_config
from regressor.fitting_cli import load_config
from regressor.pipeline import render_params
from regressor.types import FaceBatch, LossInputs

PERCEPTUAL = "perceptual_shape"


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(f"[psl_effect {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def perceptual_label(losses: list[dict], source: str) -> str:
    labels = [spec.get("label", spec["name"]) for spec in losses if spec["name"] == PERCEPTUAL]
    if len(labels) != 1:
        raise ValueError(f"{source}: expected exactly one '{PERCEPTUAL}' loss term, found {len(labels)}")
    return labels[0]


def with_critic(losses: list[dict], critic: str, weight_scale: float = 1.0, warmup_steps: int | None = None) -> list[dict]:
    """The loss list with the perceptual term reading ``critic``, its weight scaled (0 = off)."""
    out = []
    for spec in losses:
        spec = dict(spec)
        if spec["name"] == PERCEPTUAL:
            spec["checkpoint"] = critic
            spec["weight"] = float(spec.get("weight", 1.0)) * weight_scale
            if warmup_steps is not None:
                spec["warmup_steps"] = warmup_steps
        out.append(spec)
    return out


# ------------------------------------------------------------------------------------------ fitting
def run_fitting(budget: Budget, faces: FaceSet, face_model, critic: str, config_path: str, progress: bool,
                weight_scale: float = 1.0) -> tuple[dict, dict]:
    from regressor.losses import LossStack
    from regressor.render import Renderer

    config = load_config(config_path)
    label = perceptual_label(config["losses"], config_path)
    stack = LossStack(with_critic(config["losses"], critic))
    renderer = Renderer(image_size=budget.image_size, **config.get("renderer", {}))
    stages = stages_from_config(config["stages"])
    for stage in stages:
        stage.steps = max(1, round(stage.steps * budget.fit_steps_scale))
    configured_weight = stack.weights[label]
    outputs, final_losses, wall = {}, {}, {}
    for condition, weight in (("without", 0.0), ("with", configured_weight * weight_scale)):
        stack.weights[label] = weight
        start = time.perf_counter()
        vertices, landmarks, results = [], [], []
        for first in range(0, len(faces), budget.fit_batch):
            part = faces.slice(first, first + budget.fit_batch)
            result = fit_images(part.image, part.landmarks, stack, face_model, renderer, stages=stages,
                                landmarks_valid=part.landmarks_valid, learning_rates=config.get("learning_rates"),
                                progress=progress)
            vertices.append(result.mesh.vertices)
            landmarks.append(result.mesh.now_landmarks3d)
            results.append(result)
        outputs[condition] = (torch.cat(vertices), torch.cat(landmarks))
        final_losses[condition] = {k: sum(r.history[k][-1] for r in results) / len(results) for k in results[0].history}
        wall[condition] = time.perf_counter() - start
        log(f"fitting {condition} PSL: {len(faces)} faces in {wall[condition]:.0f} s")
        if condition == "without":
            gradients = gradient_norms(results[0], faces.slice(0, budget.fit_batch), stack, stages[-1].weights,
                                       configured_weight, label, face_model, renderer)
    stack.weights[label] = configured_weight
    scored = {c: score_meshes(v, l, face_model.faces, faces, budget.refine_steps) for c, (v, l) in outputs.items()}
    report = compare(scored["without"], scored["with"])
    report.update(config=config_path, perceptual_weight=configured_weight * weight_scale,
                  steps=[{"name": s.name, "steps": s.steps, "weights": s.weights} for s in stages],
                  final_losses=final_losses, gradient_norms_at_perceptual_stage=gradients, wall_s=wall)
    errors = {c: torch.cat([r.errors_mm for r in results]) for c, results in scored.items()}
    return report, errors


def gradient_norms(result, faces: FaceSet, stack, stage_weights: dict, perceptual_weight: float, label: str,
                   face_model, renderer) -> dict[str, float]:
    """Mean per-image norm of each weighted term's gradient w.r.t. the shape coefficients.

    Taken at the fitted parameters of the baseline, i.e. where the perceptual stage would act,
    with the perceptual stage's weights: tells whether the critic's pull is comparable to the others'.
    """
    params = result.params._map(lambda t: t.detach().clone())
    shape = params.shape.detach().clone().requires_grad_(True)
    params.shape = shape
    batch = FaceBatch(image=faces.image, landmarks=faces.landmarks, landmarks_valid=faces.landmarks_valid)
    mesh, renders = render_params(face_model, renderer, params)
    inputs = LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=10**9)
    norms = {}
    for name, term in stack.terms.items():
        weight = (perceptual_weight if name == label else stack.weights[name]) * stage_weights.get(name, 0.0)
        if weight == 0.0:
            continue
        value = weight * term(inputs)
        (grad,) = torch.autograd.grad(value, shape, retain_graph=True, allow_unused=True)
        norms[name] = 0.0 if grad is None else float(grad.norm(dim=1).mean() * faces.image.shape[0])
    return norms


# --------------------------------------------------------------------------------------- regression
def regressor_settings(config_path: str) -> tuple[dict, float]:
    """(RegressorModule init_args, warm-up fraction of the perceptual term) from a regressor config."""
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    init_args = dict(config["model"]["init_args"])
    perceptual_label(init_args["losses"], config_path)
    warmup = next(s.get("warmup_steps", 0) for s in init_args["losses"] if s["name"] == PERCEPTUAL)
    max_steps = config.get("trainer", {}).get("max_steps") or 1
    return init_args, float(warmup) / float(max_steps)


def train_regressor(budget: Budget, train: FaceSet, init_args: dict, losses: list[dict], seed: int, progress: bool):
    import pytorch_lightning as pl

    from regressor.training.regression import RegressorModule

    pl.seed_everything(seed, verbose=False)
    encoder = dict(init_args.get("encoder") or {"class_path": "regressor.models.encoder.FaceEncoder"})
    encoder["init_args"] = {**(encoder.get("init_args") or {}), "backbone": budget.backbone}
    module = RegressorModule(**{**init_args, "encoder": encoder, "image_size": budget.image_size,
                                "losses": losses, "metric_critic": None})
    loader = torch.utils.data.DataLoader(train.sample_dicts(), batch_size=budget.train_batch, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(seed))
    trainer = pl.Trainer(max_steps=budget.train_steps, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, loader)
    return module.eval()


@torch.no_grad()
def predict(module, faces: FaceSet, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, landmarks = [], []
    for first in range(0, len(faces), chunk):
        result = module.reconstruct(faces.image[first:first + chunk])
        vertices.append(result.mesh.vertices)
        landmarks.append(result.mesh.now_landmarks3d)
    return torch.cat(vertices), torch.cat(landmarks)


def run_regression(budget: Budget, faces: FaceSet, train: FaceSet, face_model, critic: str, config_path: str,
                   progress: bool, weight_scale: float = 1.0) -> tuple[dict, dict]:
    init_args, warmup_fraction = regressor_settings(config_path)
    warmup = round(warmup_fraction * budget.train_steps)
    scored: dict[str, list] = {"without": [], "with": []}
    per_seed, wall = {}, {"without": 0.0, "with": 0.0}
    for seed in budget.train_seeds:
        seed_scores = {}
        for condition, scale in (("without", 0.0), ("with", weight_scale)):
            start = time.perf_counter()
            module = train_regressor(budget, train, init_args, with_critic(init_args["losses"], critic, scale, warmup),
                                     seed, progress)
            wall[condition] += time.perf_counter() - start
            log(f"regression seed {seed} {condition} PSL: trained in {time.perf_counter() - start:.0f} s")
            vertices, landmarks = predict(module, faces)
            seed_scores[condition] = score_meshes(vertices, landmarks, face_model.faces, faces, budget.refine_steps)
            scored[condition] += seed_scores[condition]
        per_seed[str(seed)] = {k: v for k, v in compare(seed_scores["without"], seed_scores["with"], bootstrap=0).items()
                               if k in ("median_mm_without", "median_mm_with", "reduction", "mean_reduction")}
    report = compare(scored["without"], scored["with"])
    reductions = torch.tensor([r["reduction"] for r in per_seed.values()])
    report.update(config=config_path, warmup_steps=warmup, seeds=per_seed, wall_s=wall,
                  reduction_seed_std=float(reductions.std()) if len(reductions) > 1 else None,
                  perceptual_weight=weight_scale * next(s["weight"] for s in init_args["losses"] if s["name"] == PERCEPTUAL))
    errors = {c: torch.cat([r.errors_mm for r in results]) for c, results in scored.items()}
    return report, errors


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.psl_effect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--json", default=None, help="default docs/results/psl_effect_<budget>.json")
    parser.add_argument("--markdown", default=None, help="default: the JSON path with .md")
    parser.add_argument("--plot", default=None, help="default: the JSON path with .png")
    parser.add_argument("--critic", default="checkpoints/critic.pt", help="ShapeCritic checkpoint used by both modes")
    parser.add_argument("--fit-config", default="configs/fitting/default.yaml")
    parser.add_argument("--regressor-config", default="configs/regressor/quickstart.yaml")
    parser.add_argument("--modes", nargs="+", choices=("fitting", "regression"), default=["fitting", "regression"])
    parser.add_argument("--no-cache", action="store_true", help="regenerate the synthetic sets")
    parser.add_argument("--cache-dir", default=None, help=f"synthetic set cache (default {CACHE_DIR})")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--split", choices=("benchmark", "val"), default="benchmark",
                        help="faces to score: the held-out benchmark split, or `val` to choose loss weights on faces "
                             "the reported figures never use")
    parser.add_argument("--landmark-noise", type=float, default=1.5,
                        help="std (px) of Gaussian noise on the 68 fitting landmarks, per face from its seed "
                             "(issue 17: noiseless true landmarks make the baseline unrealistically easy; 0 = off)")
    parser.add_argument("--weight-scale", type=float, default=1.0,
                        help="multiplies the configured perceptual weight in the 'with' arm (weight sweeps on --split val)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from regressor.face_model import FaceModel
    from regressor.losses.perceptual import resolve_checkpoint

    torch.manual_seed(0)
    budget = BUDGETS[args.budget]
    critic = str(resolve_checkpoint(args.critic))  # clear error if missing
    json_path = Path(args.json or f"docs/results/psl_effect_{budget.name}.json")
    started = time.perf_counter()
    face_model = FaceModel.builtin()
    cache = {"cache": not args.no_cache, "cache_dir": Path(args.cache_dir) if args.cache_dir else CACHE_DIR}
    faces = face_set(face_model, args.split, budget.benchmark_images, budget.image_size, **cache)
    if args.landmark_noise > 0:
        from regressor.critic.fits import noisy_landmarks

        faces.landmarks = noisy_landmarks(faces.landmarks, args.landmark_noise, faces.seeds)
    results: dict = {
        "budget": budget.to_dict(), "critic": critic,
        "critic_sha256": hashlib.sha256(Path(critic).read_bytes()).hexdigest()[:16],
        "benchmark_set": {"split": args.split, "seeds": faces.seeds.tolist(), "extra_geometry": True,
                          "image_size": budget.image_size},
        "weight_scale": args.weight_scale, "landmark_noise_px": args.landmark_noise,
        "command": "python -m benchmarks.psl_effect " + " ".join(argv if argv is not None else sys.argv[1:]),
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "machine": platform.machine()},
    }
    mean_face = face_model(face_model.zero_params(len(faces)))
    mean_scores = score_meshes(mean_face.vertices, mean_face.now_landmarks3d, face_model.faces, faces, budget.refine_steps)
    results["mean_face"] = summarise(mean_scores)
    log(f"{len(faces)} {args.split} faces ready, mean face scored ({time.perf_counter() - started:.0f} s)")
    curves = {}
    mean_errors = torch.cat([r.errors_mm for r in mean_scores])
    if "fitting" in args.modes:
        results["fitting"], errors = run_fitting(budget, faces, face_model, critic, args.fit_config, args.progress,
                                                 args.weight_scale)
        curves["fitting"] = {**errors, "mean face": mean_errors}
    if "regression" in args.modes:
        train = face_set(face_model, "train", budget.train_samples, budget.image_size, **cache)
        results["regression"], errors = run_regression(budget, faces, train, face_model, critic,
                                                       args.regressor_config, args.progress, args.weight_scale)
        curves["regression"] = {**errors, "mean face": mean_errors}
    results["wall_s"] = time.perf_counter() - started
    table = markdown(results)
    results["markdown"] = table
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    Path(args.markdown or json_path.with_suffix(".md")).write_text(table)
    plot_cumulative(curves, args.plot or json_path.with_suffix(".png"),
                    title=f"NoW-style error, synthetic {args.split} split ({len(faces)} faces, budget {budget.name})")
    print(table)
    print(f"wrote {json_path} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
