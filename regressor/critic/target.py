"""The critic's error target: the Procrustes-aligned face-region error, as NoW measures shape.

Why: the first critics were trained on the whole-head mean vertex error in the true
camera. At a landmark fit about 94% of that error is rigid misalignment, which the NoW metric
removes, so the critic learned to judge placement, not shape. This target keeps only what NoW
keeps:

1. **face region**: the vertices inside NoW's face sphere around the truth's 7 NoW landmarks
   (``regressor.evaluation.now.crop_scan``: no scalp, ears or neck);
2. **alignment**: the similarity (scale, rotation, translation) that best maps the candidate's
   face-region vertices onto the truth's (``regressor.evaluation.metrics.similarity_transform``);
3. **error**: the mean distance of the aligned face-region vertices, in mm.

Candidates must correspond vertex by vertex to the truth (same topology). A remeshed or cropped
candidate is compared with the *equally* remeshed or cropped truth (``benchmarks.topology.topology``).

Which target a critic was trained on is stored in its checkpoint (``ShapeCritic.error_target``):
``TARGETS`` lists the names.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.evaluation.metrics import mean_vertex_error_mm, similarity_transform
from regressor.evaluation.now import crop_scan
from regressor.models.critic import ALIGNED_FACE_REGION, CAMERA_WHOLE_HEAD, TARGETS  # noqa: F401 - the names, defined with the network


def face_region(vertices: Tensor, now_landmarks: Tensor) -> Tensor:
    """(B, V) bool: vertices inside NoW's face sphere of each face's (B, 7, 3) NoW landmarks."""
    return torch.stack([crop_scan(v, lm) for v, lm in zip(vertices, now_landmarks)])


def aligned_face_error_mm(candidates: Tensor, truth: Tensor, region: Tensor) -> Tensor:
    """Mean face-region vertex distance after the best similarity alignment, in mm.

    Args:
        candidates: (B, C, V, 3) or (B, V, 3) metres, vertex-for-vertex with ``truth``.
        truth: (B, V, 3) metres.
        region: (B, V) bool, the face region of each truth (``face_region``).
    Returns:
        (B, C) or (B,) mm. A similarity copy of the truth scores 0.
    """
    single = candidates.ndim == 3
    if single:
        candidates = candidates[:, None]
    b, c = candidates.shape[:2]
    out = candidates.new_zeros(b, c)
    for i in range(b):
        index = region[i].nonzero().squeeze(1)
        if index.numel() < 3:
            raise ValueError(f"aligned_face_error_mm: face {i} has {index.numel()} face-region vertices, need >= 3")
        target = truth[i, index].double()[None].expand(c, -1, -1)
        source = candidates[i][:, index].double()
        aligned = similarity_transform(source, target).apply(source)
        out[i] = mean_vertex_error_mm(aligned, target).to(out)
    return out[:, 0] if single else out


def place_like(vertices: Tensor, reference: Tensor, region: Tensor) -> Tensor:
    """``vertices`` (B, V, 3) moved by the similarity that best maps their face region onto ``reference``'s.

    Used to show the *true* shape at a *fitted* pose and camera: ``place_like(truth, fitted, region)``
    has aligned error 0 and sits where the fit sits in the image.
    """
    out = []
    for i in range(vertices.shape[0]):
        index = region[i].nonzero().squeeze(1)
        transform = similarity_transform(vertices[i:i + 1, index].double(), reference[i:i + 1, index].double())
        out.append(transform.apply(vertices[i:i + 1].double()).to(vertices))
    return torch.cat(out)


def error_for_target(target: str, candidates: Tensor, truth: Tensor, region: Tensor | None = None,
                     camera_aligned: Tensor | None = None) -> Tensor:
    """(B, C) error in mm of ``target``: ``camera_whole_head`` uses ``camera_aligned`` (candidates in the
    true camera's frame, see ``negatives.aligned_to_camera``); ``aligned_face_region`` uses ``region``."""
    if target == CAMERA_WHOLE_HEAD:
        return mean_vertex_error_mm(candidates if camera_aligned is None else camera_aligned, truth[:, None])
    if target == ALIGNED_FACE_REGION:
        if region is None:
            raise ValueError("error_for_target: the aligned face-region error needs the face region")
        return aligned_face_error_mm(candidates, truth, region)
    raise ValueError(f"unknown critic error target {target!r}; known: {TARGETS}")

