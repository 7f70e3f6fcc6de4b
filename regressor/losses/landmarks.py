"""2D landmark term on the 68 iBUG points, with per-region weights."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from regressor.losses import LossTerm, register_loss
from regressor.types import NUM_LANDMARKS, LossInputs

#: iBUG-68 regions (0-based, end exclusive), as stated in ``regressor.types``.
LANDMARK_REGIONS: dict[str, tuple[int, int]] = {
    "jaw": (0, 17), "brows": (17, 27), "nose": (27, 36), "eyes": (36, 48), "mouth": (48, 68),
}


def region_weight_vector(region_weights: Mapping[str, float] | None) -> Tensor:
    """(68,) per-point weights from ``{region: weight}``; unnamed regions keep weight 1."""
    weights = torch.ones(NUM_LANDMARKS)
    for region, weight in (region_weights or {}).items():
        if region not in LANDMARK_REGIONS:
            raise ValueError(f"landmarks: unknown region '{region}'; regions are {', '.join(LANDMARK_REGIONS)}")
        start, end = LANDMARK_REGIONS[region]
        weights[start:end] = float(weight)
    return weights


@register_loss("landmarks")
class LandmarkLoss(LossTerm):
    """Weighted distance between ``renders.landmarks2d`` and ``batch.landmarks``.

    The predicted points come from the face model's landmark embedding, whose 17 jaw points
    follow the dynamic (pose-dependent) contour, so the silhouette is matched as a 2D
    detector sees it. Coordinates are divided by the image width/height, which makes the value
    independent of the resolution. Points with ``landmarks_valid == 0`` do not count.

    Args:
        region_weights: e.g. ``{"jaw": 0.5, "mouth": 2.0}``; regions: jaw, brows, nose, eyes, mouth.
        norm: ``"l2"`` (Euclidean distance per point), ``"l1"`` (|dx| + |dy|) or ``"mse"`` (squared distance).
    """

    needs_images = False

    def __init__(self, region_weights: Mapping[str, float] | None = None, norm: str = "l2") -> None:
        super().__init__()
        if norm not in ("l1", "l2", "mse"):
            raise ValueError(f"landmarks: norm must be 'l1', 'l2' or 'mse', got '{norm}'")
        self.norm = norm
        self.register_buffer("point_weights", region_weight_vector(region_weights), persistent=False)

    def forward(self, inputs: LossInputs) -> Tensor:
        predicted = inputs.renders.landmarks2d
        target = inputs.batch.landmarks.to(predicted.dtype)
        if predicted.shape != target.shape or predicted.shape[-2:] != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks: expected (B, {NUM_LANDMARKS}, 2) for prediction and target, "
                             f"got {tuple(predicted.shape)} and {tuple(target.shape)}")
        height, width = inputs.batch.image.shape[-2:]
        size = torch.tensor([width, height], dtype=predicted.dtype, device=predicted.device)
        difference = (predicted - target) / size
        if self.norm == "l1":
            distance = difference.abs().sum(dim=-1)
        elif self.norm == "mse":
            distance = difference.square().sum(dim=-1)
        else:
            distance = (difference.square().sum(dim=-1) + 1e-12).sqrt()
        valid = inputs.batch.landmarks_valid.to(predicted.dtype)
        # Invalid points may hold NaN/garbage coordinates: zero them before weighting.
        distance = torch.where(valid > 0, distance, torch.zeros_like(distance))
        weights = valid * self.point_weights.to(predicted.dtype)
        return (distance * weights).sum() / weights.sum().clamp_min(1e-8)
