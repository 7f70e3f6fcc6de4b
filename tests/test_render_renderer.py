"""Specification of cameras and ``Renderer``: outputs, backgrounds, lights, gradients."""
from __future__ import annotations

import pytest
import torch
from pytorch3d.utils import ico_sphere

from regressor.render import Renderer, project_weak_perspective
from regressor.types import FaceMesh


def sphere_mesh(level: int = 2, batch: int = 2, dtype=torch.float32) -> FaceMesh:
    mesh = ico_sphere(level)
    verts = (mesh.verts_padded() * 0.1).to(dtype).expand(batch, -1, -1).clone()
    return FaceMesh(vertices=verts, faces=mesh.faces_packed(), landmarks3d=verts[:, :68].clone(),
                    now_landmarks3d=verts[:, :7].clone())


def cameras(batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([[8.0, 0.0, 0.0]], dtype=dtype).expand(batch, 3).clone()


def test_weak_perspective_maps_the_origin_to_the_image_centre_with_y_down_and_z_closer():
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.05]]])
    screen = project_weak_perspective(points, torch.tensor([[5.0, 0.0, 0.0]]), (40, 60))
    assert torch.allclose(screen[0, 0, :2], torch.tensor([30.0, 20.0]))
    assert torch.allclose(screen[0, 1, :2], torch.tensor([30.0 + 0.5 * 30.0, 20.0]))  # x_ndc 0.5
    assert screen[0, 2, 1] < 20.0  # +Y (up) is a smaller row
    assert 0 < screen[0, 2, 2] < screen[0, 0, 2]  # +Z (towards the camera) is closer


def test_weak_perspective_translation_is_added_before_scaling():
    points = torch.zeros(1, 1, 3)
    screen = project_weak_perspective(points, torch.tensor([[4.0, 0.25, -0.25]]), 20)
    assert torch.allclose(screen[0, 0, :2], torch.tensor([(1.0 + 1.0) * 10.0, (1.0 + 1.0) * 10.0]))


def test_renders_have_the_documented_shapes_and_ranges():
    mesh = sphere_mesh()
    renders = Renderer(image_size=32)(mesh, cameras())
    assert renders.shaded.shape == (2, 1, 32, 32) and renders.albedo_shaded.shape == (2, 3, 32, 32)
    assert renders.mask.shape == (2, 1, 32, 32) and renders.normals.shape == (2, 3, 32, 32)
    assert renders.depth.shape == (2, 1, 32, 32)
    assert renders.landmarks2d.shape == (2, 68, 2) and renders.now_landmarks2d.shape == (2, 7, 2)
    inside = renders.mask.bool()
    assert 0.3 < renders.mask.mean() < 0.7
    assert renders.shaded.min() >= 0 and renders.shaded.max() <= 1
    assert torch.allclose(renders.normals.norm(dim=1, keepdim=True)[inside], torch.ones(1), atol=1e-4)
    assert (renders.normals[:, 2:3][inside] > -1e-3).all()  # back faces are culled
    assert (renders.depth[~inside] == 0).all() and (renders.depth[inside] > 0).all()
    assert torch.allclose(renders.albedo_shaded[inside.expand(-1, 3, -1, -1)], torch.tensor(0.7), atol=1e-5)


def test_landmarks_are_the_projected_3d_landmarks():
    mesh = sphere_mesh()
    camera = torch.tensor([[7.0, 0.01, -0.02], [9.0, 0.0, 0.03]])
    renders = Renderer(image_size=(30, 40))(mesh, camera)
    assert torch.allclose(renders.landmarks2d, project_weak_perspective(mesh.landmarks3d, camera, (30, 40))[..., :2])
    assert renders.shaded.shape[-2:] == (30, 40)


def test_the_grey_light_follows_the_light_direction_per_sample():
    mesh = sphere_mesh()
    renderer = Renderer(image_size=32, ambient=0.2)
    lit_from_left_and_right = torch.tensor([[-1.0, 0.0, 0.3], [1.0, 0.0, 0.3]])
    shaded = renderer(mesh, cameras(), light_direction=lit_from_left_and_right).shaded[:, 0]
    left, right = shaded[:, 12:20, 5:12].mean(dim=(1, 2)), shaded[:, 12:20, 20:27].mean(dim=(1, 2))
    assert left[0] > right[0] + 0.2 and right[1] > left[1] + 0.2


def test_backgrounds_are_constant_or_seeded_noise():
    mesh = sphere_mesh()
    constant = Renderer(image_size=24, background_value=0.5)(mesh, cameras())
    outside = ~constant.mask.bool()
    assert (constant.shaded[outside] == 0.5).all()
    noisy = Renderer(image_size=24, background="noise")
    first = noisy(mesh, cameras(), generator=torch.Generator().manual_seed(3)).shaded
    again = noisy(mesh, cameras(), generator=torch.Generator().manual_seed(3)).shaded
    other = noisy(mesh, cameras(), generator=torch.Generator().manual_seed(4)).shaded
    assert torch.equal(first, again) and not torch.equal(first[outside], other[outside])
    assert first[outside].std() > 0.2
    assert torch.equal(first[~outside], constant.shaded[~outside])


def test_sh_light_and_albedo_colour_the_albedo_render():
    mesh = sphere_mesh()
    albedo = torch.zeros_like(mesh.vertices)
    albedo[..., 0] = 1.0  # red
    light = torch.zeros(2, 9, 3)
    light[:, 0] = 0.5
    light[1, 3] = 0.3  # second sample also lit from the front (+Z)
    renders = Renderer(image_size=24)(mesh, cameras(), albedo=albedo, light=light)
    centre = renders.albedo_shaded[:, :, 10:14, 10:14].mean(dim=(2, 3))
    assert torch.allclose(centre[0], torch.tensor([0.5, 0.0, 0.0]), atol=1e-4)
    assert centre[1, 0] > 0.8 and centre[1, 1:].abs().max() < 1e-6


@pytest.mark.parametrize("bad", [dict(backend="vulkan"), dict(background="checkerboard"), dict(image_size=0)])
def test_bad_settings_raise_value_errors(bad):
    with pytest.raises(ValueError):
        Renderer(**bad)


def test_shading_gradients_wrt_vertices_match_finite_differences():
    torch.manual_seed(0)
    mesh = sphere_mesh(level=1, batch=1, dtype=torch.float64)
    renderer = Renderer(image_size=10, light_direction=(0.3, 0.4, 1.0))
    light = torch.zeros(1, 9, 3, dtype=torch.float64)
    light[:, 0], light[:, 3], light[:, 1, 0] = 0.6, 0.3, 0.2
    camera = cameras(1, torch.float64)
    albedo = torch.rand(1, mesh.vertices.shape[1], 3, dtype=torch.float64)

    def render(vertices):
        renders = renderer(FaceMesh(vertices, mesh.faces, vertices[:, :3], vertices[:, :3]), camera,
                           albedo=albedo, light=light)
        return renders.shaded, renders.albedo_shaded, renders.depth

    vertices = (mesh.vertices * 1.01).requires_grad_(True)
    assert torch.autograd.gradcheck(render, (vertices,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_optimising_vertex_offsets_moves_the_shading_towards_a_target():
    torch.manual_seed(0)
    mesh = sphere_mesh(level=3, batch=1)
    renderer = Renderer(image_size=32, light_direction=(0.5, 0.5, 1.0))
    bump = torch.exp(-((mesh.vertices[..., :2] - 0.03) ** 2).sum(-1, keepdim=True) / 0.002)
    target_verts = mesh.vertices * (1.0 + 0.25 * bump)  # a bulge inside the silhouette
    target = renderer(FaceMesh(target_verts, mesh.faces, mesh.landmarks3d, mesh.now_landmarks3d), cameras(1)).shaded
    offsets = torch.zeros_like(mesh.vertices, requires_grad=True)
    optimiser = torch.optim.Adam([offsets], lr=1e-3)
    losses = []
    for _ in range(25):
        renders = renderer(FaceMesh(mesh.vertices + offsets, mesh.faces, mesh.landmarks3d, mesh.now_landmarks3d),
                           cameras(1))
        loss = (renders.shaded - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "pytorch3d"])
def test_the_renderer_runs_on_cuda_and_matches_cpu(backend):
    mesh = sphere_mesh()
    cpu = Renderer(image_size=32, backend="torch")(mesh, cameras())
    vertices = mesh.vertices.to("cuda").requires_grad_(True)
    gpu_mesh = FaceMesh(vertices, mesh.faces.to("cuda"), mesh.landmarks3d.to("cuda"), mesh.now_landmarks3d.to("cuda"))
    gpu = Renderer(image_size=32, backend=backend)(gpu_mesh, cameras().to("cuda"))
    assert gpu.shaded.device.type == "cuda"
    assert (gpu.shaded.cpu() - cpu.shaded).abs().gt(1e-3).float().mean() < 0.01
    gpu.shaded.sum().backward()
    assert torch.isfinite(vertices.grad).all()
