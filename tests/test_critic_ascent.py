"""Self-generated (gradient-ascent) negatives for the critic: the climb, its candidates, the module wiring."""
from __future__ import annotations

import pytest
import torch

from regressor.critic.ascent import ASCENT_TYPE_INDEX, AscentConfig, ascent_candidates
from regressor.face_model import build_face_model
from regressor.models.critic import CriticCheckpointError, ShapeCritic
from regressor.render import Renderer
from regressor.render.renderer import mesh_for_rendering

TINY = {"channels": [8, 8, 16, 16], "stem_width": 8}


@pytest.fixture(scope="module")
def face_model():
    return build_face_model()


@pytest.fixture(scope="module")
def faces(face_model):
    generator = torch.Generator().manual_seed(0)
    params = face_model.zero_params(2)
    params.shape = torch.randn(2, face_model.n_shape, generator=generator)
    params.camera = torch.tensor([[8.0, 0.0, 0.0], [8.5, 0.005, -0.004]])
    truth = face_model(params).vertices + 0.0005 * torch.randn(2, face_model.num_vertices, 3, generator=generator)
    return params, truth


def make_render(face_model, size=32):
    renderer = Renderer(image_size=size)

    def render(vertices, camera):
        return renderer(mesh_for_rendering(vertices, face_model.faces), camera)
    return render


def test_config_rejects_unknown_variables_and_bad_numbers():
    with pytest.raises(ValueError, match="unknown fields"):
        AscentConfig(variables=("shape", "albedo"))
    with pytest.raises(ValueError, match="max_steps"):
        AscentConfig(faces_per_step=2, max_steps=0)
    assert not AscentConfig().active(10)  # off by default
    assert not AscentConfig(faces_per_step=2, start_step=5).active(4)
    assert AscentConfig(faces_per_step=2, start_step=5).active(5)


def test_ascent_candidates_are_truth_start_end_with_true_errors(face_model, faces):
    params, truth = faces
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", 32, TINY).train()
    config = AscentConfig(faces_per_step=2, max_steps=3, learning_rate=0.1)
    image = torch.rand(2, 3, 32, 32)
    rendered = ascent_candidates(critic, face_model, make_render(face_model), image, params, truth, config,
                                 torch.Generator().manual_seed(3))
    assert rendered.shaded.shape == (2, 3, 1, 32, 32) and rendered.mask.shape == (2, 3, 1, 32, 32)
    assert rendered.type_index.tolist() == [[-1, ASCENT_TYPE_INDEX, ASCENT_TYPE_INDEX]] * 2
    assert torch.all(rendered.error_mm[:, 0] == 0) and torch.all(rendered.error_mm[:, 1:] > 0.1)
    assert critic.training, "the climb must restore the critic's mode"
    assert all(p.grad is None for p in critic.parameters()), "the climb must not leave gradients on the critic"
    # The truth column is the given geometry: its render equals a direct render of ``truth``.
    direct = make_render(face_model)(truth, params.camera).shaded
    torch.testing.assert_close(rendered.shaded[:, 0], direct)


def test_the_climb_raises_the_critic_score(face_model, faces):
    """End geometries score higher than start geometries under the critic that was climbed."""
    params, truth = faces
    torch.manual_seed(1)
    critic = ShapeCritic("resnet10t", 32, TINY).eval()
    torch.nn.init.normal_(critic.head.weight, std=0.1)  # a non-trivial score surface
    image = torch.rand(2, 3, 32, 32)
    config = AscentConfig(faces_per_step=2, max_steps=1, learning_rate=0.02)
    generator = torch.Generator().manual_seed(5)
    rendered = ascent_candidates(critic, face_model, make_render(face_model), image, params, truth, config, generator)
    with torch.no_grad():
        start = critic(image, rendered.shaded[:, 1])
        end = critic(image, rendered.shaded[:, 2])
    assert torch.all(end > start), (start, end)


def test_module_fine_tunes_from_a_critic_file_with_ascent_negatives(tmp_path):
    from regressor.cli import main as regressor_main
    from tests.test_critic_module import TINY_OVERRIDES

    initial = ShapeCritic("resnet10t", 32, TINY)
    initial.save_checkpoint(tmp_path / "base.pt")
    regressor_main(["fit", "--config", "configs/critic/ascent.yaml", *TINY_OVERRIDES,
                    "--model.init_args.init_checkpoint", str(tmp_path / "base.pt"),
                    "--model.init_args.ascent", '{"faces_per_step": 2, "max_steps": 2}',
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
                    "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path)])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert {"train/ascent", "val/gradient_fraction", "val/gradient_error_change_mm"} <= set(events.Tags()["scalars"])
    trained = ShapeCritic.from_checkpoint(next(tmp_path.rglob("last.ckpt")))
    fresh = ShapeCritic("resnet10t", 32, TINY)

    def distance(a, b):
        return sum(float((x.float() - y.float()).norm()) for (k, x), y in zip(a.state_dict().items(), b.state_dict().values())
                   if k.endswith("weight"))
    # Started from the file (2 small steps away from it), not from a fresh random network.
    assert 0 < distance(trained, initial) < 0.2 * distance(trained, fresh)


def test_module_refuses_an_init_checkpoint_of_another_architecture(tmp_path):
    from regressor.training.critic import CriticModule

    ShapeCritic("resnet10t", 32, TINY).save_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CriticCheckpointError, match="architecture"):
        CriticModule(image_size=64, init_checkpoint=str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError):
        CriticModule(init_checkpoint=str(tmp_path / "missing.pt"))


def test_a_critic_of_another_input_size_initialises_the_module(tmp_path):
    """The weights do not depend on the input size, so a 32 px critic may start a 64 px training."""
    from regressor.training.critic import CriticModule

    small = ShapeCritic("resnet10t", 32, TINY)
    small.save_checkpoint(tmp_path / "small.pt")
    module = CriticModule(image_size=64, backbone_kwargs=TINY, init_checkpoint=str(tmp_path / "small.pt"))
    assert module.critic.architecture["image_size"] == 64
    for (name, value), loaded in zip(small.state_dict().items(), module.critic.state_dict().values()):
        assert torch.equal(value, loaded), name


def test_gradient_probe_normalised_steps_move_each_face_by_the_step_length(face_model, faces):
    from regressor.critic.probe import gradient_probe

    params, truth = faces
    critic = ShapeCritic("resnet10t", 32, TINY).eval()
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    render = make_render(face_model)
    still = gradient_probe(critic, face_model, render, image, params, truth, steps=0)
    assert torch.equal(still.start_vertices, still.end_vertices) and still.summary()["gradient_fraction"] == 0.0
    kept, dropped = (gradient_probe(critic, face_model, render, image, params, truth, steps=0, keep_displacement=k)
                     for k in (True, False))
    assert torch.allclose(kept.start_vertices - dropped.start_vertices, truth - face_model(params).vertices, atol=1e-6)
    from regressor.critic.ascent import climb

    start = {"shape": params.shape.clone(), "expression": params.expression.clone()}
    end = climb(critic, face_model, render, image, params, start, torch.zeros_like(truth), 1, 0.3, optimizer="normalised")
    moved = torch.cat([end[n] - start[n] for n in start], dim=1).norm(dim=1)
    assert torch.allclose(moved, torch.full((2,), 0.3), atol=1e-5)
    with pytest.raises(ValueError, match="optimizer"):
        climb(critic, face_model, render, image, params, start, torch.zeros_like(truth), 1, 0.3, optimizer="sgd")
