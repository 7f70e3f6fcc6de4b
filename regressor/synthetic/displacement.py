"""Geometry beyond the face model: smooth per-identity bumps along the surface normals.

A few Gaussian bumps (1.2-3 cm wide) on the face region, scaled so that the largest
displacement of an identity is ``displacement_mm`` (1-3 mm by default). They live outside the
shape basis, so no regressor can reproduce the ground-truth mesh exactly - the real situation.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.synthetic.procedural import stage_generator, uniform
from regressor.render.shading import vertex_normals


def face_region_weights(template: Tensor, landmarks: Tensor) -> Tensor:
    """(V,) smooth weight in [0, 1]: 1 on the face (forehead to chin, cheek to cheek), 0 behind it.

    template: (V, 3) template vertices; landmarks: (68, 3) their neutral landmarks.
    """
    centre = landmarks[:, :2].mean(0)
    half_width = (landmarks[16, 0] - landmarks[0, 0]).abs() / 2 * 1.1
    top = landmarks[17:27, 1].max() + 0.035
    bottom = landmarks[8, 1] - 0.005
    half_height = (top - bottom) / 2
    mid_y = (top + bottom) / 2
    ellipse = ((template[:, 0] - centre[0]) / half_width) ** 2 + ((template[:, 1] - mid_y) / half_height) ** 2
    radial = (1.0 - ellipse).clamp(0, 1) ** 0.5
    front_z = landmarks[[0, 16], 2].mean() - 0.01
    facing = ((template[:, 2] - front_z) / 0.02).clamp(0, 1)
    return radial * facing


def sample_displacement_amplitudes(seeds: list[int], template: Tensor, region: Tensor,
                                   displacement_mm: tuple[float, float], bumps: tuple[int, int]) -> Tensor:
    """(B, V) signed displacement along the normal (metres) for each seed's identity."""
    candidates = (region > 0.3).nonzero().squeeze(1)
    if candidates.numel() == 0:
        raise ValueError("face_region_weights selected no vertex; cannot place displacement bumps")
    rows = []
    for seed in seeds:
        g = stage_generator(seed, "displacement")
        count = int(torch.randint(bumps[0], bumps[1] + 1, (1,), generator=g))
        centres = template[candidates[torch.randint(0, candidates.numel(), (count,), generator=g)]]
        widths = torch.rand(count, generator=g) * 0.018 + 0.012
        signs = torch.where(torch.rand(count, generator=g) < 0.5, -1.0, 1.0) * (0.5 + torch.rand(count, generator=g))
        peak = uniform(g, *displacement_mm) * 1e-3
        d2 = ((template[:, None, :] - centres[None]) ** 2).sum(-1)  # (V, count)
        field = (torch.exp(-0.5 * d2 / widths**2) * signs).sum(-1) * region
        rows.append(field * (peak / field.abs().max().clamp(min=1e-12)))
    return torch.stack(rows)


def displace(vertices: Tensor, faces: Tensor, amplitudes: Tensor) -> Tensor:
    """(B, V, 3) displacement vectors: amplitude (B, V) along the posed mesh's vertex normals."""
    return vertex_normals(vertices, faces) * amplitudes[..., None].to(vertices)


def displace_landmarks(landmarks3d: Tensor, vertices: Tensor, displacement: Tensor) -> Tensor:
    """(B, K, 3) landmarks moved with the displacement of their nearest vertex.

    The field is smooth on the centimetre scale, so the nearest vertex's displacement is the
    displacement of the surface point to well under a millimetre.
    """
    nearest = torch.cdist(landmarks3d, vertices).argmin(-1)  # (B, K)
    moved = torch.gather(displacement, 1, nearest[..., None].expand(-1, -1, 3))
    return landmarks3d + moved
