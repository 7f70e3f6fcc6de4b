"""Does the critic's gradient lead a start towards the truth? The figures of the gradient gate.

One implementation, used by critic validation (``val/gradient_cosine``, ``val/climb_*`` on fixed
``critic_val`` faces and fit-like starts) and by ``benchmarks.critic_climb`` (real no-critic fits on
``val``, the published gate):

* ``gradient_cosine``: cosine between d score / d (shape, expression) at the start and truth - start;
* ``gradient_cosine_other_image``: the same with another face's image: a critic that reads the image
  gives a higher cosine with the face's own (a gradient any image gives is a prior, not perception);
* ``climb.error_start_mm`` / ``climb.error_end_mm`` / ``climb.improved_fraction``: the median
  Procrustes-aligned face-region error before and after climbing the score alone, and the share of
  faces whose error fell;
* ``truth_beats_other_truth``: the true shape placed at the start's pose outscores another face's true
  shape placed there, with the face's own image;
* ``climb_trace``: the same climb followed step by step (median error, share improved, cosine with the way
  to the truth, gradient length, score): where along the climb the gradient stops leading to the truth.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.critic.ascent import climb
from regressor.critic.gradient import direction_to_truth, metric_cosine, score_gradient
from regressor.critic.target import aligned_face_error_mm, place_like
from regressor.types import FaceParams, replace

CLIMB_STEPS = 20
CLIMB_LR = 0.02


def params_error_mm(face_model, params: FaceParams, truth: Tensor, region: Tensor) -> Tensor:
    """(B,) Procrustes-aligned face-region error (mm) of the meshes of ``params`` against ``truth`` (B, V, 3)."""
    return aligned_face_error_mm(face_model(params).vertices[:, None], truth, region)[:, 0]


def gradient_cosines(critic, face_model, render, image: Tensor, start: FaceParams, truth: FaceParams,
                     metrics: dict[str, Tensor]) -> dict[str, Tensor]:
    """(B,) cosines of the critic's ascent direction with truth - start in each metric (``name -> weights``),
    with the face's own image (``gradient_cosine@name``) and with the next face's (``torch.roll``;
    ``gradient_cosine_other_image@name``)."""
    direction = direction_to_truth(start, truth)
    out = {}
    for key, shown in (("gradient_cosine", image), ("gradient_cosine_other_image", torch.roll(image, 1, dims=0))):
        _, gradient = score_gradient(critic, face_model, render, shown, start, create_graph=False)
        for name, weights in metrics.items():
            out[f"{key}@{name}"] = metric_cosine(gradient, direction, weights).detach()
    return out


def climb_figures(critic, face_model, render, image: Tensor, truth_vertices: Tensor, region: Tensor,
                  start: FaceParams, steps: int = CLIMB_STEPS, lr: float = CLIMB_LR) -> dict[str, float]:
    """Median aligned error before/after ``steps`` Adam steps on shape and expression that maximise the score
    alone (at the start's pose and camera), and the share of faces whose error fell."""
    with torch.no_grad():
        before = params_error_mm(face_model, start, truth_vertices, region)
    end = climb(critic, face_model, render, image, start, {"shape": start.shape, "expression": start.expression},
                torch.zeros_like(truth_vertices), steps, lr, optimizer="adam")
    with torch.no_grad():
        after = params_error_mm(face_model, replace(start, **end), truth_vertices, region)
    return {"error_start_mm": float(before.median()), "error_end_mm": float(after.median()),
            "improved_fraction": float((after < before).float().mean())}


def climb_trace(critic, face_model, render, image: Tensor, truth: FaceParams, truth_vertices: Tensor,
                region: Tensor, start: FaceParams, weights: Tensor, steps: int = CLIMB_STEPS,
                lr: float = CLIMB_LR) -> list[dict[str, float]]:
    """``climb_figures``' climb, one row per step (``steps + 1`` rows; the last is the end point, which has no
    gradient): ``error_mm`` (median aligned error), ``improved_fraction``, ``gradient_cosine`` (in the metric
    ``weights``, mean over faces), ``gradient_norm`` (its length in that metric, median) and ``score`` (mean)."""
    with torch.no_grad():
        before = params_error_mm(face_model, start, truth_vertices, region)
    rows = []

    def record(step: int, values: dict[str, Tensor], score: Tensor | None, gradient: Tensor | None) -> None:
        point = replace(start, **values)
        with torch.no_grad():
            error = params_error_mm(face_model, point, truth_vertices, region)
        row = {"step": step, "error_mm": float(error.median()), "improved_fraction": float((error < before).float().mean())}
        if gradient is not None:
            row["gradient_cosine"] = float(metric_cosine(gradient, direction_to_truth(point, truth), weights).mean())
            row["gradient_norm"] = float((gradient / weights.to(gradient).sqrt()).norm(dim=1).median())
            row["score"] = float(score.mean())
        rows.append(row)

    end = climb(critic, face_model, render, image, start, {"shape": start.shape, "expression": start.expression},
                torch.zeros_like(truth_vertices), steps, lr, optimizer="adam",
                on_step=lambda step, values, score, gradients: record(step, values, score, torch.cat(gradients, 1)))
    record(steps, end, None, None)
    return rows


@torch.no_grad()
def truth_beats_other_truth(critic, face_model, render, image: Tensor, truth_vertices: Tensor, region: Tensor,
                            start: FaceParams) -> float:
    """Share of faces whose true shape, placed at the start's pose, outscores the next face's true shape there."""
    placed_at = face_model(start).vertices
    own = critic(image, render(place_like(truth_vertices, placed_at, region), start.camera).shaded)
    other_vertices = place_like(torch.roll(truth_vertices, 1, dims=0), placed_at, region)
    other = critic(image, render(other_vertices, start.camera).shaded)
    return float((own > other).float().mean())


def gate_figures(critic, face_model, render, image: Tensor, truth: FaceParams, truth_vertices: Tensor,
                 region: Tensor, start: FaceParams, metrics: dict[str, Tensor], steps: int = CLIMB_STEPS,
                 lr: float = CLIMB_LR) -> dict[str, float]:
    """All the figures above for B faces from ``start`` (the critic is used in eval mode, then restored).

    ``metrics``: direction metrics (``name -> weights``); the first one's cosines are also reported without
    the ``@name`` suffix (the headline figures)."""
    was_training = critic.training
    critic.eval()
    try:
        cosines = gradient_cosines(critic, face_model, render, image, start, truth, metrics)
        out = {name: float(value.mean()) for name, value in cosines.items()}
        main = next(iter(metrics))
        for key in ("gradient_cosine", "gradient_cosine_other_image"):
            out[key] = out[f"{key}@{main}"]
        out["truth_beats_other_truth"] = truth_beats_other_truth(critic, face_model, render, image, truth_vertices,
                                                                 region, start)
        figures = climb_figures(critic, face_model, render, image, truth_vertices, region, start, steps, lr)
        out.update({f"climb.{k}": v for k, v in figures.items()})
    finally:
        critic.train(was_training)
    return out
