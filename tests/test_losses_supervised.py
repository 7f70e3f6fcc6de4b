"""Supervised terms: shape_vertices (pose-free surface error) and pose_params."""
import pytest
import torch

from regressor.face_model import build_face_model
from regressor.losses import LossStack
from regressor.pipeline import build_pipeline
from regressor.types import FaceBatch, FaceParams, LossInputs


@pytest.fixture(scope="module")
def face_model():
    return build_face_model(n_shape=20, n_expression=10, n_albedo=5)


def truth(face_model, batch=3, seed=0) -> FaceParams:
    g = torch.Generator().manual_seed(seed)
    params = face_model.zero_params(batch)
    params.shape = torch.randn(batch, 20, generator=g)
    params.expression = torch.randn(batch, 10, generator=g) * 0.5
    params.global_pose = torch.randn(batch, 3, generator=g) * 0.2
    params.jaw_pose[:, 0] = 0.1
    params.camera = torch.tensor([[8.0, 0.01, -0.02]]).repeat(batch, 1)
    return params


def inputs_for(face_model, predicted: FaceParams, target: FaceParams) -> LossInputs:
    batch = FaceBatch(image=torch.zeros(predicted.batch_size, 3, 8, 8), landmarks=torch.zeros(predicted.batch_size, 68, 2),
                      landmarks_valid=torch.ones(predicted.batch_size, 68), params=target)
    mesh = face_model(predicted)
    return LossInputs(batch=batch, params=predicted, mesh=mesh, renders=None)


def stack(face_model, *terms):
    loss = LossStack([{"name": t, "weight": 1.0} for t in terms])
    loss.bind_face_model(face_model)
    return loss


def test_shape_vertices_is_zero_at_the_truth_and_ignores_head_pose(face_model):
    target = truth(face_model)
    loss = stack(face_model, "shape_vertices")
    assert float(loss(inputs_for(face_model, target.clone(), target))["total"]) == pytest.approx(0.0, abs=1e-6)
    rotated = target.clone()
    rotated.global_pose = rotated.global_pose + 0.5
    rotated.camera = rotated.camera * 1.3
    assert float(loss(inputs_for(face_model, rotated, target))["total"]) == pytest.approx(0.0, abs=1e-6)


def test_shape_vertices_weights_components_by_how_far_they_move_the_face(face_model):
    target = truth(face_model)
    loss = stack(face_model, "shape_vertices")
    errors = []
    for component in (0, 19):
        wrong = target.clone()
        wrong.shape[:, component] += 1.0
        errors.append(float(loss(inputs_for(face_model, wrong, target))["total"]))
    assert errors[0] > 5 * errors[1] > 0  # the leading component moves the face far more (mm)


def test_shape_vertices_gradient_reaches_shape_not_pose(face_model):
    target = truth(face_model)
    predicted = target.clone()
    predicted.shape = (predicted.shape + 0.3).requires_grad_(True)
    predicted.global_pose = predicted.global_pose.clone().requires_grad_(True)
    stack(face_model, "shape_vertices")(inputs_for(face_model, predicted, target))["total"].backward()
    assert predicted.shape.grad.abs().sum() > 0
    assert predicted.global_pose.grad is None or predicted.global_pose.grad.abs().sum() == 0


def test_supervised_terms_name_missing_ground_truth(face_model):
    target = truth(face_model)
    inputs = inputs_for(face_model, target, target)
    inputs.batch.params = None
    for term in ("shape_vertices", "pose_params"):
        with pytest.raises(ValueError, match="needs ground-truth parameters"):
            stack(face_model, term)(inputs)


def test_pose_params_zero_at_truth_and_grows_with_pose_and_camera_error(face_model):
    target = truth(face_model)
    loss = stack(face_model, "pose_params")
    assert float(loss(inputs_for(face_model, target.clone(), target))["total"]) == pytest.approx(0.0, abs=1e-6)
    turned, scaled = target.clone(), target.clone()
    turned.global_pose[:, 1] += 0.1
    scaled.camera[:, 0] *= 1.1
    assert float(loss(inputs_for(face_model, turned, target))["total"]) == pytest.approx(10 * 0.1 / 3, rel=1e-4)
    assert float(loss(inputs_for(face_model, scaled, target))["total"]) == pytest.approx(10 * torch.log(torch.tensor(1.1)).item(), rel=1e-4)


def test_training_skips_rasterisation_only_when_no_term_reads_pixels():
    assert not LossStack([{"name": "landmarks"}, {"name": "pose_params"}, {"name": "regularizers"}]).needs_images(0)
    assert LossStack([{"name": "landmarks"}, {"name": "photometric"}]).needs_images(0)
    pipeline = build_pipeline(backbone="resnet10t", n_shape=20, n_expression=10, n_albedo=5, image_size=32,
                              encoder={"neck": "spatial", "bf16": True})
    images = torch.rand(2, 3, 32, 32)
    full, light = pipeline(images), pipeline(images, render_images=False)
    assert torch.allclose(full.renders.landmarks2d, light.renders.landmarks2d)
    assert light.renders.shaded.numel() == 0 and full.renders.shaded.shape == (2, 1, 32, 32)


def test_spatial_encoder_starts_at_the_mean_face():
    pipeline = build_pipeline(backbone="resnet10t", n_shape=20, n_expression=10, n_albedo=5, image_size=32,
                              encoder={"neck": "spatial"})
    params = pipeline.encoder(torch.rand(2, 3, 32, 32))
    zeros = FaceParams.zeros(2, 20, 10, 5)
    for name, value in params.items():
        assert torch.allclose(value, getattr(zeros, name)), name
