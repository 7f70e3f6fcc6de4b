"""Specification of the perceptual_shape term: a frozen critic that moves only the geometry."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from regressor.losses import LossStack, build_loss
from regressor.losses import perceptual as perceptual_module
from regressor.models.critic import ShapeCritic
from regressor.types import FaceBatch, FaceMesh, FaceParams, LossInputs, Renders

S = 32


def tiny_critic(seed: int = 0) -> ShapeCritic:
    torch.manual_seed(seed)
    critic = ShapeCritic("resnet10t", image_size=S, backbone_kwargs={"channels": [8, 8, 8, 8]})
    nn.init.normal_(critic.head.weight, std=1.0)  # an untrained but not near-constant score
    return critic


@pytest.fixture()
def critic_path(tmp_path):
    path = tmp_path / "critic.pt"
    tiny_critic().save_checkpoint(path, {"note": "random test critic"})
    return path


def random_inputs(step: int = 0, batch_size: int = 2) -> LossInputs:
    g = torch.Generator().manual_seed(3)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    renders = Renders(shaded=rand(batch_size, 1, S, S), albedo_shaded=rand(batch_size, 3, S, S),
                      mask=torch.ones(batch_size, 1, S, S), normals=rand(batch_size, 3, S, S),
                      depth=rand(batch_size, 1, S, S), landmarks2d=rand(batch_size, 68, 2),
                      now_landmarks2d=rand(batch_size, 7, 2))
    mesh = FaceMesh(vertices=rand(batch_size, 5, 3), faces=torch.zeros(1, 3, dtype=torch.long),
                    landmarks3d=rand(batch_size, 68, 3), now_landmarks3d=rand(batch_size, 7, 3))
    batch = FaceBatch(image=rand(batch_size, 3, S, S), landmarks=rand(batch_size, 68, 2),
                      landmarks_valid=torch.ones(batch_size, 68))
    return LossInputs(batch=batch, params=FaceParams.zeros(batch_size), mesh=mesh, renders=renders, step=step)


def test_loss_is_the_negated_critic_score(critic_path):
    term = build_loss("perceptual_shape", checkpoint=str(critic_path))
    inputs = random_inputs()
    reference = ShapeCritic.from_checkpoint(critic_path)
    with torch.no_grad():
        scores = reference(inputs.batch.image, inputs.renders.shaded)
        assert term(inputs).item() == pytest.approx(-scores.mean().item(), rel=1e-5)
        softplus = build_loss("perceptual_shape", checkpoint=str(critic_path), transform="softplus")
        assert softplus(inputs).item() == pytest.approx(nn.functional.softplus(-scores).mean().item(), rel=1e-5)


def test_critic_is_frozen_hidden_from_optimizers_and_checkpoints(critic_path):
    stack = LossStack([{"name": "perceptual_shape", "weight": 1.0, "checkpoint": str(critic_path)},
                       {"name": "photometric", "weight": 1.0}])
    term = stack.terms["perceptual_shape"]
    assert all(not p.requires_grad for p in term.critic.parameters())
    assert list(stack.parameters()) == []  # nothing for an optimizer to pick up
    assert not any("critic" in key for key in stack.state_dict())  # not in Lightning checkpoints
    stack.train()
    assert stack.training and not term.critic.training  # BatchNorm statistics stay fixed
    stack.double()
    assert next(term.critic.parameters()).dtype == torch.float64  # follows .to()/.double()


def test_default_checkpoint_outside_the_repository_is_the_shipped_critic(tmp_path, monkeypatch):
    from regressor.assets import shipped_checkpoint

    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the package data's critic (regressor.assets)
    term = build_loss("perceptual_shape")  # default: checkpoints/critic.pt
    assert term.checkpoint == str(shipped_checkpoint("critic.pt"))


def test_a_relative_checkpoint_in_the_working_directory_wins_over_the_shipped_one(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    tiny_critic().save_checkpoint(tmp_path / "checkpoints" / "critic.pt", {})
    monkeypatch.chdir(tmp_path)
    term = build_loss("perceptual_shape", checkpoint="checkpoints/critic.pt")
    assert term.checkpoint == "checkpoints/critic.pt" and term.critic.image_size == S


def test_missing_checkpoint_names_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="critic checkpoint 'no/such/critic.pt' not found"):
        build_loss("perceptual_shape", checkpoint="no/such/critic.pt")


def test_warmup_returns_zero_and_skips_the_critic(critic_path):
    calls = []
    term = build_loss("perceptual_shape", checkpoint=str(critic_path), warmup_steps=5)
    term.critic.register_forward_hook(lambda *args: calls.append(1))
    stack = LossStack([{"name": "perceptual_shape", "weight": 1.0, "checkpoint": str(critic_path), "warmup_steps": 5}])
    stack.terms["perceptual_shape"].critic.register_forward_hook(lambda *args: calls.append(1))
    assert term(random_inputs(step=4)).item() == 0.0
    assert stack(random_inputs(step=4))["perceptual_shape"].item() == 0.0
    assert calls == []
    assert term(random_inputs(step=5)).item() != 0.0
    assert stack(random_inputs(step=5))["perceptual_shape"].item() != 0.0
    assert len(calls) == 2


def test_gradient_moves_the_geometry_and_never_the_critic(critic_path):
    """Through the real face model and renderer: one optimiser step on the whole stack."""
    from regressor.face_model import build_face_model
    from regressor.render import Renderer

    torch.manual_seed(0)
    face_model = build_face_model(n_shape=10, n_expression=5, n_albedo=4)
    renderer = Renderer(image_size=S)
    stack = LossStack([
        {"name": "perceptual_shape", "weight": 1.0, "checkpoint": str(critic_path)},
        {"name": "regularizers", "weight": 1e-4},
    ])
    critic = stack.terms["perceptual_shape"].critic
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}

    params = face_model.zero_params(2)
    params.shape = 0.3 * torch.randn(2, 10)
    params.jaw_pose = torch.tensor([[0.1, 0.0, 0.0]] * 2)
    leaves = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    params = FaceParams(**leaves)
    image = torch.rand(2, 3, S, S)

    def evaluate() -> tuple[dict, FaceMesh]:
        mesh = face_model(params)
        renders = renderer(mesh, params.camera, albedo=face_model.albedo(params.albedo), light=params.light)
        batch = FaceBatch(image=image, landmarks=renders.landmarks2d.detach(), landmarks_valid=torch.ones(2, 68))
        return stack(LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=0)), mesh

    losses, mesh = evaluate()
    losses["perceptual_shape"].backward()
    # The critic gradient reaches the geometry through the grey render ...
    for name in ("shape", "expression", "global_pose", "jaw_pose"):
        assert leaves[name].grad is not None and leaves[name].grad.abs().sum() > 0, name
    # ... and only the geometry: grey shading has no albedo and a fixed light.
    for name in ("albedo", "light"):
        assert leaves[name].grad is None or leaves[name].grad.abs().sum() == 0, name
    assert all(p.grad is None for p in critic.parameters())

    optimizer = torch.optim.Adam(list(leaves.values()) + list(stack.parameters()), lr=1e-2)
    vertices_before = mesh.vertices.detach().clone()
    optimizer.zero_grad()
    evaluate()[0]["total"].backward()
    optimizer.step()
    _, mesh_after = evaluate()
    assert (mesh_after.vertices - vertices_before).abs().max() > 1e-5  # the geometry moved
    for key, value in critic.state_dict().items():  # the critic did not, BatchNorm stats included
        assert torch.equal(value, critic_before[key]), key
