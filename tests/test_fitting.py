"""Optimisation-based fitting: stages, closed-form camera, per-sample losses."""
import pytest
import torch
from pytorch3d.ops import corresponding_points_alignment

from regressor.face_model import build_face_model
from regressor.fitting import camera_from_landmarks, default_stages, fit_images
from regressor.fitting_config import FitStage
from regressor.losses import LossStack
from regressor.render import Renderer

SIZE = 48


@pytest.fixture(scope="module")
def face_model():
    return build_face_model(n_shape=20, n_expression=10)


def _targets(face_model, batch_size, seed=0):
    """Model-only targets: images are albedo x SH renders of known parameters (no effects outside the model)."""
    g = torch.Generator().manual_seed(seed)
    truth = face_model.zero_params(batch_size)
    truth.shape = torch.randn(batch_size, 20, generator=g)
    truth.expression = 0.5 * torch.randn(batch_size, 10, generator=g)
    truth.global_pose[:, 1] = 0.4 * torch.rand(batch_size, generator=g) - 0.2
    truth.albedo = 0.5 * torch.randn(batch_size, face_model.n_albedo, generator=g)
    renderer = Renderer(SIZE)
    with torch.no_grad():
        mesh = face_model(truth)
        renders = renderer(mesh, truth.camera, albedo=face_model.albedo(truth.albedo), light=truth.light)
    return truth, mesh, renders.albedo_shaded, renders.landmarks2d


def _errors_mm(predicted, truth):
    """Mean vertex error in mm: as is, and after a similarity Procrustes on all vertices."""
    raw = (predicted - truth).norm(dim=-1).mean() * 1000
    t = corresponding_points_alignment(predicted, truth, estimate_scale=True)
    aligned = t.s[:, None, None] * torch.bmm(predicted, t.R) + t.T[:, None]
    return float(raw), float((aligned - truth).norm(dim=-1).mean() * 1000)


def _stack():
    return LossStack([{"name": "landmarks", "weight": 1.0}, {"name": "photometric", "weight": 1.0},
                      {"name": "regularizers", "weight": 1.0, "shape": 1e-3, "expression": 1e-3}])


def test_camera_from_landmarks_recovers_a_known_camera(face_model):
    params = face_model.zero_params(2)
    params.camera = torch.tensor([[7.0, 0.01, -0.02], [9.0, -0.015, 0.005]])
    mesh = face_model(params)
    renders = Renderer(SIZE)(mesh, params.camera)
    found = camera_from_landmarks(mesh.landmarks3d, renders.landmarks2d, torch.ones(2, 68), SIZE)
    assert torch.allclose(found, params.camera, atol=1e-4)


def test_fitting_a_model_only_sample_reaches_4mm_from_the_mean_face(face_model):
    torch.manual_seed(0)
    truth, mesh, images, landmarks = _targets(face_model, 1, seed=3)
    start_error, start_aligned = _errors_mm(face_model(face_model.zero_params(1)).vertices, mesh.vertices)
    result = fit_images(images, landmarks, _stack(), face_model, Renderer(SIZE), stages=default_stages(90), progress=False)
    error, aligned = _errors_mm(result.mesh.vertices, mesh.vertices)
    # stated threshold: mean vertex error (model space, 48 px images) below 4 mm and at most half of the
    # mean face's; the shape alone (after similarity alignment) closer to the truth than the mean face
    assert error < 4.0, f"fitted mean vertex error {error:.2f} mm (from {start_error:.2f} mm)"
    assert error < start_error / 2
    assert aligned < start_aligned, f"aligned error {aligned:.2f} mm, mean face {start_aligned:.2f} mm"
    # the landmark term falls over the geometric stages (later stages add terms, so the total may rise)
    assert result.history["landmarks"][result.stage_starts["appearance"] - 1] < result.history["landmarks"][0]


def test_batched_fitting_equals_fitting_each_image_alone(face_model):
    _, _, images, landmarks = _targets(face_model, 4, seed=1)
    stages = [FitStage("rigid", 4, ["global_pose", "camera"], {"landmarks": 1.0}),
              FitStage("all", 6, ["shape", "expression", "camera", "albedo", "light"],
                       {"landmarks": 1.0, "photometric": 1.0, "regularizers": 1.0})]
    renderer = Renderer(SIZE)
    batched = fit_images(images, landmarks, _stack(), face_model, renderer, stages=stages, progress=False)
    for i in (0, 3):
        alone = fit_images(images[i : i + 1], landmarks[i : i + 1], _stack(), face_model, renderer, stages=stages,
                           progress=False)
        assert torch.allclose(batched.params.shape[i], alone.params.shape[0], atol=1e-4)
        assert torch.allclose(batched.mesh.vertices[i], alone.mesh.vertices[0], atol=1e-6)


def test_stage_weights_switch_terms_and_are_restored(face_model):
    _, _, images, landmarks = _targets(face_model, 1)
    stack = _stack()
    stages = [FitStage("landmarks only", 3, ["camera"], {"landmarks": 1.0})]
    result = fit_images(images, landmarks, stack, face_model, Renderer(SIZE), stages=stages, progress=False)
    assert all(v == 0.0 for v in result.history["photometric"])
    assert stack.weights == {"landmarks": 1.0, "photometric": 1.0, "regularizers": 1.0}


@pytest.mark.parametrize("bad", ["nan_landmarks", "wrong_count", "not_square"])
def test_bad_input_is_refused_with_a_clear_error(face_model, bad):
    images, landmarks = torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 68, 2) * SIZE
    if bad == "nan_landmarks":
        landmarks[0, 5, 0] = float("nan")
        match = "NaN"
    elif bad == "wrong_count":
        landmarks = landmarks[:, :67]
        match = "68, 2"
    else:
        images = torch.rand(1, 3, SIZE, SIZE + 2)
        match = "S, S"
    with pytest.raises(ValueError, match=match):
        fit_images(images, landmarks, _stack(), face_model, Renderer(SIZE), progress=False)


def test_unknown_parameter_group_is_refused():
    with pytest.raises(ValueError, match="unknown parameter groups"):
        FitStage("x", 1, ["nose"], {})
