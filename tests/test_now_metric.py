"""The NoW-style metric against hand-computed cases."""
import math

import pytest
import torch
from pytorch3d.transforms import axis_angle_to_matrix
from pytorch3d.utils import ico_sphere

from regressor.evaluation.now import (
    REGIONS, assign_regions, cumulative_error_curve, now_error, procrustes, scan_to_mesh_distance,
)
from regressor.render.shading import vertex_normals

LANDMARK_VERTICES = [3, 10, 25, 40, 55, 70, 85]


def ellipsoid(level: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = ico_sphere(level)
    vertices = mesh.verts_packed().double() * torch.tensor([0.08, 0.1, 0.06], dtype=torch.float64)
    return vertices, mesh.faces_packed()


def test_known_similarity_transform_is_recovered_exactly():
    vertices, faces = ellipsoid()
    rotation = axis_angle_to_matrix(torch.tensor([0.3, -0.5, 0.2], dtype=torch.float64))
    scale, translation = 1.7, torch.tensor([0.01, -0.02, 0.5], dtype=torch.float64)
    target = scale * vertices @ rotation + translation
    found = procrustes(vertices[LANDMARK_VERTICES], target[LANDMARK_VERTICES])
    assert found.scale.item() == pytest.approx(scale, abs=1e-9)
    assert torch.allclose(found.rotation, rotation, atol=1e-9)
    assert torch.allclose(found.translation, translation, atol=1e-9)
    result = now_error(vertices, faces, vertices[LANDMARK_VERTICES], target, target[LANDMARK_VERTICES], crop=False)
    assert result.summary()["median_mm"] < 1e-3


def test_mesh_offset_one_mm_along_normals_gives_one_mm():
    vertices, faces = ellipsoid(4)
    normals = vertex_normals(vertices[None].float(), faces)[0].double()
    offset = vertices + 0.001 * normals
    # identical landmarks -> identity Procrustes; no refinement so the offset is not scaled away
    result = now_error(offset, faces, vertices[LANDMARK_VERTICES], vertices, vertices[LANDMARK_VERTICES],
                       refine_steps=0, crop=False)
    summary = result.summary()
    assert summary["median_mm"] == pytest.approx(1.0, abs=0.02)
    assert summary["mean_mm"] == pytest.approx(1.0, abs=0.03)


def test_distance_is_to_the_surface_not_the_nearest_vertex():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    point = torch.tensor([[0.25, 0.25, 0.1]], dtype=torch.float64)
    distance = scan_to_mesh_distance(point, vertices, faces)
    assert distance.item() == pytest.approx(0.1, abs=1e-6)  # nearest vertex would be ~0.36


def test_refinement_never_makes_the_error_worse():
    vertices, faces = ellipsoid()
    torch.manual_seed(0)
    noisy = vertices + 0.002 * torch.randn_like(vertices)
    landmarks = vertices[LANDMARK_VERTICES] + 0.003 * torch.randn(7, 3, dtype=torch.float64)
    unrefined = now_error(noisy, faces, landmarks, vertices, vertices[LANDMARK_VERTICES], refine_steps=0, crop=False)
    refined = now_error(noisy, faces, landmarks, vertices, vertices[LANDMARK_VERTICES], refine_steps=40, crop=False)
    assert refined.errors_mm.mean() <= unrefined.errors_mm.mean() + 1e-6


def test_regions_cover_nose_mouth_forehead_cheeks_on_a_face_grid():
    # 7 NoW landmarks of a frontal face (metres): eyes at y=0.035, nose bottom at 0, mouth at -0.025
    lmk = torch.tensor([
        [-0.045, 0.035, 0.0], [-0.015, 0.035, 0.0], [0.015, 0.035, 0.0], [0.045, 0.035, 0.0],
        [0.0, 0.0, 0.01], [-0.025, -0.025, 0.0], [0.025, -0.025, 0.0],
    ])
    xs, ys = torch.meshgrid(torch.linspace(-0.07, 0.07, 30), torch.linspace(-0.06, 0.09, 30), indexing="xy")
    points = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(900)], dim=-1)
    labels = assign_regions(points, lmk)
    assert set(labels.unique().tolist()) >= set(range(len(REGIONS)))
    nose_tip_label = assign_regions(torch.tensor([[0.0, 0.015, 0.02]]), lmk)
    assert REGIONS[nose_tip_label.item()] == "nose"
    forehead_label = assign_regions(torch.tensor([[0.0, 0.08, 0.0]]), lmk)
    assert REGIONS[forehead_label.item()] == "forehead"


def test_cumulative_curve_is_monotone_and_reaches_one():
    thresholds, fraction = cumulative_error_curve(torch.tensor([0.5, 1.0, 2.0, 4.0]), max_mm=5.0)
    assert torch.all(fraction[1:] >= fraction[:-1])
    assert fraction[-1] == 1.0 and fraction[0] == 0.0
    assert math.isclose(float(thresholds[-1]), 5.0)


def test_procrustes_alignment_undoes_a_similarity_and_the_vertex_error_is_in_millimetres():
    from regressor.evaluation.metrics import mean_vertex_error_mm, procrustes_align, vertex_errors_mm

    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 50, 3, generator=generator) * 0.05
    rotation = axis_angle_to_matrix(torch.tensor([[0.0, 0.3, 0.1], [0.2, 0.0, 0.0]]))
    moved = 1.3 * torch.bmm(truth, rotation) + torch.tensor([0.01, 0.0, 0.02])
    assert torch.allclose(procrustes_align(moved, truth), truth, atol=1e-5)
    raw, aligned = vertex_errors_mm(moved, truth)
    assert (raw > 1.0).all() and (aligned < 1e-2).all()
    assert torch.allclose(mean_vertex_error_mm(truth + torch.tensor([0.001, 0.0, 0.0]), truth), torch.ones(2))
