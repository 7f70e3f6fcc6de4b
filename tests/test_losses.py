"""Specification of the loss registry, the LossStack and the image/landmark/prior/vertex terms."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from regressor.losses import LossStack, LossTerm, NonFiniteLossError, build_loss, register_loss, registered_losses
from regressor.losses.landmarks import LANDMARK_REGIONS
from regressor.types import FaceBatch, FaceMesh, FaceParams, LossInputs, Renders

B, S, V = 2, 16, 30


def make_inputs(seed: int = 0, step: int = 0, with_vertices: bool = True) -> LossInputs:
    """Small hand-made inputs: random image, render, landmarks and mesh (no face model needed)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    mask = torch.zeros(B, 1, S, S)
    mask[:, :, 4:12, 4:12] = 1.0
    renders = Renders(
        shaded=rand(B, 1, S, S), albedo_shaded=rand(B, 3, S, S), mask=mask, normals=rand(B, 3, S, S),
        depth=rand(B, 1, S, S), landmarks2d=rand(B, 68, 2) * S, now_landmarks2d=rand(B, 7, 2) * S,
    )
    vertices = rand(B, V, 3) * 0.1
    mesh = FaceMesh(vertices=vertices, faces=torch.zeros(1, 3, dtype=torch.long),
                    landmarks3d=rand(B, 68, 3), now_landmarks3d=rand(B, 7, 3))
    batch = FaceBatch(image=rand(B, 3, S, S), landmarks=rand(B, 68, 2) * S, landmarks_valid=torch.ones(B, 68),
                      vertices=rand(B, V, 3) * 0.1 if with_vertices else None)
    params = FaceParams.zeros(B, n_shape=10, n_expression=5, n_albedo=4)
    return LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=step)


def with_renders(inputs: LossInputs, **changes) -> LossInputs:
    renders = Renders(**{**dict(inputs.renders.items()), **changes})
    return LossInputs(batch=inputs.batch, params=inputs.params, mesh=inputs.mesh, renders=renders, step=inputs.step)


# --- registry and stack -------------------------------------------------------------------

def test_registry_knows_every_shipped_term():
    assert {"photometric", "landmarks", "regularizers", "perceptual_shape", "vertices"} <= set(registered_losses())


def test_unknown_term_name_lists_known_names():
    with pytest.raises(KeyError, match="unknown loss term 'photometrik'.*landmarks.*photometric"):
        LossStack([{"name": "photometrik", "weight": 1.0}])


def test_bad_term_kwargs_name_the_term():
    with pytest.raises(TypeError, match="loss term 'photometric'"):
        build_loss("photometric", colour="red")


def test_a_new_term_needs_only_a_registration():
    @register_loss("test_constant_one")
    class ConstantOne(LossTerm):
        def forward(self, inputs):
            return torch.ones(())

    stack = LossStack([{"name": "test_constant_one", "weight": 3.0}])
    assert stack(make_inputs())["total"].item() == pytest.approx(3.0)


def test_stack_from_yaml_reports_weighted_terms_and_total():
    config = yaml.safe_load("""
    - {name: photometric, weight: 2.0, norm: l2}
    - {name: landmarks, weight: 0.5, region_weights: {jaw: 0.1}}
    - {name: regularizers, weight: 1.0e-3}
    - {name: vertices, weight: 0.0}
    """)
    stack = LossStack(config)
    inputs = make_inputs()
    out = stack(inputs)
    assert set(out) == {"photometric", "landmarks", "regularizers", "vertices", "total"}
    photometric = build_loss("photometric", norm="l2")(inputs)
    assert out["photometric"].item() == pytest.approx(2.0 * photometric.item())
    assert out["vertices"].item() == 0.0  # weight 0: not evaluated
    parts = sum(v for k, v in out.items() if k != "total")
    assert out["total"].item() == pytest.approx(parts.item())


def test_one_term_type_twice_needs_distinct_labels():
    with pytest.raises(ValueError, match="used twice"):
        LossStack([{"name": "landmarks"}, {"name": "landmarks"}])
    stack = LossStack([{"name": "landmarks"}, {"name": "landmarks", "label": "mouth_landmarks",
                                               "region_weights": {"jaw": 0, "brows": 0, "nose": 0, "eyes": 0}}])
    assert set(stack(make_inputs())) == {"landmarks", "mouth_landmarks", "total"}


@pytest.mark.parametrize("bad, kind", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_non_finite_term_raises_naming_the_term_and_step(bad, kind):
    inputs = make_inputs(step=12)
    image = inputs.batch.image.clone()
    image[0, 0, 6, 6] = bad  # inside the rendered mask
    inputs.batch.image = image
    stack = LossStack([{"name": "landmarks"}, {"name": "photometric"}])
    with pytest.raises(NonFiniteLossError, match=f"loss term 'photometric' is {kind} at step 12") as info:
        stack(inputs)
    assert info.value.term == "photometric" and info.value.step == 12


def test_term_must_return_a_scalar():
    @register_loss("test_not_scalar")
    class NotScalar(LossTerm):
        def forward(self, inputs):
            return torch.ones(3)

    with pytest.raises(ValueError, match="'test_not_scalar' must return a scalar"):
        LossStack([{"name": "test_not_scalar"}])(make_inputs())


# --- photometric --------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_photometric_is_zero_for_a_perfect_match_inside_the_mask(norm):
    inputs = make_inputs()
    render = inputs.batch.image.clone()
    render[:, :, :2, :2] = 5.0  # outside the rendered mask: must not count
    inputs = with_renders(inputs, albedo_shaded=render)
    assert build_loss("photometric", norm=norm)(inputs).item() == 0.0


def test_photometric_l1_and_l2_values():
    inputs = make_inputs()
    inputs = with_renders(inputs, albedo_shaded=inputs.batch.image + 0.5)
    assert build_loss("photometric", norm="l1")(inputs).item() == pytest.approx(0.5)
    assert build_loss("photometric", norm="l2")(inputs).item() == pytest.approx(0.25)


def test_photometric_honours_the_batch_mask():
    inputs = make_inputs()
    render = inputs.batch.image.clone()
    render[:, :, 4:8] += 1.0  # error only in the top half of the rendered face
    inputs = with_renders(inputs, albedo_shaded=render)
    batch_mask = torch.zeros(B, 1, S, S)
    batch_mask[:, :, 8:] = 1.0  # the dataset masks out the top half (e.g. hair)
    inputs.batch.mask = batch_mask
    assert build_loss("photometric")(inputs).item() == 0.0
    assert build_loss("photometric", use_batch_mask=False)(inputs).item() > 0.4


def test_photometric_trim_leaves_out_each_images_worst_pixels():
    inputs = make_inputs()
    render = inputs.batch.image + 0.1
    render[:, :, 4:6, 4:12] += 2.0  # a specular-like outlier band: 16 of the 64 face pixels per image
    inputs = with_renders(inputs, albedo_shaded=render.clone().requires_grad_(True))
    untrimmed = build_loss("photometric")(inputs)
    trimmed = build_loss("photometric", trim=0.3)(inputs)
    assert untrimmed.item() == pytest.approx(0.1 + 2.0 * 16 / 64)
    assert trimmed.item() == pytest.approx(0.1, abs=1e-5)  # the band is gone, the rest counts
    trimmed.backward()
    assert inputs.renders.albedo_shaded.grad[:, :, 4:6, 4:12].abs().sum() == 0
    assert inputs.renders.albedo_shaded.grad[:, :, 6:12, 4:12].abs().sum() > 0


def test_photometric_rejects_a_trim_outside_0_1():
    with pytest.raises(ValueError, match="trim"):
        build_loss("photometric", trim=1.0)


def test_photometric_gradient_reaches_the_render():
    inputs = make_inputs()
    render = inputs.renders.albedo_shaded.clone().requires_grad_(True)
    build_loss("photometric")(with_renders(inputs, albedo_shaded=render)).backward()
    assert render.grad.abs().sum() > 0
    assert render.grad[:, :, :4].abs().sum() == 0  # background pixels get no gradient


# --- landmarks ----------------------------------------------------------------------------

def test_landmarks_zero_at_target_and_decrease_towards_it():
    inputs = make_inputs()
    term = build_loss("landmarks")
    target = inputs.batch.landmarks
    start = with_renders(inputs, landmarks2d=target + 4.0)
    closer = with_renders(inputs, landmarks2d=target + 2.0)
    there = with_renders(inputs, landmarks2d=target.clone())
    assert term(start) > term(closer) > term(there)
    assert term(there).item() == pytest.approx(0.0, abs=1e-5)


def test_landmarks_normalised_by_image_size():
    inputs = make_inputs()
    shifted = with_renders(inputs, landmarks2d=inputs.batch.landmarks + torch.tensor([S / 4, 0.0]))
    assert build_loss("landmarks")(shifted).item() == pytest.approx(0.25, rel=1e-4)


def test_invalid_landmarks_do_not_count_even_if_nan():
    inputs = make_inputs()
    predicted = inputs.batch.landmarks.clone()
    predicted[:, :17] += 10.0  # the jaw is far off ...
    inputs = with_renders(inputs, landmarks2d=predicted)
    inputs.batch.landmarks_valid[:, :17] = 0.0  # ... but not annotated
    inputs.batch.landmarks[:, :17] = float("nan")
    assert build_loss("landmarks")(inputs).item() == pytest.approx(0.0, abs=1e-5)


def test_landmark_region_weights_scale_only_their_region():
    inputs = make_inputs()
    predicted = inputs.batch.landmarks.clone()
    start, end = LANDMARK_REGIONS["mouth"]
    predicted[:, start:end] += 3.0
    inputs = with_renders(inputs, landmarks2d=predicted)
    plain = build_loss("landmarks")(inputs)
    no_mouth = build_loss("landmarks", region_weights={"mouth": 0.0})(inputs)
    mouth_heavy = build_loss("landmarks", region_weights={"mouth": 4.0})(inputs)
    assert no_mouth.item() == pytest.approx(0.0, abs=1e-5)
    assert mouth_heavy > plain
    with pytest.raises(ValueError, match="unknown region 'ears'"):
        build_loss("landmarks", region_weights={"ears": 1.0})


# --- regularizers -------------------------------------------------------------------------

def test_regularizers_are_zero_for_the_mean_face_and_grow_with_coefficients():
    inputs = make_inputs()
    term = build_loss("regularizers", shape=1.0, expression=1.0, albedo=1.0)
    assert term(inputs).item() == 0.0
    inputs.params.shape = torch.full_like(inputs.params.shape, 0.5)
    assert term(inputs).item() == pytest.approx(10 * 0.25)
    inputs.params.expression = torch.ones_like(inputs.params.expression)
    inputs.params.albedo = torch.ones_like(inputs.params.albedo)
    assert term(inputs).item() == pytest.approx(2.5 + 5 + 4)
    assert build_loss("regularizers", shape=0, expression=0, albedo=0)(inputs).item() == 0.0


def test_jaw_prior_allows_opening_but_not_closing_past_rest_or_sideways():
    term = build_loss("regularizers", shape=0, expression=0, albedo=0, jaw=1.0)
    inputs = make_inputs()

    def jaw_penalty(x, y=0.0, z=0.0):
        inputs.params.jaw_pose = torch.tensor([[x, y, z]] * B)
        return term(inputs).item()

    assert jaw_penalty(0.3) == 0.0  # a plausible open mouth
    assert jaw_penalty(-0.2) > 0.0  # jaw pushed up into the skull
    assert jaw_penalty(1.2) > jaw_penalty(0.8) > 0.0  # beyond the opening limit
    assert jaw_penalty(0.2, y=0.4) > jaw_penalty(0.2, y=0.2) > 0.0  # sideways
    assert jaw_penalty(0.2, z=0.4) > 0.0


def test_neck_and_eye_priors_are_off_by_default_and_hold_rotations_at_zero_when_on():
    inputs = make_inputs()
    inputs.params.neck_pose = torch.full_like(inputs.params.neck_pose, 0.1)
    inputs.params.eye_pose = torch.full_like(inputs.params.eye_pose, 0.2)
    quiet = dict(shape=0, expression=0, albedo=0, jaw=0)
    assert build_loss("regularizers", **quiet)(inputs).item() == 0.0
    assert build_loss("regularizers", **quiet, neck=1.0)(inputs).item() == pytest.approx(3 * 0.01)
    assert build_loss("regularizers", **quiet, neck=1.0, eyes=2.0)(inputs).item() == pytest.approx(0.03 + 2 * 6 * 0.04)


# --- vertices -----------------------------------------------------------------------------

def test_vertex_term_is_zero_for_ground_truth_and_in_metres():
    inputs = make_inputs()
    inputs.mesh.vertices = inputs.batch.vertices.clone()
    assert build_loss("vertices")(inputs).item() == 0.0
    inputs.mesh.vertices = inputs.batch.vertices + torch.tensor([0.003, 0.0, 0.004])
    assert build_loss("vertices", norm="l2")(inputs).item() == pytest.approx(0.005, rel=1e-4)
    assert build_loss("vertices", norm="l1")(inputs).item() == pytest.approx(0.007 / 3, rel=1e-4)
    assert build_loss("vertices", norm="l2", center=True)(inputs).item() == pytest.approx(0.0, abs=1e-5)


def test_vertex_term_without_ground_truth_says_so():
    with pytest.raises(ValueError, match="needs ground-truth meshes"):
        build_loss("vertices")(make_inputs(with_vertices=False))


# --- through the real face model and renderer ---------------------------------------------

@pytest.fixture(scope="module")
def face_model():
    from regressor.face_model import build_face_model

    return build_face_model(n_shape=10, n_expression=5, n_albedo=4)


def test_real_render_of_the_target_gives_zero_image_and_landmark_loss(face_model):
    from regressor.render import Renderer

    torch.manual_seed(0)
    renderer = Renderer(image_size=32)
    target = face_model.zero_params(2)
    target.albedo = torch.randn(2, 4)
    target.jaw_pose[:, 0] = 0.2
    renders = renderer(face_model(target), target.camera, albedo=face_model.albedo(target.albedo), light=target.light)
    batch = FaceBatch(image=renders.albedo_shaded.detach(), landmarks=renders.landmarks2d.detach(),
                      landmarks_valid=torch.ones(2, 68))
    stack = LossStack([{"name": "photometric"}, {"name": "landmarks"}])

    def losses(params):
        mesh = face_model(params)
        out = renderer(mesh, params.camera, albedo=face_model.albedo(params.albedo), light=params.light)
        return stack(LossInputs(batch=batch, params=params, mesh=mesh, renders=out))

    at_target = losses(target)
    assert at_target["photometric"].item() == pytest.approx(0.0, abs=1e-6)
    assert at_target["landmarks"].item() == pytest.approx(0.0, abs=1e-6)

    moved = FaceParams(**{k: v.clone().requires_grad_(True) for k, v in target.items()})
    with torch.no_grad():
        moved.camera[:, 1] += 0.01  # 1 cm to the side
        moved.albedo += 0.5
    off = losses(moved)
    assert off["photometric"] > 0 and off["landmarks"] > 0
    off["total"].backward()
    assert moved.camera.grad[:, 1].abs().min() > 0  # landmarks (and pixels) pull the face back
    assert moved.albedo.grad.abs().sum() > 0 and moved.light.grad.abs().sum() > 0  # photometric


def test_landmark_term_aligns_the_camera_in_a_few_steps(face_model):
    from regressor.render import project_weak_perspective

    target = face_model.zero_params(1)
    size = 64
    target_landmarks = project_weak_perspective(face_model(target).landmarks3d, target.camera, size)[..., :2]
    camera = target.camera.clone()
    camera[:, 1:] += torch.tensor([0.02, -0.015])
    camera.requires_grad_(True)
    term = build_loss("landmarks")
    mesh = face_model(target)
    optimizer = torch.optim.Adam([camera], lr=2e-3)
    history = []
    for _ in range(15):
        predicted = project_weak_perspective(mesh.landmarks3d, camera, size)[..., :2]
        inputs = make_inputs()
        inputs.batch = FaceBatch(image=torch.zeros(1, 3, size, size), landmarks=target_landmarks,
                                 landmarks_valid=torch.ones(1, 68))
        inputs = with_renders(inputs, landmarks2d=predicted)
        loss = term(inputs)
        history.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert history[-1] < 0.3 * history[0]


def test_a_name_cannot_be_taken_by_a_second_class():
    with pytest.raises(ValueError, match="'photometric' is already registered by regressor.losses.photometric"):
        @register_loss("photometric")
        class Impostor(LossTerm):
            def forward(self, inputs):
                return torch.zeros(())
