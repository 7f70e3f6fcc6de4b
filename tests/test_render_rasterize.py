"""Specification of ``regressor.render.rasterize``: both backends, conventions, bad input."""
from __future__ import annotations

import pytest
import torch

from regressor.render import project_weak_perspective, rasterize
from regressor.types import DEFAULT_CAMERA_SCALE, FaceParams

# (pitch, yaw, roll) axis-angle of the global pose and jaw opening, radians.
HEAD_POSES = [(0.0, 0.0, 0.0, 0.0), (0.0, 0.6, 0.0, 0.0), (-0.35, -0.3, 0.15, 0.25), (0.3, 0.9, 0.0, 0.1)]


def posed_head_screen(image_size: int, poses=HEAD_POSES) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in head in several poses -> ((B, V, 3) screen vertices, (F, 3) faces)."""
    from regressor.face_model import build_face_model

    model = build_face_model()
    params: FaceParams = model.zero_params(len(poses))
    pose = torch.tensor(poses, dtype=torch.float32)
    params.global_pose = pose[:, :3].clone()
    params.jaw_pose = torch.zeros_like(params.jaw_pose)
    params.jaw_pose[:, 0] = pose[:, 3]
    params.camera[:, 1] = torch.linspace(-0.02, 0.02, len(poses))
    with torch.no_grad():
        mesh = model(params)
    return project_weak_perspective(mesh.vertices, params.camera, image_size), mesh.faces


def triangle(winding=(0, 1, 2), depth: float = 5.0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """One screen-space triangle covering the middle of a ``size`` image."""
    verts = torch.tensor([[[2.2, 13.1, depth], [13.7, 12.6, depth], [7.9, 2.3, depth]]]) * (size / 16.0)
    verts[..., 2] = depth
    return verts, torch.tensor([winding])


@pytest.mark.parametrize("cull_backfaces", [False, True])
def test_torch_backend_matches_pytorch3d_on_the_head_in_several_poses(cull_backfaces):
    verts, faces = posed_head_screen(48)
    ours = rasterize(verts, faces, 48, backend="torch", cull_backfaces=cull_backfaces)
    reference = rasterize(verts, faces, 48, backend="pytorch3d", cull_backfaces=cull_backfaces)
    same_face = ours.pix_to_face == reference.pix_to_face
    assert reference.mask.float().mean() > 0.2  # the head really fills the image
    assert same_face.float().mean() >= 0.995
    both = same_face[..., 0] & ours.mask
    bary_gap = (ours.bary_coords - reference.bary_coords)[both].abs().amax(dim=-1)
    # pytorch3d works in float32 NDC, where sliver faces lose a few digits (measured: up to
    # ~3e-4 on ~0.1% of pixels); ours is checked against float64 below, so allow that 0.5%.
    assert (bary_gap <= 1e-4).float().mean() >= 0.995
    assert ((ours.zbuf - reference.zbuf)[both].abs() <= 1e-3).float().mean() >= 0.995  # depth ~10: x10 the error
    exact = rasterize(verts.double(), faces, 48, backend="torch", cull_backfaces=cull_backfaces)
    same_exact = both & (exact.pix_to_face == ours.pix_to_face)[..., 0]
    assert (ours.bary_coords.double() - exact.bary_coords)[same_exact].abs().max() <= 1e-5
    assert (ours.zbuf.double() - exact.zbuf)[same_exact].abs().max() <= 1e-4


def test_non_square_images_follow_pytorch3d_conventions():
    verts, faces = posed_head_screen(40, poses=HEAD_POSES[:2])
    verts = verts * torch.tensor([1.0, 0.6, 1.0])  # squash into a 24 x 40 (H x W) image
    ours = rasterize(verts, faces, (24, 40), backend="torch")
    reference = rasterize(verts, faces, (24, 40), backend="pytorch3d")
    assert ours.pix_to_face.shape == (2, 24, 40, 1)
    assert (ours.pix_to_face == reference.pix_to_face).float().mean() >= 0.995


def test_fragments_use_packed_face_ids_and_minus_one_background():
    verts, faces = triangle()
    verts = torch.cat([verts, verts + torch.tensor([40.0, 0.0, 0.0])])  # second copy is off-screen
    fragments = rasterize(verts, faces, 16, backend="torch")
    assert fragments.pix_to_face.dtype == torch.int64
    assert set(fragments.pix_to_face[0].unique().tolist()) == {-1, 0}
    assert (fragments.pix_to_face[1] == -1).all()
    background = ~fragments.mask
    assert (fragments.bary_coords[background] == -1).all() and (fragments.zbuf[background] == -1).all()


def test_barycentrics_reproduce_the_pixel_centres_and_depth():
    verts, faces = triangle()
    verts[0, :, 2] = torch.tensor([4.0, 5.0, 6.0])
    fragments = rasterize(verts, faces, 16, backend="torch")
    rows, cols = torch.nonzero(fragments.mask[0], as_tuple=True)
    bary = fragments.bary_coords[0, rows, cols, 0]  # (N, 3)
    assert torch.allclose(bary.sum(-1), torch.ones(len(rows)), atol=1e-5)
    assert (bary >= 0).all()
    centres = bary @ verts[0]
    assert torch.allclose(centres[:, 0], cols.float() + 0.5, atol=1e-4)
    assert torch.allclose(centres[:, 1], rows.float() + 0.5, atol=1e-4)
    assert torch.allclose(fragments.zbuf[0, rows, cols, 0], centres[:, 2], atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "pytorch3d"])
@pytest.mark.parametrize("near_first", [True, False])
def test_the_nearest_face_wins_whatever_its_order(backend, near_first):
    near, _ = triangle(depth=3.0)
    far, _ = triangle(depth=7.0)
    far = far + torch.tensor([1.0, 0.5, 0.0])
    verts = torch.cat([near, far], dim=1) if near_first else torch.cat([far, near], dim=1)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    near_face = 0 if near_first else 1
    fragments = rasterize(verts, faces, 16, backend=backend)
    overlap = fragments.mask[0] & (fragments.zbuf[0, ..., 0] < 3.5)
    assert overlap.sum() > 20
    assert (fragments.pix_to_face[0][overlap] == near_face).all()
    assert ((fragments.zbuf[0][fragments.mask[0]] - 3.0).abs() < 1e-5).sum() == overlap.sum()


@pytest.mark.parametrize("backend", ["torch", "pytorch3d"])
def test_backface_culling_drops_faces_pointing_away(backend):
    front, faces = triangle(winding=(0, 1, 2))  # counter-clockwise as the viewer sees the image
    back, back_faces = triangle(winding=(0, 2, 1))
    assert rasterize(front, faces, 16, backend=backend, cull_backfaces=True).mask.sum() > 30
    assert rasterize(back, back_faces, 16, backend=backend, cull_backfaces=True).mask.sum() == 0
    assert rasterize(back, back_faces, 16, backend=backend, cull_backfaces=False).mask.sum() > 30


def test_faces_outside_the_image_or_behind_the_camera_give_empty_fragments():
    verts, faces = triangle()
    for shift in ([-100.0, 0.0, 0.0], [0.0, 500.0, 0.0], [0.0, 0.0, -20.0]):
        fragments = rasterize(verts + torch.tensor(shift), faces, 16, backend="torch")
        assert not fragments.mask.any(), shift


def test_a_face_larger_than_the_image_covers_every_pixel():
    verts = torch.tensor([[[-100.0, -100.0, 2.0], [300.0, -100.0, 2.0], [-100.0, 300.0, 2.0]]])
    fragments = rasterize(verts, torch.tensor([[0, 1, 2]]), 16, backend="torch")
    assert fragments.mask.all()


def test_degenerate_and_non_finite_triangles_are_skipped():
    verts, _ = triangle()
    verts = torch.cat([verts, torch.tensor([[[1.0, 1.0, 5.0], [8.0, 8.0, 5.0], [15.0, 15.0, 5.0],
                                             [float("nan"), 3.0, 5.0], [float("inf"), 9.0, 1.0]]])], dim=1)
    faces = torch.tensor([[3, 4, 5], [0, 0, 0], [6, 7, 1], [0, 1, 2]])  # collinear, point, NaN/inf, valid
    fragments = rasterize(verts, faces, 16, backend="torch")
    assert set(fragments.pix_to_face.unique().tolist()) == {-1, 3}
    assert torch.isfinite(fragments.bary_coords).all()


@pytest.mark.parametrize("batch, num_verts, num_faces", [(2, 0, 0), (2, 5, 0), (0, 3, 1)])
@pytest.mark.parametrize("backend", ["torch", "pytorch3d"])
def test_empty_meshes_give_empty_fragments(batch, num_verts, num_faces, backend):
    verts = torch.rand(batch, num_verts, 3)
    faces = torch.zeros(num_faces, 3, dtype=torch.long)
    fragments = rasterize(verts, faces, (8, 12), backend=backend)
    assert fragments.pix_to_face.shape == (batch, 8, 12, 1)
    assert fragments.bary_coords.shape == (batch, 8, 12, 1, 3)
    assert not fragments.mask.any()


@pytest.mark.parametrize(
    "verts, faces, image_size, backend, message",
    [
        (torch.rand(4, 3), torch.tensor([[0, 1, 2]]), 8, "torch", "verts_screen must be"),
        (torch.rand(1, 4, 2), torch.tensor([[0, 1, 2]]), 8, "torch", "verts_screen must be"),
        (torch.randint(0, 5, (1, 4, 3)), torch.tensor([[0, 1, 2]]), 8, "torch", "floating-point"),
        (torch.rand(1, 4, 3), torch.tensor([0, 1, 2]), 8, "torch", "faces must be"),
        (torch.rand(1, 4, 3), torch.tensor([[0.0, 1.0, 2.0]]), 8, "torch", "integer"),
        (torch.rand(1, 4, 3), torch.tensor([[0, 1, 4]]), 8, "torch", "face indices"),
        (torch.rand(1, 4, 3), torch.tensor([[0, 1, 2]]), 0, "torch", "positive"),
        (torch.rand(1, 4, 3), torch.tensor([[0, 1, 2]]), (8, 8, 3), "torch", "image_size"),
        (torch.rand(1, 4, 3), torch.tensor([[0, 1, 2]]), 8, "opengl", "backend"),
    ],
)
def test_bad_input_raises_a_clear_value_error(verts, faces, image_size, backend, message):
    with pytest.raises(ValueError, match=message):
        rasterize(verts, faces, image_size, backend=backend)


def test_barycentrics_and_depth_have_exact_gradients_wrt_screen_vertices():
    torch.manual_seed(0)
    verts, faces = triangle(size=8)
    verts = verts.double()
    verts[0, :, 2] = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)
    verts.requires_grad_(True)

    def bary_and_depth(v):
        fragments = rasterize(v, faces, 8, backend="torch")
        return fragments.bary_coords, fragments.zbuf

    assert torch.autograd.gradcheck(bary_and_depth, (verts,), eps=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "pytorch3d", "auto"])
def test_cuda_backends_match_the_cpu_torch_backend(backend):
    verts, faces = posed_head_screen(48, poses=HEAD_POSES[:2])
    cpu = rasterize(verts, faces, 48, backend="torch", cull_backfaces=True)
    gpu_verts = verts.to("cuda").requires_grad_(True)
    gpu = rasterize(gpu_verts, faces.to("cuda"), 48, backend=backend, cull_backfaces=True)
    assert gpu.pix_to_face.device.type == "cuda"
    assert (gpu.pix_to_face.cpu() == cpu.pix_to_face).float().mean() >= 0.995
    gpu.zbuf[gpu.mask].sum().backward()
    assert torch.isfinite(gpu_verts.grad).all() and gpu_verts.grad.abs().sum() > 0
