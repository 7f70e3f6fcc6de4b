"""The candidate-triangle point-to-surface distance equals pytorch3d's brute force."""
import torch
from pytorch3d.loss.point_mesh_distance import point_face_distance
from pytorch3d.utils import ico_sphere

from regressor.evaluation.now import nearest_triangle_candidates, scan_to_mesh_distance


def brute_force(points, vertices, faces):
    first = torch.zeros(1, dtype=torch.long)
    return point_face_distance(points.float(), first, vertices[faces].float(), first, points.shape[0]).sqrt()


def bumpy_sphere():
    mesh = ico_sphere(3)
    vertices = mesh.verts_packed() * 0.1
    torch.manual_seed(0)
    vertices = vertices * (1 + 0.05 * torch.randn(vertices.shape[0], 1))
    return vertices, mesh.faces_packed()


def test_certified_candidates_match_brute_force_on_and_off_the_surface():
    vertices, faces = bumpy_sphere()
    points = torch.cat([vertices * s for s in (0.8, 1.0, 1.3)]) + 0.002 * torch.randn(3 * vertices.shape[0], 3)
    fast = scan_to_mesh_distance(points, vertices, faces)
    assert torch.allclose(fast, brute_force(points, vertices, faces), atol=1e-6)


def test_few_candidates_fall_back_to_brute_force_where_not_certified():
    vertices, faces = bumpy_sphere()
    points = 0.5 * torch.randn(200, 3)  # far from the mesh: the nearest few centroids certify nothing
    index, bound = nearest_triangle_candidates(points, vertices[faces], k=2)
    assert index.shape == (200, 2) and bound.shape == (200,)
    assert torch.allclose(scan_to_mesh_distance(points, vertices, faces), brute_force(points, vertices, faces), atol=1e-6)


def test_no_triangle_outside_the_candidates_is_closer_than_the_bound():
    vertices, faces = bumpy_sphere()
    points = 0.12 * torch.randn(100, 3)
    index, bound = nearest_triangle_candidates(points, vertices[faces], k=8)
    for p in range(100):
        outside = torch.ones(faces.shape[0], dtype=torch.bool)
        outside[index[p]] = False
        nearest_outside = brute_force(points[p:p + 1], vertices, faces[outside])
        assert nearest_outside.item() >= bound[p].item() - 1e-6


def test_distance_is_differentiable_with_a_fixed_candidate_set():
    vertices, faces = bumpy_sphere()
    points = vertices[:50] * 1.1
    moved = vertices.clone().requires_grad_(True)
    index, _ = nearest_triangle_candidates(points, vertices[faces], k=16)
    scan_to_mesh_distance(points, moved, faces, smoothing=1e-12, candidates=index).mean().backward()
    assert torch.isfinite(moved.grad).all() and moved.grad.abs().sum() > 0
