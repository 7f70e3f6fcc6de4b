"""Shading: vertex normals, attribute interpolation, 9-band SH irradiance, grey Lambert.

All functions are plain differentiable torch; images are (B, C, H, W).

Spherical-harmonics convention (used by ``FaceParams.light`` (B, 9, 3)):
the shading of a white Lambertian surface with unit normal ``n = (x, y, z)`` (model axes,
+Z to the camera) is ``sum_k light[k] * SH_BASIS_k(n)`` per RGB channel, with

=====  ==================  ===========================
 k      basis function      constant
=====  ==================  ===========================
 0      1                   1
 1-3    x, y, z             2 / sqrt(3)      ~ 1.1547
 4-6    xy, xz, yz          sqrt(15) / 4     ~ 0.9682
 7      x^2 - y^2           sqrt(15) / 8     ~ 0.4841
 8      3 z^2 - 1           sqrt(5) / 8      ~ 0.2795
=====  ==================  ===========================

These are the real SH ``Y_lm`` convolved with the clamped-cosine kernel
(Ramamoorthi & Hanrahan 2001: ``A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4``), divided by pi
(irradiance -> Lambertian radiance) and rescaled by ``1 / Y_00`` so that coefficient 0 is
directly the ambient level: ``light[:, 0] = 1`` with the rest 0 (``FaceParams.zeros``)
renders the albedo unchanged. Equivalently ``light[k] = Y_00 * L_lm`` for radiance SH
coefficients ``L_lm`` of the environment.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from regressor.types import Fragments

SH_CONSTANTS = (
    1.0,
    2.0 / math.sqrt(3.0), 2.0 / math.sqrt(3.0), 2.0 / math.sqrt(3.0),
    math.sqrt(15.0) / 4.0, math.sqrt(15.0) / 4.0, math.sqrt(15.0) / 4.0,
    math.sqrt(15.0) / 8.0,
    math.sqrt(5.0) / 8.0,
)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: (B, V, 3); faces: (F, 3) long, counter-clockwise seen from outside.
    Returns:
        (B, V, 3) outward unit normals (0 for vertices used by no face).
    """
    faces = faces.long()
    corners = vertices[:, faces]  # (B, F, 3, 3)
    face_normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals = normals.index_add(1, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def interpolate(fragments: Fragments, faces: Tensor, vertex_attributes: Tensor) -> Tensor:
    """Barycentric interpolation of per-vertex attributes into the image.

    Args:
        fragments: rasterizer output (B, H, W, 1, ...).
        faces: (F, 3) long.
        vertex_attributes: (B, V, C).
    Returns:
        (B, C, H, W), 0 on background; differentiable w.r.t. the attributes and barycentrics.
    """
    batch, height, width, _ = fragments.pix_to_face.shape
    num_verts, channels = vertex_attributes.shape[1], vertex_attributes.shape[-1]
    faces = faces.long()
    if faces.shape[0] == 0 or num_verts == 0:
        return vertex_attributes.new_zeros(batch, channels, height, width)
    pix_to_face = fragments.pix_to_face.reshape(-1)
    covered = pix_to_face >= 0
    packed = pix_to_face.clamp(min=0)
    num_faces = max(faces.shape[0], 1)
    # Packed face b*F+f -> the three packed vertex ids b*V+v; dense over all pixels, masked after.
    vertex_ids = faces.index_select(0, packed % num_faces) + (torch.div(packed, num_faces, rounding_mode="floor")
                                                               * num_verts)[:, None]
    corner_values = vertex_attributes.reshape(-1, channels).index_select(0, vertex_ids.reshape(-1))
    bary = fragments.bary_coords.reshape(-1, 3).to(vertex_attributes.dtype)
    values = (corner_values.view(-1, 3, channels) * bary[:, :, None]).sum(dim=1)
    values = values * covered[:, None].to(values.dtype)
    return values.view(batch, height, width, channels).permute(0, 3, 1, 2)


def sh_basis(normals: Tensor) -> Tensor:
    """(B, 3, H, W) unit normals -> (B, 9, H, W) scaled SH basis (see module docstring)."""
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0], dim=1
    )
    constants = torch.tensor(SH_CONSTANTS, dtype=normals.dtype, device=normals.device)
    return basis * constants[None, :, None, None]


def sh_shading(normals: Tensor, light: Tensor) -> Tensor:
    """9-band SH shading.

    Args:
        normals: (B, 3, H, W) unit normals (0 on background).
        light: (B, 9, 3) SH coefficients per RGB channel.
    Returns:
        (B, 3, H, W) shading (multiply by albedo); not clamped, so gradients never vanish.
    """
    if light.dim() != 3 or light.shape[1:] != (9, 3) or light.shape[0] != normals.shape[0]:
        raise ValueError(f"sh_shading: light must be (B, 9, 3) with B={normals.shape[0]}, got {tuple(light.shape)}")
    return torch.einsum("bkhw,bkc->bchw", sh_basis(normals), light.to(normals.dtype))


def lambert(
    normals: Tensor, light_direction: Tensor, ambient: float = 0.25, diffuse: float | None = None
) -> Tensor:
    """Grey Lambertian shading ``ambient + diffuse * max(0, n . l)``.

    Args:
        normals: (B, 3, H, W) unit normals.
        light_direction: (B, 3) or (3,) direction *towards* the light (normalised here).
        ambient: constant term; diffuse: cosine weight (default ``1 - ambient``, so lit = 1).
    Returns:
        (B, 1, H, W).
    """
    if diffuse is None:
        diffuse = 1.0 - ambient
    light_direction = torch.as_tensor(light_direction, dtype=normals.dtype, device=normals.device)
    if light_direction.dim() == 1:
        light_direction = light_direction.expand(normals.shape[0], 3)
    if light_direction.shape != (normals.shape[0], 3):
        raise ValueError(
            f"lambert: light_direction must be (3,) or (B, 3) with B={normals.shape[0]}, "
            f"got {tuple(light_direction.shape)}"
        )
    light_direction = torch.nn.functional.normalize(light_direction, dim=-1)
    cosine = (normals * light_direction[:, :, None, None]).sum(dim=1, keepdim=True)
    return ambient + diffuse * cosine.clamp(min=0.0)


def lambert_channels(normals: Tensor, light_directions, ambient: float = 0.25) -> Tensor:
    """(B, K, H, W) grey Lambert shading under each of K fixed lights ((K, 3) directions *towards* them).

    The extra input channels of a critic that sees its geometry under several lights; the renderer draws
    them, and the perceptual loss completes a one-channel render with them (``CriticRenderSettings.complete``).
    """
    lights = torch.as_tensor(light_directions, dtype=normals.dtype, device=normals.device).reshape(-1, 3)
    return torch.cat([lambert(normals, light, ambient=ambient) for light in lights], dim=1)
