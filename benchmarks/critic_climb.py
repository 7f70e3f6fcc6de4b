"""Does a critic's gradient lead to the true shape? Climb its score alone from the no-critic fit.

``python -m benchmarks.critic_climb --checkpoint A.pt [B.pt ...] --split val --num-faces 32 --json PATH``

The perceptual loss can only help fitting if raising the critic's score moves a fit towards the truth.
For every critic, on ``--num-faces`` synthetic faces of ``--split`` (rendered as ``--synthetic`` says) and their cached no-critic fits (noisy
landmarks, made at 64 px whatever the critic's size; ``regressor.critic.fits``):

* ``climb.error_start_mm`` / ``climb.error_end_mm``: median Procrustes-aligned face-region error of the fit
  (the baseline: not moving) and after ``--steps`` Adam steps (``--lr``) on shape and expression that
  maximise the critic score alone, at the fitted pose and camera; ``climb.improved_fraction``: share of
  faces whose error fell. A useful critic lowers the error.
* ``climb_true_pose.*``: the same climb from the fit's shape and expression seen in the *true* pose and
  camera: if only this one helped, the fitted pose would be what misleads the critic.
* ``truth_beats_other_truth``: the true shape placed at the fitted pose outscores another face's true shape
  placed there, with the face's own image. No shape prior separates the two: this measures image reading.
* ``gradient_cosine`` / ``gradient_cosine_other_image``: cosine of the critic's ascent direction at the fit
  with truth - fit, with the face's own image and with another face's (``--metric``; ``@parameter`` and
  ``@geometric`` give both metrics), and ``landmark_cosine``: the same for the landmark term's descent.
* ``--oracle``: a row for the render oracle, the ceiling of any critic whose gradient matches grey renders
  (``RenderOracle``: it is given the render of the true shape placed at the fit); ``--oracle-sizes`` and
  ``--oracle-reductions`` measure that ceiling at other render sizes and poolings; ``--oracle-targets image``
  gives the oracle the photo's own shading (the true pose) instead: the ceiling of a critic that reads the image.
* ``gate``: the gradient gate's four conditions (median error falls, >= 60% of faces improve, cosine
  >= 0.15, and the critic reads the image: own-image cosine >= other-image cosine + 0.05 and
  ``truth_beats_other_truth`` >= 0.85).
* ``--trace``: the climb step by step (``climb_trace``: median error, share improved, cosine, gradient length, score), which
  shows where along the climb the gradient stops leading to the truth.

Choices are made on ``val``; ``test`` is for reporting. Measured figures: docs/results/critic_retraining.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.output import write_json

from regressor.critic.fits import cached_fits
from regressor.critic.gradient import CLIMBED_FIELDS, METRICS, direction_to_truth, metric_cosine, metric_weights
from regressor.critic.gradient_figures import (climb_figures, climb_trace, gate_figures,  # noqa: F401 (re-export)
                                               params_error_mm)
from regressor.models.critic import ShapeCritic
from regressor.critic.operating_point import vertex_renderer
from regressor.critic.target import face_region, place_like
from regressor.render import Renderer
from regressor.render import project_weak_perspective
from regressor.synthetic.splits import SPLIT_SEEDS
from regressor.types import FaceParams, replace

FIT_CACHE = "outputs/critic_fit_cache"
FIT_SIZE = 64


def load(face_model, split: str, num_faces: int, image_size: int, fit_cache: str | None, synthetic: str = "default"):
    """(batch, face-region weights, no-critic fits) of the first ``num_faces`` faces of ``split``."""
    from benchmarks.critic import load_faces
    from regressor.synthetic.displacement import displace_landmarks

    batch, _ = load_faces(face_model, num_faces, image_size, 0, split, synthetic)
    with torch.no_grad():
        mesh = face_model(batch.params)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, batch.displacement)
    fits = cached_fits(face_model, batch.image, batch.landmarks, batch.landmarks_valid, batch.seeds, fit_cache,
                       steps_scale=0.5, fit_size=FIT_SIZE)
    return batch, face_region(batch.vertices, now), fits


def landmark_cosines(face_model, fit: FaceParams, landmarks: Tensor, valid: Tensor, truth: FaceParams,
                     image_size: int, metrics: dict[str, Tensor]) -> dict[str, float]:
    """The landmark term's descent direction at the fit against truth - fit: the reference a critic must beat.

    The term is the fitter's own (``regressor.losses`` ``landmarks``: mean image-normalised distance of the
    projected model landmarks to the noisy landmarks the fit used)."""
    climbed = [getattr(fit, name).detach().clone().requires_grad_(True) for name in CLIMBED_FIELDS]
    with torch.enable_grad():
        mesh = face_model(replace(fit, **dict(zip(CLIMBED_FIELDS, climbed))))
        points = project_weak_perspective(mesh.landmarks3d, fit.camera, image_size)[..., :2]
        distance = ((points - landmarks) / image_size).square().sum(-1).add(1e-12).sqrt()
        loss = (distance * valid).sum() / valid.sum().clamp(min=1)
        gradients = torch.autograd.grad(loss, climbed)
    descent = -torch.cat(gradients, dim=1)
    direction = direction_to_truth(fit, truth)
    return {f"landmark_cosine@{name}": float(metric_cosine(descent, direction, weights).mean())
            for name, weights in metrics.items()}


def measure(checkpoint: str, face_model, data, steps: int, lr: float, metrics: dict[str, Tensor],
            trace: bool = False) -> dict:
    critic = ShapeCritic.from_checkpoint(checkpoint).eval()
    batch, region, fits = data
    size = batch.image.shape[-1]
    render = vertex_renderer(critic.render_settings.renderer(image_size=size), face_model.faces)
    fit = fits.final
    out = {"checkpoint": str(checkpoint), "image_size": size, "activation": critic.activation}
    figures = gate_figures(critic, face_model, render, batch.image, batch.params, batch.vertices, region, fit, metrics,
                           steps, lr)
    out.update(figures)
    main_metric = next(iter(metrics))
    landmark = landmark_cosines(face_model, fit, fits.landmarks, batch.landmarks_valid, batch.params, size, metrics)
    out.update(landmark, landmark_cosine=landmark[f"landmark_cosine@{main_metric}"])
    at_true_pose = replace(batch.params, shape=fit.shape, expression=fit.expression, jaw_pose=fit.jaw_pose)
    true_pose = climb_figures(critic, face_model, render, batch.image, batch.vertices, region, at_true_pose, steps, lr)
    out.update({f"climb_true_pose.{k}": v for k, v in true_pose.items()})
    out["gate"] = gate(out)
    if trace:
        out["climb_trace"] = climb_trace(critic, face_model, render, batch.image, batch.params, batch.vertices, region,
                                         fit, metrics[main_metric], steps, lr)
    return out


def print_trace(rows: list[dict]) -> None:
    """The climb step by step: where the gradient stops leading to the truth."""
    print("  step  median error mm  improved  cosine  |gradient|  score")
    for row in rows:
        cosine = f"{row['gradient_cosine']:6.3f}" if "gradient_cosine" in row else "     -"
        norm = f"{row['gradient_norm']:10.3g}" if "gradient_norm" in row else "         -"
        score = f"{row['score']:6.2f}" if "score" in row else "     -"
        print(f"  {row['step']:4d}  {row['error_mm']:15.3f}  {row['improved_fraction']:8.2f}  {cosine}  {norm}  {score}")


class RenderOracle(nn.Module):
    """The ceiling of any critic that reads only the grey render: minus the squared distance of the render
    (average-pooled by ``reduction``) to the render of the true shape placed at the fit, which it is given.
    It ignores the image (so its other-image figures equal its own). Its gradient is the Gauss-Newton step
    towards the true render; the cosine it reaches is the most a render-based gradient can give."""

    def __init__(self, target: Tensor, reduction: int = 4) -> None:
        super().__init__()
        self.target, self.reduction = target, reduction

    def forward(self, image: Tensor, shaded: Tensor) -> Tensor:
        return -(F.avg_pool2d(shaded, self.reduction) - self.target).pow(2).flatten(1).mean(1)


ORACLE_TARGETS = ("placed", "image")


def measure_oracle(face_model, data, steps: int, lr: float, metrics: dict[str, Tensor], reduction: int = 4,
                   target_kind: str = "placed") -> dict:
    """The render oracle's gate figures. ``target_kind``: ``placed`` = the true shape placed at the fit and seen
    by the fit's camera (knows the truth, not the fit's pose error); ``image`` = the true shape in the true pose
    and camera, i.e. the grey shading of the photo itself: what a critic that read the image perfectly could match."""
    batch, region, fits = data
    fit = fits.final
    render = vertex_renderer(Renderer(image_size=batch.image.shape[-1]), face_model.faces)
    with torch.no_grad():
        if target_kind == "placed":
            vertices, camera = place_like(face_model(batch.params).vertices, face_model(fit).vertices, region), fit.camera
        elif target_kind == "image":
            vertices, camera = face_model(batch.params).vertices, batch.params.camera
        else:
            raise ValueError(f"oracle target {target_kind!r}: expected one of {ORACLE_TARGETS}")
        target = F.avg_pool2d(render(vertices, camera).shaded, reduction)
    oracle = RenderOracle(target, reduction)
    name = f"oracle:render/{reduction}" + ("" if target_kind == "placed" else f":{target_kind}")
    out = {"checkpoint": name, "image_size": batch.image.shape[-1], "oracle_target": target_kind}
    out.update(gate_figures(oracle, face_model, render, batch.image, batch.params, batch.vertices, region, fit, metrics,
                            steps, lr))
    return out


def gate(row: dict) -> dict:
    """The four conditions of the gradient gate, each with its figure, and whether all hold."""
    checks = {
        "climb_lowers_median_error": row["climb.error_end_mm"] < row["climb.error_start_mm"],
        "improved_fraction_at_least_0.6": row["climb.improved_fraction"] >= 0.6,
        "cosine_at_least_0.15": row["gradient_cosine"] >= 0.15,
        "reads_the_image": (row["gradient_cosine"] - row["gradient_cosine_other_image"] >= 0.05
                            and row["truth_beats_other_truth"] >= 0.85),
    }
    return {**checks, "passes": all(checks.values())}


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", default=["checkpoints/critic.pt"])
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_SEEDS))
    parser.add_argument("--num-faces", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--synthetic", default="default",
                        help="image distribution: default[-<switch>...] | model_only[+<switch>...] (SyntheticConfig.preset)")
    parser.add_argument("--fit-cache", default=FIT_CACHE, help="where the no-critic fits are cached ('' = no cache)")
    parser.add_argument("--metric", default="geometric", choices=METRICS,
                        help="the direction metric of the headline cosines (the other is reported too)")
    parser.add_argument("--oracle", action="store_true",
                        help="add the render oracle's row: the ceiling of a gradient that matches grey renders")
    parser.add_argument("--oracle-sizes", type=int, nargs="+", default=None,
                        help="render sizes of the oracle rows (default: the first critic's)")
    parser.add_argument("--oracle-reductions", type=int, nargs="+", default=[4],
                        help="average-pooling factors of the oracle's render distance (1 = every pixel)")
    parser.add_argument("--oracle-targets", nargs="+", default=["placed"], choices=ORACLE_TARGETS,
                        help="placed: the true shape at the fit's pose; image: the photo's own shading (true pose)")
    parser.add_argument("--trace", action="store_true",
                        help="also follow each critic's climb step by step (median error, cosine, score: climb_trace)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    face_model = build_face_model()
    metrics = {name: metric_weights(face_model, name) for name in (args.metric, *[m for m in METRICS if m != args.metric])}
    data_by_size, results = {}, []
    for checkpoint in args.checkpoint:
        start = time.time()
        size = ShapeCritic.from_checkpoint(checkpoint).architecture["image_size"]
        if size not in data_by_size:
            data_by_size[size] = load(face_model, args.split, args.num_faces, size, args.fit_cache or None,
                                      args.synthetic)
        row = measure(checkpoint, face_model, data_by_size[size], args.steps, args.lr, metrics, args.trace)
        row.update(split=args.split, synthetic=args.synthetic, num_faces=args.num_faces, steps=args.steps, lr=args.lr,
                   metric=args.metric, seconds=round(time.time() - start, 1))
        results.append(row)
        print(f"{checkpoint} [{size} px]: climb {row['climb.error_start_mm']:.3f} -> {row['climb.error_end_mm']:.3f} mm "
              f"(improved {row['climb.improved_fraction']:.2f}); at the true pose {row['climb_true_pose.error_start_mm']:.3f}"
              f" -> {row['climb_true_pose.error_end_mm']:.3f} mm; truth beats another face's truth "
              f"{row['truth_beats_other_truth']:.2f}; cosine {row['gradient_cosine']:.3f} (another face's image "
              f"{row['gradient_cosine_other_image']:.3f}, the landmark term {row['landmark_cosine']:.3f}); "
              f"gate {'passes' if row['gate']['passes'] else 'fails'}", flush=True)
        if args.trace:
            print_trace(row["climb_trace"])
    if args.oracle:
        for size in args.oracle_sizes or [next(iter(data_by_size), 64)]:
            if size not in data_by_size:
                data_by_size[size] = load(face_model, args.split, args.num_faces, size, args.fit_cache or None,
                                          args.synthetic)
            for target_kind, reduction in [(t, r) for t in args.oracle_targets for r in args.oracle_reductions]:
                row = measure_oracle(face_model, data_by_size[size], args.steps, args.lr, metrics, reduction, target_kind)
                row.update(split=args.split, synthetic=args.synthetic, num_faces=args.num_faces, metric=args.metric)
                results.append(row)
                print(f"render oracle [{target_kind}, {size} px, pooled {reduction}x]: climb {row['climb.error_start_mm']:.3f} -> "
                      f"{row['climb.error_end_mm']:.3f} mm (improved {row['climb.improved_fraction']:.2f}); "
                      f"cosine {row['gradient_cosine']:.3f}", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
