"""Specification of ``regressor.render.shading``: normals, interpolation, SH, Lambert."""
from __future__ import annotations

import math

import pytest
import torch
from pytorch3d.utils import ico_sphere

from regressor.render import project_weak_perspective, rasterize
from regressor.render.shading import interpolate, lambert, sh_shading, vertex_normals


def sphere(level: int = 2, radius: float = 0.1, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = ico_sphere(level)
    return (mesh.verts_padded() * radius).expand(batch, -1, -1).clone(), mesh.faces_packed()


def unit_normals(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=-1)


def test_vertex_normals_of_a_sphere_point_outwards():
    verts, faces = sphere()
    normals = vertex_normals(verts, faces)
    radial = torch.nn.functional.normalize(verts, dim=-1)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(1), atol=1e-5)
    assert (normals * radial).sum(-1).min() > 0.99


def test_interpolating_a_constant_gives_that_constant_on_the_face_and_zero_elsewhere():
    verts, faces = sphere(batch=2)
    fragments = rasterize(project_weak_perspective(verts, torch.tensor([[8.0, 0, 0]] * 2), 24), faces, 24)
    image = interpolate(fragments, faces, torch.full((2, verts.shape[1], 2), 0.3))
    mask = fragments.mask[:, None].expand(-1, 2, -1, -1)
    assert image.shape == (2, 2, 24, 24)
    assert torch.allclose(image[mask], torch.tensor(0.3), atol=1e-5)
    assert (image[~mask] == 0).all()


def test_interpolated_positions_reproduce_the_screen_coordinates():
    verts, faces = sphere()
    screen = project_weak_perspective(verts, torch.tensor([[8.0, 0.01, 0]]), 24)
    fragments = rasterize(screen, faces, 24)
    xy = interpolate(fragments, faces, screen[..., :2])
    rows, cols = torch.nonzero(fragments.mask[0], as_tuple=True)
    assert torch.allclose(xy[0, 0, rows, cols], cols.float() + 0.5, atol=1e-3)
    assert torch.allclose(xy[0, 1, rows, cols], rows.float() + 0.5, atol=1e-3)


def _environment(directions: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Radiance of the environment whose (un-convolved) SH expansion the coefficients describe."""
    x, y, z = directions.unbind(-1)
    s3, s15, s5 = math.sqrt(3.0), math.sqrt(15.0), math.sqrt(5.0)
    basis = torch.stack([torch.ones_like(x), s3 * x, s3 * y, s3 * z, s15 * x * y, s15 * x * z, s15 * y * z,
                         s15 / 2 * (x * x - y * y), s5 / 2 * (3 * z * z - 1)], dim=-1)  # Y_lm / Y_00
    return basis @ light


def test_sh_shading_equals_the_lambertian_integral_of_the_environment():
    """Monte Carlo: shading(n) = (1/pi) * integral of max(0, n.w) L(w) dw for a 9-band environment."""
    light = torch.tensor([0.8, 0.2, -0.3, 0.4, 0.15, -0.1, 0.05, 0.12, -0.08], dtype=torch.float64)
    directions = unit_normals(400_000, seed=1)
    radiance = _environment(directions, light)  # (S,)
    normals = unit_normals(16, seed=2)
    cosine = (normals @ directions.T).clamp(min=0)  # (16, S)
    expected = (cosine * radiance).mean(dim=1) * 4.0  # 4 pi / pi
    image = normals.T.reshape(1, 3, 4, 4)
    shading = sh_shading(image, light[None, :, None].expand(1, 9, 3))
    assert torch.allclose(shading[0, 0].reshape(-1), expected, atol=0.02)
    assert torch.allclose(shading[0, 0], shading[0, 2])


def test_ambient_sh_light_leaves_the_albedo_unchanged():
    light = torch.zeros(2, 9, 3)
    light[:, 0] = 1.0
    shading = sh_shading(unit_normals(50).float().T.reshape(1, 3, 5, 10).expand(2, -1, -1, -1), light)
    assert torch.allclose(shading, torch.ones(1))


def test_lambert_is_ambient_facing_away_and_one_facing_the_light():
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    grey = lambert(normals, torch.tensor([0.0, 0.0, 2.0]), ambient=0.25)
    assert torch.allclose(grey[0, 0, 0], torch.tensor([1.0, 0.25, 0.25]))
    with pytest.raises(ValueError, match="light_direction"):
        lambert(normals, torch.zeros(2, 3))


def test_sh_shading_rejects_a_wrongly_shaped_light():
    with pytest.raises(ValueError, match=r"\(B, 9, 3\)"):
        sh_shading(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 3))
