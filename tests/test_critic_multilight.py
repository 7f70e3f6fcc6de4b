"""Specification of a critic that sees its geometry under several fixed lights.

The extra channels must be the same whether the critic's own renderer draws them (training,
benchmarks) or the loss completes a fitting renderer's one-channel render from its normals;
a critic widened from a one-light critic must start out scoring exactly like it.
"""
from __future__ import annotations

import pytest
import torch
from pytorch3d.utils import ico_sphere
from torch import nn

from regressor.models.critic import CriticRenderSettings, ShapeCritic
from regressor.losses.perceptual import PerceptualShapeLoss
from regressor.render import Renderer
from regressor.render.shading import lambert
from regressor.training.critic import augment_pairs, widened_input
from regressor.types import FaceMesh

LIGHTS = ((1.0, 0.0, 1.0), (-1.0, 0.0, 1.0), (0.0, 1.0, 1.0))
S = 32


def sphere(batch: int = 2) -> FaceMesh:
    mesh = ico_sphere(2)
    verts = (mesh.verts_padded() * 0.1).expand(batch, -1, -1).clone()
    return FaceMesh(vertices=verts, faces=mesh.faces_packed(), landmarks3d=verts[:, :68].clone(),
                    now_landmarks3d=verts[:, :7].clone())


def camera(batch: int = 2) -> torch.Tensor:
    return torch.tensor([[8.0, 0.02, -0.01]]).expand(batch, 3).clone()


def tiny(lights=()) -> ShapeCritic:
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", image_size=S, backbone_kwargs={"channels": [8, 8, 8, 8]},
                         render={"image_size": S, "extra_light_directions": lights})
    nn.init.normal_(critic.head.weight, std=1.0)
    return critic.eval()


def test_extra_lights_add_one_lambert_channel_each_and_leave_the_main_one_alone():
    plain = Renderer(image_size=S, background_value=0.2)(sphere(), camera())
    lit = Renderer(image_size=S, background_value=0.2, extra_light_directions=LIGHTS)(sphere(), camera())
    assert lit.shaded.shape == (2, 4, S, S)
    assert torch.equal(lit.shaded[:, :1], plain.shaded)
    for k, light in enumerate(LIGHTS):
        expected = lambert(plain.normals, torch.tensor(light)) * plain.mask + 0.2 * (1 - plain.mask)
        assert torch.allclose(lit.shaded[:, 1 + k:2 + k], expected, atol=1e-6)
    assert not torch.allclose(lit.shaded[:, 1], lit.shaded[:, 2])  # left and right lights differ


def test_the_loss_completes_a_one_channel_render_exactly_as_the_critics_renderer_draws_it():
    settings = CriticRenderSettings(image_size=S, extra_light_directions=LIGHTS)
    drawn = settings.renderer()(sphere(), camera())
    plain = Renderer(image_size=S)(sphere(), camera())
    completed = settings.complete(plain.shaded, plain.normals, plain.mask)
    assert torch.allclose(completed, drawn.shaded, atol=1e-6)
    assert settings.complete(drawn.shaded, drawn.normals, drawn.mask) is drawn.shaded
    with pytest.raises(ValueError, match="channels"):
        settings.complete(drawn.shaded[:, :2], drawn.normals, drawn.mask)


def test_light_sets_must_be_closed_under_mirroring_and_mirroring_permutes_the_channels():
    assert CriticRenderSettings(extra_light_directions=LIGHTS).mirror_order() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="mirroring"):
        CriticRenderSettings(extra_light_directions=((1.0, 0.0, 1.0),))
    shaded = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(64, 1, 4, 1, 2).clone()
    _, out = augment_pairs(torch.rand(64, 3, 1, 2), shaded, torch.Generator().manual_seed(0), [0, 2, 1, 3])
    flipped = out[:, 0, 1, 0, 0] == 2.0
    assert 0 < flipped.sum() < 64  # some pairs were mirrored, and their left/right channels swapped
    assert torch.equal(out[flipped, 0, :, 0, 0], torch.tensor([0.0, 2.0, 1.0, 3.0]).expand(int(flipped.sum()), 4))


def test_a_widened_critic_starts_by_scoring_exactly_like_the_one_light_critic():
    one = tiny()
    wide = tiny(LIGHTS)
    wide.load_state_dict(widened_input(one.state_dict(), wide.state_dict()))
    image, main = torch.rand(3, 3, S, S), torch.rand(3, 1, S, S)
    extra = torch.rand(3, 3, S, S)
    assert torch.allclose(wide(image, torch.cat([main, extra], 1)), one(image, main), atol=1e-5)


def test_checkpoint_keeps_the_lights_and_the_loss_scores_a_default_renderers_output(tmp_path):
    path = tmp_path / "critic.pt"
    tiny(LIGHTS).save_checkpoint(path)
    loaded = ShapeCritic.from_checkpoint(path)
    assert loaded.render_settings.extra_light_directions == LIGHTS
    loss = PerceptualShapeLoss(checkpoint=str(path))
    mesh = sphere()
    mesh.vertices.requires_grad_(True)
    renders = Renderer(image_size=S)(mesh, camera())  # the fitting renderer: one channel
    loss.check_renderer(Renderer(image_size=S))
    scores = loss.score_renders(torch.rand(2, 3, S, S), renders)
    assert scores.shape == (2,)
    scores.sum().backward()
    assert mesh.vertices.grad is not None and mesh.vertices.grad.abs().sum() > 0
