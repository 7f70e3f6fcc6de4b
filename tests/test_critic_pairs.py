"""Positive / graded negative geometries for the critic (real built-in face model, no images needed)."""
from __future__ import annotations

import pytest
import torch

from regressor.critic.render_cache import RenderCache, RenderedCandidates
from regressor.critic.negatives import (
    NegativeGenerator, PerturbationConfig, aligned_to_camera, negative_types, random_light_directions, register_negative,
)
from regressor.face_model import build_face_model

NEGATIVE_TYPES = negative_types()

SEVERITIES = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.fixture(scope="module")
def face_model():
    return build_face_model()


@pytest.fixture(scope="module")
def truth(face_model):
    generator = torch.Generator().manual_seed(0)
    params = face_model.zero_params(3)
    params.shape = torch.randn(3, face_model.n_shape, generator=generator)
    params.expression = 0.8 * torch.randn(3, face_model.n_expression, generator=generator)
    params.jaw_pose[:, 0] = torch.tensor([0.0, 0.1, 0.25])
    params.global_pose[:, 1] = torch.tensor([0.0, 0.3, -0.3])
    detail = 0.001 * torch.randn(3, face_model.num_vertices, 3, generator=generator)  # geometry beyond the model
    return params, face_model(params).vertices + detail


@pytest.fixture(scope="module")
def graded(face_model, truth):
    params, vertices = truth
    types = torch.arange(len(NEGATIVE_TYPES)).repeat_interleave(len(SEVERITIES))
    severity = SEVERITIES.repeat(len(NEGATIVE_TYPES))
    negatives = NegativeGenerator(face_model)
    return negatives.build(params, vertices, types[None].repeat(3, 1), severity[None].repeat(3, 1),
                           torch.Generator().manual_seed(1))


def test_positive_is_exactly_the_true_geometry_in_the_true_camera(truth, graded):
    params, vertices = truth
    assert torch.equal(graded.vertices[:, 0], vertices)
    assert torch.equal(graded.camera[:, 0], params.camera)
    assert torch.all(graded.error_mm[:, 0] == 0) and torch.all(graded.type_index[:, 0] == -1)


@pytest.mark.parametrize("name", NEGATIVE_TYPES)
def test_every_negative_type_changes_the_geometry_or_its_view(graded, name):
    columns = 1 + NEGATIVE_TYPES.index(name) * len(SEVERITIES) + torch.arange(len(SEVERITIES))
    assert torch.all(graded.type_index[:, columns] == NEGATIVE_TYPES.index(name))
    assert torch.all(graded.error_mm[:, columns] > 0.05), graded.error_mm[:, columns]


@pytest.mark.parametrize("name", NEGATIVE_TYPES)
def test_graded_severities_give_increasing_vertex_error(graded, name):
    columns = 1 + NEGATIVE_TYPES.index(name) * len(SEVERITIES) + torch.arange(len(SEVERITIES))
    error = graded.error_mm[:, columns]
    assert torch.all(error[:, 1:] > error[:, :-1]), f"{name}: {error}"


def test_severity_one_reaches_several_millimetres_for_every_type(graded):
    worst = graded.error_mm[:, 1:].reshape(3, len(NEGATIVE_TYPES), len(SEVERITIES))[:, :, -1].mean(0)
    assert torch.all(worst > 2.0), dict(zip(NEGATIVE_TYPES, worst.tolist()))


def test_flattening_removes_depth_but_keeps_the_silhouette(truth, graded):
    _, vertices = truth
    column = 1 + NEGATIVE_TYPES.index("flatten") * len(SEVERITIES) + 2
    flat = graded.vertices[:, column]
    torch.testing.assert_close(flat[..., :2], vertices[..., :2])
    assert (flat[..., 2].std(dim=1) < vertices[..., 2].std(dim=1)).all()


def test_camera_negatives_keep_the_shape_and_move_the_view(truth, graded):
    params, vertices = truth
    column = 1 + NEGATIVE_TYPES.index("camera") * len(SEVERITIES) + 4
    torch.testing.assert_close(graded.vertices[:, column], vertices)
    assert not torch.allclose(graded.camera[:, column], params.camera)


def test_camera_alignment_is_the_identity_for_the_same_camera_and_undoes_a_shift(truth):
    params, vertices = truth
    torch.testing.assert_close(aligned_to_camera(vertices, params.camera, params.camera), vertices)
    shifted = params.camera.clone()
    shifted[:, 1] += 0.01
    moved = aligned_to_camera(vertices, shifted, params.camera)
    torch.testing.assert_close(moved[..., 0] - vertices[..., 0], torch.full_like(vertices[..., 0], 0.01))


def test_other_identity_negatives_take_shape_from_another_face(face_model, truth):
    params, vertices = truth
    negatives = NegativeGenerator(face_model, PerturbationConfig(types=("other_identity",)))
    full = negatives.build(params, vertices, torch.full((3, 1), NEGATIVE_TYPES.index("other_identity")),
                           torch.ones(3, 1), torch.Generator().manual_seed(0))
    swapped = params.clone()
    swapped.shape = params.shape.roll(1, dims=0)
    expected = face_model(swapped).vertices + (vertices - face_model(params).vertices)
    torch.testing.assert_close(full.vertices[:, 1], expected, atol=1e-6, rtol=0)


def test_random_sampling_draws_configured_types_and_is_seeded(face_model, truth):
    params, vertices = truth
    negatives = NegativeGenerator(face_model, PerturbationConfig(types=("jaw", "smooth")))
    a = negatives.sample(params, vertices, 4, torch.Generator().manual_seed(5))
    b = negatives.sample(params, vertices, 4, torch.Generator().manual_seed(5))
    allowed = {NEGATIVE_TYPES.index("jaw"), NEGATIVE_TYPES.index("smooth")}
    assert set(a.type_index[:, 1:].unique().tolist()) <= allowed
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.error_mm, b.error_mm)


def test_unknown_negative_type_is_rejected_by_name():
    with pytest.raises(ValueError, match="wrinkle"):
        PerturbationConfig(types=("identity", "wrinkle"))


def test_training_lights_are_unit_vectors_facing_the_camera():
    light = random_light_directions(256, torch.Generator().manual_seed(0))
    torch.testing.assert_close(light.norm(dim=1), torch.ones(256))
    assert (light[:, 2] > 0).all()
    assert light.std(dim=0).min() > 0.05  # randomised, not one light


def test_render_cache_replays_and_refreshes():
    cache = RenderCache(refresh_probability=0.0)
    rendered = RenderedCandidates(torch.rand(2, 3, 1, 4, 4), torch.ones(2, 3, 1, 4, 4), torch.rand(2, 3),
                                  torch.zeros(2, 3, dtype=torch.long))
    generator = torch.Generator().manual_seed(0)
    assert cache.stale([7, 8], generator) == [0, 1]
    cache.put([7, 8], rendered)
    assert cache.stale([8, 7, 9], generator) == [2]
    replay = cache.get([8], "cpu")
    torch.testing.assert_close(replay.shaded.float(), rendered.shaded[1:].half().float())
    assert RenderCache(refresh_probability=1.0).stale([1], generator) == [0]


def test_a_negative_type_name_can_be_registered_once():
    with pytest.raises(ValueError, match="negative type 'smooth' is already registered "
                                         r"\(regressor.critic.negative_types.builtin.smooth\)"):
        @register_negative("smooth", space="geometry")
        def another_smooth(truth, severity, context):
            return truth


def test_unknown_negative_types_are_refused_with_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown negative types \['wobble'\]; known: \['identity'"):
        PerturbationConfig(types=("wobble",))
