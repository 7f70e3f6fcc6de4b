"""Does the perceptual shape loss (PSL) make shapes better? NoW-style error with and without it.

    python -m benchmarks.psl_effect --budget quick|full [--json PATH] [--plot PNG] [--critic checkpoints/critic.pt]
                                    [--baseline checkpoints/regressor.ckpt] [--train-pool DIR] [--no-shifted]

Both modes compare two runs that differ *only* in the weight of the ``perceptual_shape`` term,
on held-out synthetic faces with geometry beyond the model switched on (``benchmarks.psl_common``):

* **fitting**: ``regressor.fitting.fit_images`` with the stages and losses of
  ``configs/fitting/default.yaml`` (steps scaled by the budget), same images, same init, from
  noisy 68 landmarks (sigma ``--landmark-noise`` px, 1.5 by default), with the configured weight or 0;
* **regression** (the paper's recipe): the converged baseline regressor (``--baseline``, default
  the shipped ``checkpoints/regressor.ckpt``; its architecture and image size are read from the
  file) is fine-tuned twice per seed of the budget, at an equal budget (same seed, same ``train``
  faces, same batches, same steps; Lightning ``Trainer``), with the hybrid losses of
  ``configs/regressor/quickstart.yaml``, and in the "with" arm also ``perceptual_shape`` at
  ``--regression-weight``; both are then run on the test faces. The baseline itself is scored too.
  Without a baseline file the arm is skipped and the JSON says why (``regression.skipped``).

Two test sets, the same seeds: the ``benchmark`` split as the critic's training distribution
renders it, and a **shifted** one (``benchmarks.regression.shifted_config``: one harsh light, a
bright constant background, wider skin tones), which neither the critic nor the regressor trained on.

Predicted meshes are scored with ``regressor.evaluation.now`` (7-landmark Procrustes, scan-to-
surface refinement, point-to-surface error) against the ground-truth scan (mesh + displacement).
Writes JSON (``fitting.*`` / ``regression.*`` / ``shifted.fitting.*`` / ``shifted.regression.*``
with ``median_mm_without``, ``median_mm_with``, ``reduction`` = 1 - with / without and its paired
bootstrap ``reduction_ci90``), a markdown table and cumulative-error plots.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.output import write_json
from benchmarks.psl_common import (BUDGETS, CACHE_DIR, Budget, FaceSet, compare, face_set, score_meshes, summarise,
                                    training_pool)
from benchmarks.psl_report import markdown, plot_cumulative
from benchmarks.regression import shifted_config
from regressor.fitting import fit_images, stages_from_config
from regressor.fitting_config import load_config
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
    scored = {c: score_meshes(v, l, face_model.faces, faces, budget.refine_steps, budget.scan_stride)
              for c, (v, l) in outputs.items()}
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
def baseline_description(path: str | Path) -> dict:
    """The pipeline description (backbone, encoder, sizes, image size) of a regressor file or ``.ckpt``."""
    from regressor.inference import load_checkpoint_file, regressor_hparams
    from regressor.io.regressor_file import is_regressor_file

    checkpoint = load_checkpoint_file(path)
    if is_regressor_file(checkpoint):
        return dict(checkpoint["pipeline"])
    return regressor_hparams(checkpoint, path)


def regressor_settings(config_path: str) -> dict:
    """The fine-tuning recipe of a regressor config: its losses and optimiser settings.

    The architecture (encoder, face model, renderer, image size) is the baseline's, never the config's.
    """
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    init_args = config["model"]["init_args"]
    losses = [dict(spec) for spec in init_args.get("losses") or []]
    if any(spec["name"] == PERCEPTUAL for spec in losses):
        raise ValueError(f"{config_path}: the regression arm adds the '{PERCEPTUAL}' term itself (--regression-weight); "
                         "its base recipe must not have one")
    return {"losses": losses, **{k: init_args[k] for k in ("lr", "weight_decay", "scheduler", "nan_policy") if k in init_args}}


def regression_losses(base: list[dict], critic: str, weight: float) -> list[dict]:
    """The base recipe, plus the perceptual term at ``weight`` (none when 0: the 'without' arm)."""
    losses = [dict(spec) for spec in base]
    if weight:
        losses.append({"name": PERCEPTUAL, "weight": float(weight), "checkpoint": critic})
    return losses


def regressor_from_baseline(description: dict, baseline: str | Path, losses: list[dict], recipe: dict):
    from regressor.training.regression import RegressorModule

    training = {k: v for k, v in recipe.items() if k != "losses"}
    return RegressorModule.from_flat(**description, losses=losses, metric_critic=None, init_checkpoint=str(baseline),
                                     **training)


def fine_tune(budget: Budget, train, description: dict, baseline: str | Path, losses: list[dict], recipe: dict,
              seed: int, progress: bool, accelerator: str = "cpu"):
    """The baseline fine-tuned for ``budget.train_steps`` steps on ``train``, seed ``seed`` (same batches per seed)."""
    import pytorch_lightning as pl

    pl.seed_everything(seed, verbose=False)
    module = regressor_from_baseline(description, baseline, losses, recipe)
    loader = torch.utils.data.DataLoader(train, batch_size=budget.train_batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    trainer = pl.Trainer(max_steps=budget.train_steps, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, loader)
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("loss/")}
    return module.eval(), final


@torch.no_grad()
def predict(module, faces: FaceSet, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, landmarks = [], []
    for first in range(0, len(faces), chunk):
        result = module.reconstruct(faces.image[first:first + chunk])
        vertices.append(result.mesh.vertices)
        landmarks.append(result.mesh.now_landmarks3d)
    return torch.cat(vertices), torch.cat(landmarks)


def run_regression(budget: Budget, test_sets: dict[str, FaceSet], train, baseline: Path, description: dict,
                   critic: str, config_path: str, progress: bool, weight: float,
                   accelerator: str = "cpu") -> dict[str, tuple[dict, dict]]:
    """Fine-tune ``baseline`` with and without the critic per seed; score both on every test set.

    Returns ``{set name: (report, pooled errors by condition)}``; each report also scores the baseline itself.
    """
    recipe = regressor_settings(config_path)
    names = list(test_sets)
    scored = {name: {"without": [], "with": []} for name in names}
    per_seed = {name: {} for name in names}
    wall = {"without": 0.0, "with": 0.0}
    final_losses: dict = {"without": {}, "with": {}}
    baseline_module = regressor_from_baseline(description, baseline, recipe["losses"], recipe).eval()
    baseline_scores = {}
    for name, faces in test_sets.items():
        vertices, landmarks = predict(baseline_module, faces)
        baseline_scores[name] = score_meshes(vertices, landmarks, baseline_module.pipeline.face_model.faces, faces,
                                             budget.refine_steps, budget.scan_stride)
    del baseline_module
    for seed in budget.train_seeds:
        seed_scores: dict = {name: {} for name in names}
        for condition, condition_weight in (("without", 0.0), ("with", weight)):
            start = time.perf_counter()
            module, final_losses[condition][str(seed)] = fine_tune(
                budget, train, description, baseline, regression_losses(recipe["losses"], critic, condition_weight),
                recipe, seed, progress, accelerator)
            elapsed = time.perf_counter() - start
            wall[condition] += elapsed
            log(f"regression seed {seed} {condition} PSL: fine-tuned {budget.train_steps} steps in {elapsed:.0f} s")
            for name, faces in test_sets.items():
                vertices, landmarks = predict(module, faces)
                seed_scores[name][condition] = score_meshes(vertices, landmarks, module.pipeline.face_model.faces, faces,
                                                            budget.refine_steps, budget.scan_stride)
                scored[name][condition] += seed_scores[name][condition]
        for name in names:
            per_seed[name][str(seed)] = {
                k: v for k, v in compare(seed_scores[name]["without"], seed_scores[name]["with"], bootstrap=0).items()
                if k in ("median_mm_without", "median_mm_with", "reduction", "mean_reduction")}
    out = {}
    for name in names:
        report = compare(scored[name]["without"], scored[name]["with"])
        reductions = torch.tensor([r["reduction"] for r in per_seed[name].values()])
        base = summarise(baseline_scores[name])
        report.update(
            config=config_path, perceptual_weight=weight, seeds=per_seed[name],
            reduction_seed_std=float(reductions.std()) if len(reductions) > 1 else None,
            baseline={"path": str(baseline), "sha256": hashlib.sha256(Path(baseline).read_bytes()).hexdigest()[:16],
                      "median_mm": base["median_mm"], "mean_mm": base["mean_mm"], "std_mm": base["std_mm"],
                      "per_image_median_mm": base["per_image_median_mm"]},
            image_size=int(description.get("image_size", 64)), fine_tune_steps=budget.train_steps, accelerator=accelerator,
            fine_tune_batch=budget.train_batch, wall_s=wall, final_losses=final_losses)
        errors = {c: torch.cat([r.errors_mm for r in results]) for c, results in scored[name].items()}
        errors["baseline"] = torch.cat([r.errors_mm for r in baseline_scores[name]])
        out[name] = (report, errors)
    return out


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
    parser.add_argument("--regressor-config", default="configs/regressor/quickstart.yaml",
                        help="the fine-tuning recipe (losses, lr, weight decay, scheduler) of the regression arm; "
                             "the architecture is the baseline's")
    parser.add_argument("--baseline", default=None,
                        help="the converged regressor both regression arms fine-tune (an exported file or a "
                             "`regressor fit` .ckpt); default the shipped checkpoints/regressor.ckpt. Missing: the "
                             "regression arm is skipped and says why")
    parser.add_argument("--train-pool", default=None,
                        help="a face pool folder (`regressor synth --pool`, at the baseline's image size) to fine-tune "
                             "on; default: budget.train_samples generated `train` faces (cached)")
    parser.add_argument("--regression-weight", type=float, default=0.05,
                        help="weight of the perceptual term in the 'with' fine-tuning arm (configs/regressor/full.yaml's)")
    parser.add_argument("--accelerator", default="cpu",
                        help="Lightning accelerator of the fine-tuning (cpu: deterministic; auto: a GPU if there is one)")
    parser.add_argument("--modes", nargs="+", choices=("fitting", "regression"), default=["fitting", "regression"])
    parser.add_argument("--no-shifted", action="store_true",
                        help="skip the second test set (lighting, background and skin the critic never trained on)")
    parser.add_argument("--no-cache", action="store_true", help="regenerate the synthetic sets")
    parser.add_argument("--cache-dir", default=None, help=f"synthetic set cache (default {CACHE_DIR})")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--split", choices=("benchmark", "val"), default="benchmark",
                        help="faces to score: the held-out benchmark split, or `val` to choose loss weights on faces "
                             "the reported figures never use")
    parser.add_argument("--landmark-noise", type=float, default=1.5,
                        help="std (px) of Gaussian noise on the 68 fitting landmarks, per face from its seed "
                             "(noiseless true landmarks make the baseline unrealistically easy; 0 = off)")
    parser.add_argument("--weight-scale", type=float, default=1.0,
                        help="multiplies the perceptual weight in the 'with' arm of both modes (weight sweeps on --split val)")
    return parser


def baseline_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the regression baseline (None: it can)."""
    if not path.is_file():
        return (f"no baseline regressor file at {path} (the shipped checkpoints/regressor.ckpt may not be exported "
                "yet); pass --baseline PATH (an exported regressor or a `regressor fit` .ckpt) to run the regression arm")
    try:
        baseline_description(path)
    except (ValueError, FileNotFoundError) as error:
        return f"baseline {path} is not a regressor: {error}"
    return None


def training_set(args, cache: dict, description: dict):
    """The fine-tuning faces: a pool folder, or generated ``train`` faces with the regressor's face model."""
    from regressor.components import build_component
    from regressor.pipeline import pipeline_specs

    size = int(description.get("image_size", 64))
    if args.train_pool:
        from regressor.synthetic.pool import FacePool

        pool = FacePool(args.train_pool, limit=BUDGETS[args.budget].train_samples)
        if int(pool.manifest["image_size"]) != size:
            raise SystemExit(f"psl_effect: pool {args.train_pool} is {pool.manifest['image_size']} px, "
                             f"the baseline regressor {size} px")
        return pool
    model = build_component(pipeline_specs(**description)["face_model"])
    return training_pool(model, BUDGETS[args.budget].train_samples, size, **cache)


def noisy(faces: FaceSet, sigma: float) -> FaceSet:
    if sigma > 0:
        from regressor.critic.fits import noisy_landmarks

        faces.landmarks = noisy_landmarks(faces.landmarks, sigma, faces.seeds)
    return faces


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from regressor.face_model import build_face_model
    from regressor.inference import SHIPPED_REGRESSOR
    from regressor.losses.perceptual import resolve_checkpoint

    torch.manual_seed(0)
    budget = BUDGETS[args.budget]
    critic = str(resolve_checkpoint(args.critic))  # clear error if missing
    json_path = Path(args.json or f"docs/results/psl_effect_{budget.name}.json")
    started = time.perf_counter()
    face_model = build_face_model()
    cache = {"cache": not args.no_cache, "cache_dir": Path(args.cache_dir) if args.cache_dir else CACHE_DIR}
    configs = {"benchmark": None} if args.no_shifted else {"benchmark": None, "shifted": shifted_config()}
    sets = {name: noisy(face_set(face_model, args.split, budget.benchmark_images, budget.image_size, config=config,
                                 **cache), args.landmark_noise) for name, config in configs.items()}
    faces = sets["benchmark"]
    regression_weight = args.regression_weight * args.weight_scale
    results: dict = {
        "budget": budget.to_dict(), "critic": critic,
        "critic_sha256": hashlib.sha256(Path(critic).read_bytes()).hexdigest()[:16],
        "benchmark_set": {"split": args.split, "seeds": faces.seeds.tolist(), "extra_geometry": True,
                          "image_size": budget.image_size},
        "weight_scale": args.weight_scale, "landmark_noise_px": args.landmark_noise,
        "regression_weight": regression_weight,
        "command": "python -m benchmarks.psl_effect " + " ".join(argv if argv is not None else sys.argv[1:]),
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "machine": platform.machine()},
    }
    if "shifted" in sets:
        results["shifted"] = {"benchmark_set": {
            "split": args.split, "seeds": sets["shifted"].seeds.tolist(), "extra_geometry": True,
            "image_size": budget.image_size, "config": "benchmarks.regression.shifted_config",
            "description": "one harsh light, bright constant background, wider skin tones, no hair strands: "
                           "a distribution the critic (and the regressor) never trained on"}}
    mean_errors = {}
    for name, test in sets.items():
        mean_face = face_model(face_model.zero_params(len(test)))
        scores = score_meshes(mean_face.vertices, mean_face.now_landmarks3d, face_model.faces, test,
                              budget.refine_steps, budget.scan_stride)
        (results if name == "benchmark" else results[name])["mean_face"] = summarise(scores)
        mean_errors[name] = torch.cat([r.errors_mm for r in scores])
    log(f"{len(faces)} {args.split} faces{' (+ shifted)' if 'shifted' in sets else ''} ready, mean face scored "
        f"({time.perf_counter() - started:.0f} s)")
    curves = {}
    if "fitting" in args.modes:
        for name, test in sets.items():
            report, errors = run_fitting(budget, test, face_model, critic, args.fit_config, args.progress, args.weight_scale)
            (results if name == "benchmark" else results[name])["fitting"] = report
            curves[panel(name, "fitting")] = {**errors, "mean face": mean_errors[name]}
    if "regression" in args.modes:
        baseline = Path(args.baseline) if args.baseline else SHIPPED_REGRESSOR
        problem = baseline_problem(baseline)
        if problem:
            print(f"psl_effect: regression arm skipped: {problem}", flush=True)
            results["regression"] = {"skipped": problem}
        else:
            description = baseline_description(baseline)
            size = int(description.get("image_size", 64))
            # the same faces at the regressor's input size (it reads pixels only, no landmarks)
            tests = {name: face_set(face_model, args.split, budget.benchmark_images, size, config=config, **cache)
                     for name, config in configs.items()}
            train = training_set(args, cache, description)
            log(f"regression: fine-tuning {baseline} ({size} px) on {len(train)} train faces")
            for name, (report, errors) in run_regression(budget, tests, train, baseline, description, critic,
                                                          args.regressor_config, args.progress, regression_weight,
                                                          args.accelerator).items():
                (results if name == "benchmark" else results[name])["regression"] = report
                curves[panel(name, "regression")] = {**errors, "mean face": mean_errors[name]}
    results["wall_s"] = time.perf_counter() - started
    table = markdown(results)
    results["markdown"] = table
    write_json(json_path, results)
    Path(args.markdown or json_path.with_suffix(".md")).write_text(table)
    if curves:
        plot_cumulative(curves, args.plot or json_path.with_suffix(".png"),
                        title=f"NoW-style error, synthetic {args.split} split ({len(faces)} faces, budget {budget.name})")
    print(table)
    print(f"wrote {json_path} in {results['wall_s']:.0f} s")
    return 0


def panel(test_set: str, mode: str) -> str:
    return mode if test_set == "benchmark" else f"{test_set} {mode}"


if __name__ == "__main__":
    sys.exit(main())
