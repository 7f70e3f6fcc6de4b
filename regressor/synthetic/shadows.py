"""Cast shadows for synthetic faces with a shadow map from the key light.

Cheap because it reuses our rasterizer once per batch: the mesh is rotated so that the light
looks down -Z, rasterized orthographically, and each image pixel's surface point is compared
with the nearest depth seen from the light (3x3 percentage-closer filtering for soft edges;
the lookup point is lifted along the normal by 1.5 texels against shadow acne).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.render import rasterize


def _rotation_to_z(direction: Tensor) -> Tensor:
    """(B, 3) unit vectors -> (B, 3, 3) rotations R with R @ d = +Z (Rodrigues)."""
    z = torch.zeros_like(direction)
    z[:, 2] = 1.0
    axis = torch.cross(direction, z, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (direction * z).sum(-1, keepdim=True)
    k = axis / sin.clamp(min=1e-8)
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=direction.dtype, device=direction.device).expand_as(K)
    R = eye + sin[..., None] * K + (1 - cos[..., None]) * (K @ K)
    flipped = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=direction.dtype, device=direction.device))
    return torch.where((cos < -0.9999)[..., None], flipped.expand_as(R), R)


def key_light_visibility(vertices: Tensor, faces: Tensor, points: Tensor, normals: Tensor, direction: Tensor,
                         map_size: int = 128, backend: str = "torch") -> Tensor:
    """(B, 1, H, W) visibility of the light from each pixel's surface point, in [0, 1].

    Args:
        vertices: (B, V, 3) the rendered mesh (model space, metres); faces (F, 3).
        points: (B, 3, H, W) model-space surface point of each pixel; normals (B, 3, H, W).
        direction: (B, 3) unit direction towards the key light.
    """
    rotation = _rotation_to_z(direction)  # (B, 3, 3)
    rotated = torch.einsum("bij,bvj->bvi", rotation, vertices)
    low, high = rotated[..., :2].amin(1), rotated[..., :2].amax(1)
    centre, extent = (low + high) / 2, (high - low).amax(-1).clamp(min=1e-6) * 0.52
    pixels_per_metre = (map_size / 2) / extent  # (B,)
    to_map = lambda p: (p[..., :2] - centre[:, None]) * pixels_per_metre[:, None, None] + map_size / 2  # noqa: E731
    screen = torch.cat([to_map(rotated), 10.0 - rotated[..., 2:3]], -1)
    fragments = rasterize(screen, faces, map_size, backend=backend, cull_backfaces=False)
    light_depth = torch.where(fragments.zbuf[..., 0] > 0, fragments.zbuf[..., 0], torch.full_like(fragments.zbuf[..., 0], 1e3))

    b, _, h, w = points.shape
    texel = (1.0 / pixels_per_metre)[:, None, None, None]  # metres per shadow-map texel
    lifted = points + normals * 1.5 * texel  # normal-offset lookup: no shadow acne on the lit surface
    p = torch.einsum("bij,bjn->bin", rotation, lifted.reshape(b, 3, -1))  # (B, 3, HW)
    map_xy = to_map(p.transpose(1, 2))  # (B, HW, 2) in map pixels
    depth = 10.0 - p[:, 2]  # (B, HW)
    cos = (normals * direction[:, :, None, None]).sum(1).reshape(b, -1).clamp(0, 1)
    bias = 0.002 + 0.006 * (1 - cos)
    lit = torch.zeros_like(depth)
    offsets = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    for dx, dy in offsets:
        xy = map_xy + torch.tensor([dx, dy], dtype=map_xy.dtype, device=map_xy.device)
        grid = (xy / map_size * 2 - 1)[:, None]  # (B, 1, HW, 2)
        seen = F.grid_sample(light_depth[:, None], grid, mode="nearest", padding_mode="border", align_corners=False)
        lit = lit + (depth <= seen[:, 0, 0] + bias).float()
    return (lit / len(offsets)).view(b, 1, h, w)
