"""ShapeCritic checkpoints: round trip, and a clear error for every kind of bad file."""
from __future__ import annotations

import os

import pytest
import torch

from regressor.models.critic import CriticCheckpointError, ShapeCritic

TINY = dict(backbone="resnet10t", image_size=32, backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8})


def tiny_critic(**overrides) -> ShapeCritic:
    torch.manual_seed(0)
    return ShapeCritic(**{**TINY, **overrides})


def inputs(batch: int = 2, size: int = 40):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, size, size, generator=generator), torch.rand(batch, 1, size, size, generator=generator)


def test_critic_scores_one_value_per_sample_at_any_input_size():
    critic = tiny_critic().eval()
    image, shaded = inputs(size=50)
    assert critic(image, shaded).shape == (2,)


def test_critic_rejects_wrongly_shaped_inputs_with_a_clear_message():
    critic = tiny_critic()
    image, shaded = inputs()
    with pytest.raises(ValueError, match=r"shaded must be \(B,1,H,W\)"):
        critic(image, shaded.expand(-1, 3, -1, -1))


def test_checkpoint_round_trip_reproduces_scores_and_metadata(tmp_path):
    critic = tiny_critic().eval()
    with torch.no_grad():  # non-trivial BN statistics survive the round trip too
        critic.backbone.bn1.running_mean.uniform_()
    path = tmp_path / "critic.pt"
    critic.save_checkpoint(path, {"git_commit": "abc", "metrics": {"auc": 0.9}, "seeds": (1, 2)})
    loaded = ShapeCritic.from_checkpoint(path)
    assert not loaded.training
    assert loaded.config == critic.config
    assert loaded.checkpoint_metadata["metrics"]["auc"] == 0.9
    assert loaded.checkpoint_metadata["seeds"] == [1, 2]
    image, shaded = inputs()
    torch.testing.assert_close(loaded(image, shaded), critic(image, shaded))
    assert [p.name for p in tmp_path.iterdir()] == ["critic.pt"]  # no temporary left behind


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ShapeCritic.from_checkpoint(tmp_path / "nope.pt")


def test_corrupt_bytes_are_reported_as_not_a_torch_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    tiny_critic().save_checkpoint(path, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CriticCheckpointError, match="not a readable torch file"):
        ShapeCritic.from_checkpoint(path)


def test_lightning_checkpoint_of_another_module_is_refused(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel

    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    path = tmp_path / "other.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CriticCheckpointError, match="another module"):
        ShapeCritic.from_checkpoint(path)


def test_weights_of_a_different_architecture_are_refused(tmp_path):
    path = tmp_path / "wrong.pt"
    tiny_critic().save_checkpoint(path, {})
    payload = torch.load(path, weights_only=True)
    payload["config"]["backbone_kwargs"]["channels"] = [8, 8, 16, 32]
    torch.save(payload, path)
    with pytest.raises(CriticCheckpointError, match="do not match the architecture"):
        ShapeCritic.from_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_would_execute_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "face-psl/shape-critic", "payload": _RunsCode()}, path)
    with pytest.raises(CriticCheckpointError, match="could execute code"):
        ShapeCritic.from_checkpoint(path)


def test_a_plain_dict_without_the_critic_format_is_refused(tmp_path):
    path = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CriticCheckpointError, match="not a ShapeCritic checkpoint"):
        ShapeCritic.from_checkpoint(path)


def test_a_file_from_before_issue_14_loads_with_its_error_unit_and_todays_render_settings(tmp_path):
    critic = tiny_critic(error_unit_mm=2.0)
    critic.save_checkpoint(tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    config = dict(payload["config"])
    config.pop("render")
    config["error_scale_mm"] = config.pop("error_unit_mm")  # the old key
    payload["config"] = config
    torch.save(payload, tmp_path / "old.pt")
    loaded = ShapeCritic.from_checkpoint(tmp_path / "old.pt")
    assert loaded.error_unit_mm == 2.0
    assert loaded.render_settings.light_direction == (0.0, 0.4, 1.0) and loaded.render_settings.image_size == 64
    image, shaded = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, shaded), critic.eval()(image, shaded))


def test_render_settings_round_trip_and_a_different_light_is_refused_by_the_perceptual_loss(tmp_path):
    from regressor.models.critic import CriticRenderMismatchError
    from regressor.losses.perceptual import PerceptualShapeLoss
    from regressor.render import Renderer

    tiny_critic(render={"light_direction": (0.0, 0.0, 1.0), "image_size": 32}).save_checkpoint(tmp_path / "c.pt")
    loss = PerceptualShapeLoss(checkpoint=str(tmp_path / "c.pt"))
    assert loss.critic.render_settings.light_direction == (0.0, 0.0, 1.0)
    loss.check_renderer(Renderer(image_size=48, light_direction=(0.0, 0.0, 1.0)))  # size is applied by resizing
    with pytest.raises(CriticRenderMismatchError, match=r"light_direction \(0.0, 0.4, 1.0\)"):
        loss.check_renderer(Renderer(image_size=32))
    with pytest.raises(CriticRenderMismatchError, match="background"):
        loss.check_renderer(Renderer(light_direction=(0.0, 0.0, 1.0), background="noise"))


def test_critic_module_takes_one_error_unit_and_refuses_the_old_objective_key():
    from regressor.training.critic import CriticModule

    module = CriticModule(image_size=32, backbone_kwargs=TINY["backbone_kwargs"], error_unit_mm=2.0)
    assert module.critic.error_unit_mm == module.objective.error_unit_mm == 2.0
    with pytest.raises(ValueError, match="model.init_args.error_unit_mm"):
        CriticModule(image_size=32, backbone_kwargs=TINY["backbone_kwargs"], objective={"error_unit_mm": 2.0})


def test_the_exported_record_says_whether_the_score_is_calibrated_or_only_its_slope_is_trained():
    import yaml

    from regressor.critic.export import RANKED_SCORE, SLOPE_SCORE, score_meaning

    def meaning(name):
        return score_meaning(yaml.safe_load(open(f"configs/critic/{name}.yaml")))

    assert meaning("default") == meaning("ascent_refine") == RANKED_SCORE
    assert meaning("gradient") == meaning("gradient_climb") == SLOPE_SCORE
