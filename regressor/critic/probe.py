"""The gradient-usefulness probe: does climbing the critic's score alone lower the true error?

One implementation, used by critic training (``val/gradient_fraction``, a few faces every
validation) and by ``benchmarks.critic`` (the published figures). From the true parameters with
shape and expression perturbed (std ``noise`` per coefficient), ``climb`` maximises the critic
score alone; the probe returns the start and end geometries so each caller measures what it
reports (all vertices, visible vertices, scores).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regressor.critic.ascent import climb, perturbed_start
from regressor.evaluation.metrics import MM_PER_METRE, mean_vertex_error_mm
from regressor.types import FaceParams, replace

PROBED_FIELDS = ("shape", "expression")


@dataclass
class ProbeResult:
    """Start and end of the climb for B faces.

    Attributes:
        truth, start_vertices, end_vertices: (B, V, 3) metres.
        score_start, score_end: (B,) critic scores of the start and end geometries.
    """

    truth: Tensor
    start_vertices: Tensor
    end_vertices: Tensor
    score_start: Tensor
    score_end: Tensor

    def errors_mm(self, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B,) mean vertex error at the start and at the end; ``weights`` (B, V) restricts the mean."""
        if weights is None:
            return mean_vertex_error_mm(self.start_vertices, self.truth), mean_vertex_error_mm(self.end_vertices, self.truth)

        def weighted(vertices: Tensor) -> Tensor:
            distance = (vertices - self.truth).norm(dim=-1) * MM_PER_METRE
            return (distance * weights).sum(1) / weights.sum(1).clamp(min=1)
        return weighted(self.start_vertices), weighted(self.end_vertices)

    def summary(self) -> dict[str, float]:
        """``gradient_fraction`` (share of faces whose error fell) and ``gradient_error_change_mm``."""
        before, after = self.errors_mm()
        return {"gradient_fraction": float((after < before).float().mean()),
                "gradient_error_change_mm": float((after - before).mean())}


def gradient_probe(critic, face_model, render, image: Tensor, params: FaceParams, truth: Tensor, steps: int = 10,
                   learning_rate: float = 0.15, noise: float = 0.8, seed: int = 0, optimizer: str = "adam",
                   keep_displacement: bool = True) -> ProbeResult:
    """Climb the critic score alone from perturbed shape and expression; see the module docstring.

    Args:
        render: ``render(vertices (N, V, 3), camera (N, 3)) -> Renders`` with the loss-time light.
        image: (B, 3, H, W); params / truth: the faces' true ``FaceParams`` and (B, V, 3) vertices.
        optimizer: ``climb``'s ``"adam"`` or ``"normalised"``.
        keep_displacement: add the truth's detail beyond the model (truth - model(params)) to every
            climbed geometry (training); False measures the model's own geometry (the benchmark).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model_vertices = face_model(params).vertices
        displacement = truth - model_vertices if keep_displacement else torch.zeros_like(model_vertices)
    start = perturbed_start(params, PROBED_FIELDS, noise, generator)
    end = climb(critic, face_model, render, image, params, start, displacement, steps, learning_rate, optimizer)
    with torch.no_grad():
        start_vertices = face_model(replace(params, **start)).vertices + displacement
        end_vertices = face_model(replace(params, **end)).vertices + displacement
        was_training = critic.training
        critic.eval()
        scores = [critic(image, render(v, params.camera).shaded) for v in (start_vertices, end_vertices)]
        critic.train(was_training)
    return ProbeResult(truth, start_vertices, end_vertices, *scores)
