"""Specification of FaceEncoder: timm backbone, mean-face start, local weights only."""
from __future__ import annotations

import pytest
import timm
import torch

from regressor.models.encoder import EncoderWeightsError, FaceEncoder
from regressor.types import DEFAULT_CAMERA_SCALE, FaceParams

BACKBONE = "mobilenetv3_small_050"  # smallest timm family member: keeps the tests fast


@pytest.fixture(scope="module")
def encoder() -> FaceEncoder:
    torch.manual_seed(0)
    return FaceEncoder(BACKBONE, n_shape=20, n_expression=10, n_albedo=5, hidden_dim=32)


def test_first_prediction_is_the_mean_face_centred(encoder):
    images = torch.rand(3, 3, 64, 64)
    predicted = encoder(images)
    mean_face = FaceParams.zeros(3, n_shape=20, n_expression=10, n_albedo=5)
    for name, value in predicted.items():
        assert value.shape == getattr(mean_face, name).shape, name
        assert torch.equal(value, getattr(mean_face, name)), name
    assert torch.equal(predicted.camera[:, 0], torch.full((3,), DEFAULT_CAMERA_SCALE))
    assert torch.equal(predicted.camera[:, 1:], torch.zeros(3, 2))  # centred


def test_every_head_learns_its_target_from_the_zero_start_and_muted_heads_stay_at_zero():
    """A few steps pull each head's output to a per-image target (zero-initialised last layers still get
    gradients); a muted head stays exactly at the mean face while the others learn."""
    torch.manual_seed(0)
    model = FaceEncoder(BACKBONE, n_shape=20, n_expression=10, n_albedo=5, hidden_dim=32)
    model.mute_heads({"jaw_pose"})
    images = torch.rand(2, 3, 64, 64)
    start = FaceParams.zeros(2, n_shape=20, n_expression=10, n_albedo=5)
    offsets = torch.tensor([[0.3], [-0.3]])  # per image: the heads must tell the two images apart
    target = start._map(lambda t: t + offsets.view(2, *[1] * (t.dim() - 1)))
    learned = [name for name in model.output_dims if name != "jaw_pose"]

    def errors() -> dict[str, float]:
        with torch.no_grad():
            predicted = model(images)
        return {name: float((getattr(predicted, name) - getattr(target, name)).square().mean()) for name in learned}

    before = errors()
    assert before == pytest.approx({name: 0.09 for name in learned})  # the mean face: every field 0.3 away
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        predicted = model(images)
        loss = sum((getattr(predicted, name) - getattr(target, name)).square().mean() for name in learned)
        loss.backward()
        optimizer.step()
    after = errors()
    for name in learned:
        assert after[name] < 0.25 * before[name], (name, before[name], after[name])
    with torch.no_grad():
        assert torch.equal(model(images).jaw_pose, torch.zeros(2, 3))


def test_camera_scale_stays_positive(encoder):
    raw = {name: torch.full((1, dim), -50.0) for name, dim in encoder.output_dims.items()}
    params = encoder.to_params(raw)
    assert params.camera[0, 0] > 0
    assert params.light.shape == (1, 9, 3)


def test_rejects_images_of_the_wrong_layout(encoder):
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\), got \(2, 64, 64, 3\)"):
        encoder(torch.rand(2, 64, 64, 3))


def test_loads_local_backbone_weights_ignoring_the_classifier(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model(BACKBONE, pretrained=False, num_classes=7)  # with a classifier head
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = FaceEncoder(BACKBONE, n_shape=4, n_expression=4, n_albedo=4, weights_path=str(path))
    loaded = model.backbone.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_loads_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = FaceEncoder(BACKBONE, n_shape=4, n_expression=4, n_albedo=4, weights_path=str(path))
    key = next(iter(source.state_dict()))
    assert torch.equal(model.backbone.state_dict()[key], source.state_dict()[key])


def test_weights_of_another_backbone_give_a_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    with pytest.raises(EncoderWeightsError, match=rf"do not fit backbone '{BACKBONE}'.*missing keys.*unexpected keys"):
        FaceEncoder(BACKBONE, weights_path=str(path))


def test_weights_with_wrong_shapes_give_a_clear_error(tmp_path):
    source = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=0)
    path = tmp_path / "wider.pth"
    torch.save(source.state_dict(), path)
    expected = r"shape mismatch: blocks\.0\.0\.conv_pw\.weight: file \(16, 16, 1, 1\) vs model \(8, 16, 1, 1\)"
    with pytest.raises(EncoderWeightsError, match=expected):
        FaceEncoder(BACKBONE, weights_path=str(path))


def test_missing_or_corrupt_weights_file_is_named(tmp_path):
    with pytest.raises(EncoderWeightsError, match="nowhere.pth does not exist"):
        FaceEncoder(BACKBONE, weights_path=str(tmp_path / "nowhere.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="cannot read encoder weights .*corrupt.pth"):
        FaceEncoder(BACKBONE, weights_path=str(corrupt))


def test_first_prediction_renders_a_centred_face_filling_the_image(encoder):
    from regressor.face_model import build_face_model
    from regressor.render import Renderer

    face_model = build_face_model(n_shape=20, n_expression=10, n_albedo=5)
    size = 32
    params = encoder(torch.rand(2, 3, 64, 64))[0]
    with torch.no_grad():
        renders = Renderer(image_size=size)(face_model(params), params.camera)
    mask = renders.mask[0, 0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    centre = torch.stack([cols.float().mean(), rows.float().mean()]) + 0.5
    assert (centre - size / 2).abs().max() < size * 0.15
    assert 0.2 < mask.mean() < 0.95  # the face fills much of the crop without overflowing it
    landmarks = renders.landmarks2d[0]
    assert ((landmarks > 0) & (landmarks < size)).all()
