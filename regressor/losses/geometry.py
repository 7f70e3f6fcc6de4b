"""Supervised vertex term, for data with ground-truth meshes (synthetic, scans)."""
from __future__ import annotations

from torch import Tensor

from regressor.losses import LossTerm, register_loss
from regressor.types import LossInputs


@register_loss("vertices")
class VertexLoss(LossTerm):
    """Mean per-vertex error between ``mesh.vertices`` and ``batch.vertices`` (metres).

    Off by default in self-supervised configs: real images have no ground truth. Both meshes
    must share the model's topology (the synthetic data does).

    Args:
        norm: ``"l1"`` (mean absolute coordinate error), ``"l2"`` (mean Euclidean distance) or
            ``"mse"`` (mean squared Euclidean distance).
        center: subtract each mesh's centroid first, so only shape and pose are compared
            (the camera translation is not part of the mesh anyway, but global offsets are).
    """

    needs_images = False

    def __init__(self, norm: str = "l1", center: bool = False) -> None:
        super().__init__()
        if norm not in ("l1", "l2", "mse"):
            raise ValueError(f"vertices: norm must be 'l1', 'l2' or 'mse', got '{norm}'")
        self.norm = norm
        self.center = center

    def forward(self, inputs: LossInputs) -> Tensor:
        target = inputs.batch.vertices
        if target is None:
            raise ValueError("loss term 'vertices' needs ground-truth meshes (batch.vertices), "
                             "but this batch has none; remove the term or use data with meshes")
        predicted = inputs.mesh.vertices
        if target.shape != predicted.shape:
            raise ValueError(f"vertices: ground truth {tuple(target.shape)} and prediction "
                             f"{tuple(predicted.shape)} differ (same topology needed)")
        target = target.to(predicted.dtype)
        if self.center:
            predicted = predicted - predicted.mean(dim=1, keepdim=True)
            target = target - target.mean(dim=1, keepdim=True)
        difference = predicted - target
        if self.norm == "l1":
            return difference.abs().mean()
        squared = difference.square().sum(dim=-1)
        if self.norm == "mse":
            return squared.mean()
        return (squared + 1e-12).sqrt().mean()
