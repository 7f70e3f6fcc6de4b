"""Fitting internals: invisible landmarks, resolution, the frozen-pose perceptual stage."""
import pytest
import torch

from regressor.models.critic import ShapeCritic
from regressor.face_model import build_face_model
from regressor.fitting import default_stages, fit_images
from regressor.fitting_config import FitStage, load_config
from regressor.losses import LossStack
from regressor.losses.perceptual import PerceptualShapeLoss
from regressor.render import Renderer

SIZE = 32


@pytest.fixture(scope="module")
def face_model():
    return build_face_model(n_shape=10, n_expression=5)


def _target(face_model, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = face_model.zero_params(1)
    truth.shape = torch.randn(1, 10, generator=g)
    renders = Renderer(SIZE)(face_model(truth), truth.camera)
    return renders.albedo_shaded, renders.landmarks2d


def _stack(critic=None):
    terms = [{"name": "landmarks", "weight": 1.0}, {"name": "regularizers", "weight": 1.0}]
    stack = LossStack(terms)
    if critic is not None:
        stack = LossStack(terms + [{"name": "perceptual_shape", "weight": 1.0, "critic": critic}])
    return stack


def _tiny_critic(size):
    torch.manual_seed(0)
    return ShapeCritic(backbone="resnet10t", image_size=size,
                       backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8})


def test_an_invisible_landmark_is_ignored_whatever_its_coordinates(face_model):
    images, landmarks = _target(face_model)
    valid = torch.ones(1, 68)
    valid[0, [3, 40]] = 0
    stages = [FitStage("geometry", 5, ["shape", "camera", "global_pose"], {"landmarks": 1.0, "regularizers": 1.0})]
    runs = []
    for filler in (float("nan"), 1e4):
        moved = landmarks.clone()
        moved[0, [3, 40]] = filler
        runs.append(fit_images(images, moved, _stack(), face_model, Renderer(SIZE), stages=stages,
                               landmarks_valid=valid, progress=False))
    assert torch.isfinite(runs[0].params.shape).all()
    assert torch.equal(runs[0].params.shape, runs[1].params.shape)


def test_nan_at_a_point_marked_valid_is_refused(face_model):
    images, landmarks = _target(face_model)
    landmarks[0, 3] = float("nan")
    with pytest.raises(ValueError, match="marked valid"):
        fit_images(images, landmarks, _stack(), face_model, Renderer(SIZE), landmarks_valid=torch.ones(1, 68),
                   progress=False)


def test_a_landmark_only_stage_skips_the_rasterizer_with_the_same_fit(face_model, monkeypatch):
    images, landmarks = _target(face_model)
    stages = [FitStage("geometry", 3, ["shape", "camera"], {"landmarks": 1.0, "regularizers": 1.0})]
    fast = fit_images(images, landmarks, _stack(), face_model, Renderer(SIZE), stages=stages, progress=False)
    monkeypatch.setattr("regressor.fitting._needs_pixels", lambda stage, weights: True)
    slow = fit_images(images, landmarks, _stack(), face_model, Renderer(SIZE), stages=stages, progress=False)
    assert torch.allclose(fast.params.shape, slow.params.shape, atol=1e-6)
    assert fast.history["total"] == pytest.approx(slow.history["total"], rel=1e-5)


def test_the_perceptual_stage_leaves_global_pose_and_camera_where_the_landmarks_put_them(face_model):
    images, landmarks = _target(face_model)
    init = face_model.zero_params(1)
    init.global_pose[:, 1] = 0.1
    init.camera = torch.tensor([[8.0, 0.01, -0.01]])
    stage = default_stages(40)[-1]
    assert stage.name == "perceptual" and not {"global_pose", "camera"} & set(stage.optimize)
    stage.steps = 3
    result = fit_images(images, landmarks, _stack(_tiny_critic(SIZE)), face_model, Renderer(SIZE), init=init,
                        stages=[stage], progress=False)
    assert torch.equal(result.params.global_pose, init.global_pose)
    assert torch.allclose(result.params.camera, init.camera, rtol=1e-6)  # exp(log(s)) round trip
    assert not torch.equal(result.params.shape, init.shape)
    assert max(result.history["perceptual_shape"]) != 0.0
    free = default_stages(40, freeze_rigid_in_perceptual=False)[-1]
    assert {"global_pose", "camera"} <= set(free.optimize)


@pytest.mark.parametrize("config", ["default", "default_224"])
def test_shipped_fitting_configs_freeze_pose_and_camera_in_the_perceptual_stage(config):
    content = load_config(f"configs/fitting/{config}.yaml")  # effective: `base` resolved
    perceptual = [s for s in content["stages"] if s["weights"].get("perceptual_shape")]
    assert perceptual and all(not {"global_pose", "camera"} & set(s["optimize"]) for s in perceptual)
    assert content["image_size"] == (128 if config == "default" else 224)


def test_the_critic_scores_an_area_resampled_copy_at_its_own_resolution(monkeypatch):
    critic = _tiny_critic(16)
    seen = []
    original = critic.forward
    monkeypatch.setattr(critic, "forward", lambda image, shaded: seen.append((image.shape, shaded.shape))
                        or original(image, shaded))
    term = PerceptualShapeLoss(critic=critic)
    shaded = torch.rand(2, 1, 64, 64, requires_grad=True)
    term.score(torch.rand(2, 3, 64, 64), shaded).sum().backward()
    assert seen == [(torch.Size([2, 3, 16, 16]), torch.Size([2, 1, 16, 16]))]
    # area resampling: every full-resolution pixel receives gradient (bilinear 4x would skip most)
    assert (shaded.grad != 0).float().mean() > 0.99
