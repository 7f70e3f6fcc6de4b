"""Cameras: model-space vertices (metres) -> screen space ``(x px, y px, depth)``.

Screen space follows ``regressor.types``: origin at the top-left image corner, x right,
y down, pixel ``(col, row)`` centred at ``(col + 0.5, row + 0.5)``, depth > 0 with
smaller = closer. Any camera added here must produce exactly that, so the rasterizer never
needs to know which camera was used.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Weak-perspective depth is ``WEAK_PERSPECTIVE_DEPTH_OFFSET - Z`` (metres): +Z points to the
# camera, so larger Z is closer (smaller depth). 10 m keeps any head-sized mesh positive.
WEAK_PERSPECTIVE_DEPTH_OFFSET = 10.0


def _image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def ndc_to_pixels(xy_ndc: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """(..., 2) NDC (x right, y up, [-1, 1] spans the image) -> (..., 2) pixels (y down)."""
    height, width = _image_hw(image_size)
    x = (xy_ndc[..., 0] + 1.0) * (width / 2.0)
    y = (1.0 - xy_ndc[..., 1]) * (height / 2.0)
    return torch.stack([x, y], dim=-1)


def project_weak_perspective(vertices: Tensor, camera: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """DECA-style orthographic camera with scale and 2D translation.

    ``x_ndc = s * (X + tx)``, ``y_ndc = s * (Y + ty)``; pixel ``x = (x_ndc + 1) * W / 2``,
    ``y = (1 - y_ndc) * H / 2``; depth ``= 10 - Z`` (metres, positive, smaller = closer).

    Args:
        vertices: (B, V, 3) model-space points, metres (any V, e.g. landmarks).
        camera: (B, 3) ``[scale, tx, ty]``.
        image_size: int or (H, W).
    Returns:
        (B, V, 3) screen-space ``(x px, y px, depth)``; differentiable in both inputs.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"project_weak_perspective: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if camera.dim() != 2 or camera.shape[-1] != 3 or camera.shape[0] != vertices.shape[0]:
        raise ValueError(
            f"project_weak_perspective: camera must be (B, 3) with B={vertices.shape[0]}, got {tuple(camera.shape)}"
        )
    scale = camera[:, None, 0:1]
    translation = camera[:, None, 1:3]
    xy_ndc = scale * (vertices[..., :2] + translation)
    xy = ndc_to_pixels(xy_ndc, image_size)
    depth = WEAK_PERSPECTIVE_DEPTH_OFFSET - vertices[..., 2:3]
    return torch.cat([xy, depth], dim=-1)
