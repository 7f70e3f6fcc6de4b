"""Specification of the synthetic face generator (small images, few samples)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from regressor.synthetic.sampling import fit_sh_light, lambert_irradiance, sample_lighting, _fibonacci_directions
from regressor.synthetic.generator import SyntheticFaceGenerator, _visible
from regressor.synthetic.config import SyntheticConfig
from regressor.face_model import build_face_model
from regressor.render import Renderer
from regressor.render.shading import sh_basis
from regressor.types import FaceMesh

SIZE = 48
SEEDS = [11, 12, 13, 14]


@pytest.fixture(scope="module")
def face_model():
    torch.manual_seed(0)
    return build_face_model()


@pytest.fixture(scope="module")
def full(face_model):
    return SyntheticFaceGenerator(face_model, SIZE, SyntheticConfig())


@pytest.fixture(scope="module")
def full_batch(full):
    return full.generate(SEEDS)


@pytest.fixture(scope="module")
def model_only(face_model):
    return SyntheticFaceGenerator(face_model, SIZE, SyntheticConfig.model_only())


def test_batch_has_the_documented_shapes(full_batch, face_model):
    b, v = len(SEEDS), face_model.num_vertices
    assert full_batch.image.shape == (b, 3, SIZE, SIZE)
    assert full_batch.landmarks.shape == (b, 68, 2) and full_batch.landmarks_valid.shape == (b, 68)
    assert full_batch.now_landmarks.shape == (b, 7, 2) and full_batch.mask.shape == (b, 1, SIZE, SIZE)
    assert full_batch.vertices.shape == (b, v, 3) and full_batch.displacement.shape == (b, v, 3)
    assert full_batch.params.shape.shape == (b, face_model.n_shape)
    assert full_batch.params.expression.shape == (b, face_model.n_expression)
    assert full_batch.seeds.tolist() == SEEDS
    assert 0.0 <= float(full_batch.image.min()) and float(full_batch.image.max()) <= 1.0


def test_same_seed_gives_the_same_sample(full, full_batch):
    again = full.generate(SEEDS)
    assert torch.equal(again.image, full_batch.image)
    assert torch.equal(again.vertices, full_batch.vertices)


def test_different_seeds_give_different_faces_and_images(full_batch):
    images, shapes = full_batch.image, full_batch.params.shape
    for i in range(len(SEEDS)):
        for j in range(i + 1, len(SEEDS)):
            assert (images[i] - images[j]).abs().mean() > 0.02
            assert not torch.allclose(shapes[i], shapes[j])


def test_batched_generation_equals_one_by_one(full, full_batch):
    for k in (0, 3):
        single = full.generate([SEEDS[k]])
        # JPEG can turn a 1e-7 difference at a rounding edge into a one-level change of an 8x8 block
        difference = (single.image[0] - full_batch.image[k]).abs()
        assert (difference < 2e-3).float().mean() > 0.995 and difference.max() < 0.1
        torch.testing.assert_close(single.vertices[0], full_batch.vertices[k], atol=1e-6, rtol=0)
        torch.testing.assert_close(single.landmarks[0], full_batch.landmarks[k], atol=1e-4, rtol=0)


def test_visible_landmarks_land_on_the_rendered_face(full):
    batch = full.generate(list(range(100, 108)))
    col = batch.landmarks[..., 0].floor().long().clamp(0, SIZE - 1)
    row = batch.landmarks[..., 1].floor().long().clamp(0, SIZE - 1)
    on_face = batch.mask[torch.arange(8)[:, None], 0, row, col]
    visible = batch.landmarks_valid > 0.5
    assert visible.float().mean() > 0.7
    assert on_face[visible].float().mean() >= 0.95


def test_landmarks_behind_the_turned_head_are_marked_hidden(model_only):
    config = SyntheticConfig(yaw_max_deg=90.0, pitch_max_deg=0.0, roll_max_deg=0.0, neck_std_deg=0.0)
    batch = model_only.with_config(config, 48).generate(list(range(200, 208)))
    yaw = batch.params.global_pose[:, 1]  # pure yaw: axis-angle along +Y
    profile, frontal = yaw.abs() > 1.2, yaw.abs() < 0.4
    assert profile.any() and frontal.any()
    assert batch.landmarks_valid[frontal].mean() > 0.9
    # turned towards +X (the subject's left goes away): the subject's left eye (42-47) hides
    far_eye = torch.where(yaw[:, None] > 0, batch.landmarks_valid[:, 42:48], batch.landmarks_valid[:, 36:42])
    assert far_eye[profile].mean() < 0.5


def test_visibility_is_a_depth_test_against_the_z_buffer():
    zbuf = torch.full((1, 8, 8), -1.0)
    zbuf[0, 2:6, 2:6] = 10.0  # a square surface at depth 10 m
    points = torch.tensor([[[4.0, 4.0, 9.99], [4.0, 4.0, 10.05], [0.5, 0.5, 50.0], [2.2, 4.0, 10.05]]])
    assert _visible(points, zbuf).tolist() == [[1.0, 0.0, 1.0, 1.0]]  # last: beside the silhouette


def test_batched_generation_equals_one_by_one_without_jpeg(model_only):
    batch = model_only.generate(SEEDS)
    single = model_only.generate([SEEDS[2]])
    torch.testing.assert_close(single.image[0], batch.image[2], atol=1e-4, rtol=0)


def test_model_only_images_are_exactly_albedo_times_sh(face_model, model_only):
    batch = model_only.generate(SEEDS)
    mesh = face_model(batch.params)
    assert torch.equal(mesh.vertices, batch.vertices)
    renders = Renderer(image_size=SIZE, backend="torch")(
        FaceMesh(batch.vertices, mesh.faces, mesh.landmarks3d, mesh.now_landmarks3d), batch.params.camera,
        albedo=face_model.albedo(batch.params.albedo), light=batch.params.light,
    )
    torch.testing.assert_close(batch.mask, renders.mask)
    torch.testing.assert_close(batch.image, renders.albedo_shaded.clamp(0, 1), atol=1e-4, rtol=0)


def test_switching_effects_off_keeps_the_same_face(full_batch, model_only):
    plain = model_only.generate(SEEDS)
    for name in ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "albedo"):
        torch.testing.assert_close(getattr(plain.params, name), getattr(full_batch.params, name))


@pytest.mark.parametrize("switch", SyntheticConfig.OUTSIDE_MODEL_SWITCHES)
def test_every_effect_outside_the_model_changes_the_image(model_only, switch):
    needs = {"shadows": {"multi_light": True}}.get(switch, {})
    base = SyntheticConfig.model_only(jaw_open_probability=1.0, **needs)
    seeds = [300, 301]
    size = 128 if switch == "blur" else SIZE  # blur scales with the image: sub-pixel at 48 px
    off = model_only.with_config(base, size).generate(seeds)
    on = model_only.with_config(dataclasses.replace(base, **{switch: True}), size).generate(seeds)
    assert (on.image - off.image).abs().amax() > 0.02, f"{switch} has no visible effect"


def test_extra_geometry_is_a_smooth_1_to_3_mm_displacement(full_batch, model_only):
    peak_mm = full_batch.displacement.norm(dim=-1).amax(-1) * 1000
    assert ((peak_mm > 0.99) & (peak_mm < 3.01)).all(), peak_mm
    assert torch.equal(model_only.generate(SEEDS[:1]).displacement, torch.zeros_like(full_batch.displacement[:1]))


def test_ground_truth_light_is_the_best_sh_fit_of_the_scene_lights():
    lighting = sample_lighting(list(range(8)), SyntheticConfig())
    light = fit_sh_light(lighting)
    normals = _fibonacci_directions(500).float()
    normals = normals[normals[:, 2] > 0.2]
    target = lambert_irradiance(normals[None].expand(8, -1, -1), lighting)
    basis = sh_basis(normals.T[None, :, :, None])[0, :, :, 0].T
    fitted = torch.einsum("nk,bkc->bnc", basis, light)
    relative = (fitted - target).norm() / target.norm()
    assert relative < 0.08
    worse = torch.einsum("nk,bkc->bnc", basis, light * torch.tensor([1.0] + [0.8] * 8)[None, :, None])
    assert (worse - target).norm() > (fitted - target).norm()


def test_config_round_trips_through_plain_dicts_and_rejects_unknown_keys():
    config = SyntheticConfig(yaw_max_deg=30.0, face_fraction=[0.5, 0.6])
    assert config.face_fraction == (0.5, 0.6)
    assert SyntheticConfig.from_dict(config.to_dict()) == config
    with pytest.raises(KeyError, match="yaw_max"):
        SyntheticConfig.from_dict({"yaw_max": 3})
    with pytest.raises(ValueError, match="background"):
        SyntheticConfig(background="sky")
    off = SyntheticConfig.model_only()
    assert not any(getattr(off, name) for name in SyntheticConfig.OUTSIDE_MODEL_SWITCHES)
    assert dataclasses.replace(off, yaw_max_deg=10.0).extra_geometry is False


def test_a_shape_scale_range_scales_each_identity_and_leaves_everything_else():
    from regressor.synthetic.sampling import sample_face_params

    seeds = list(range(40))
    plain = sample_face_params(seeds, SyntheticConfig(), 20, 10, 10)
    scaled = sample_face_params(seeds, SyntheticConfig(shape_scale_range=[0.2, 1.5]), 20, 10, 10)
    ratio = scaled.shape.norm(dim=1) / plain.shape.norm(dim=1)
    assert torch.allclose(scaled.shape / ratio[:, None], plain.shape, atol=1e-5)  # the same direction per face
    assert 0.2 <= ratio.min() and ratio.max() < 1.5 and ratio.max() - ratio.min() > 0.8
    for name in ("expression", "global_pose", "jaw_pose", "albedo"):
        assert torch.equal(getattr(scaled, name), getattr(plain, name)), name
    with pytest.raises(ValueError, match="shape_scale_range"):
        SyntheticConfig(shape_scale_range=(1.0, 0.5))
