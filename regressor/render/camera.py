"""Cameras: model-space vertices (metres) -> screen space ``(x px, y px, depth)``.

Screen space follows ``regressor.types``: origin at the top-left image corner, x right,
y down, pixel ``(col, row)`` centred at ``(col + 0.5, row + 0.5)``, depth > 0 with
smaller = closer. Both cameras produce exactly that, so the rasterizer never needs to
know which camera was used.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class PinholeCamera:
    """A perspective camera looking down its own -Z axis (+X right, +Y up, OpenGL-like).

    ``X_cam = R @ X + t``; depth ``= -Z_cam``; pixel ``x = cx + f * X_cam / depth``,
    ``y = cy - f * Y_cam / depth``. With the identity rotation and ``t = (0, 0, -d)`` the
    model's +Z (out of the face) points at the camera, d metres away.

    Attributes:
        focal_length: (B,) focal length in pixels.
        principal_point: (B, 2) ``(cx, cy)`` in pixels (image centre = ``(W/2, H/2)``).
        rotation: (B, 3, 3) model -> camera rotation.
        translation: (B, 3) model -> camera translation, metres.
    """

    focal_length: Tensor
    principal_point: Tensor
    rotation: Tensor
    translation: Tensor

    @classmethod
    def looking_at_face(
        cls,
        batch_size: int,
        image_size: int | tuple[int, int],
        distance: float = 1.0,
        field_of_view_deg: float = 14.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "PinholeCamera":
        """A frontal camera ``distance`` metres from the origin with the given vertical FOV."""
        height, width = _image_hw(image_size)
        focal = (height / 2.0) / torch.tan(torch.deg2rad(torch.tensor(field_of_view_deg / 2.0, dtype=torch.float64)))
        kw = dict(device=device, dtype=dtype)
        return cls(
            focal_length=torch.full((batch_size,), float(focal), **kw),
            principal_point=torch.tensor([width / 2.0, height / 2.0], **kw).expand(batch_size, 2).clone(),
            rotation=torch.eye(3, **kw).expand(batch_size, 3, 3).clone(),
            translation=torch.tensor([0.0, 0.0, -distance], **kw).expand(batch_size, 3).clone(),
        )

    def project(self, vertices: Tensor) -> Tensor:
        """(B, V, 3) model-space points -> (B, V, 3) screen ``(x px, y px, depth)``."""
        if vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"PinholeCamera.project: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
        cam = torch.einsum("bij,bvj->bvi", self.rotation, vertices) + self.translation[:, None, :]
        depth = -cam[..., 2]
        # Points at/behind the camera plane keep their (non-positive) depth, so the rasterizer drops them.
        safe_depth = torch.where(depth.abs() > 1e-9, depth, torch.full_like(depth, 1e-9))
        focal = self.focal_length[:, None]
        x = self.principal_point[:, None, 0] + focal * cam[..., 0] / safe_depth
        y = self.principal_point[:, None, 1] - focal * cam[..., 1] / safe_depth
        return torch.stack([x, y, depth], dim=-1)
