"""Shape and landmark metrics, one implementation each (plain torch, no Lightning).

Used by training (``RegressorModule`` validation), the critic (negatives' errors, the gradient
probe), the NoW metric, the demo, the notebooks and the benchmarks.

* ``mean_vertex_error_mm``: mean Euclidean distance between corresponding vertices, in mm.
* ``similarity_transform`` / ``procrustes_align``: the similarity (scale, rotation, translation; no
  reflection) that best maps corresponding points onto a target (Umeyama, pytorch3d).
* ``vertex_errors_mm``: the vertex error before and after that alignment.
* ``landmark_error_px``: mean 2-D landmark distance over the valid landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch3d.ops import corresponding_points_alignment
from torch import Tensor

MM_PER_METRE = 1000.0


def mean_vertex_error_mm(vertices: Tensor, truth: Tensor) -> Tensor:
    """(..., V, 3) x2 in metres -> (...) mean Euclidean distance in millimetres."""
    return (vertices - truth).norm(dim=-1).mean(dim=-1) * MM_PER_METRE


@dataclass
class Similarity:
    """Batched ``x -> scale * x @ rotation + translation`` (row vectors, pytorch3d convention).

    Attributes: scale (B,), rotation (B, 3, 3), translation (B, 3).
    """

    scale: Tensor
    rotation: Tensor
    translation: Tensor

    def apply(self, points: Tensor) -> Tensor:
        """(B, N, 3) -> (B, N, 3)."""
        return self.scale[:, None, None] * torch.bmm(points, self.rotation) + self.translation[:, None, :]


def similarity_transform(source: Tensor, target: Tensor) -> Similarity:
    """The similarity (no reflection) that maps ``source`` (B, P, 3) onto ``target`` (B, P, 3)."""
    result = corresponding_points_alignment(source, target, estimate_scale=True, allow_reflection=False)
    return Similarity(result.s, result.R, result.T)


def procrustes_align(source: Tensor, target: Tensor) -> Tensor:
    """``source`` (B, V, 3) after the similarity that best maps it onto ``target`` (B, V, 3)."""
    return similarity_transform(source, target).apply(source)


def vertex_errors_mm(predicted: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) mean vertex distance in mm, unaligned and after similarity alignment.

    predicted, target: (B, V, 3) metres, same topology.
    """
    predicted, target = predicted.float(), target.float()
    raw = mean_vertex_error_mm(predicted, target)
    return raw, mean_vertex_error_mm(procrustes_align(predicted, target), target)


def landmark_error_px(predicted: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """(B,) mean distance over valid landmarks; predicted, target (B, 68, 2) px, valid (B, 68)."""
    distance = (predicted - target).norm(dim=-1)
    return (distance * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
