"""CriticModule end to end: the shipped yaml trains for 2 tiny steps; its checkpoint exports to a ShapeCritic."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from regressor.cli import main as regressor_main
from regressor.models.critic import ShapeCritic
from regressor.training.critic import ranking_metrics

TINY_OVERRIDES = [
    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false", "--trainer.max_time", "null",
    "--model.init_args.backbone_kwargs", '{"channels": [8, 8, 16, 16], "stem_width": 8}',
    "--model.init_args.image_size", "32", "--model.init_args.render_size", "32",
    "--model.init_args.num_negatives", "2", "--model.init_args.log_images_every_n_steps", "1",
    "--data.init_args.train_samples", "4", "--data.init_args.val_samples", "2",
    "--data.init_args.batch_size", "2", "--data.init_args.image_size", "32", "--data.init_args.cache_dir", "null",
]


def test_critic_config_trains_and_its_lightning_checkpoint_loads_as_a_critic(tmp_path):
    config = "configs/critic/default.yaml"  # full.yaml is run by tests/test_configs.py
    torch.manual_seed(0)
    regressor_main(["fit", "--config", config, *TINY_OVERRIDES,
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
                    "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
                    "--trainer.devices", "1", "--trainer.strategy", "auto"])
    checkpoints = sorted(tmp_path.rglob("last.ckpt"))
    assert checkpoints, list(tmp_path.rglob("*"))
    critic = ShapeCritic.from_checkpoint(checkpoints[0])
    assert critic.image_size == 32 and not critic.training
    assert list((tmp_path / "logs").rglob("events.out.tfevents*"))

    from regressor.critic.export import main as export_main

    out = tmp_path / "critic.pt"
    export_main(["--ckpt", str(checkpoints[0]), "--out", str(out), "--config", config, "--extra", "wall_time_min=1"])
    exported = ShapeCritic.from_checkpoint(out)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"] == f"regressor fit --config {config}" and record["wall_time_min"] == "1"
    assert exported.checkpoint_metadata["git_commit"] == record["git_commit"]
    image, shaded = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(exported(image, shaded), critic(image, shaded))

    # --ckpt_path resumes a critic run (its checkpoint records the derived critic_config, which is no
    # __init__ argument; the CLI must not feed it back: that failed to parse). The run had ended, so the
    # resumed one restores step 2 and stops (the one-cycle schedule's length is part of its state).
    def resume(folder: str, *overrides: str) -> list[str]:
        resumed = tmp_path / folder
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            regressor_main(["fit", "--config", config, *TINY_OVERRIDES, *overrides,
                            "--trainer.logger.init_args.save_dir", str(resumed / "logs"),
                            "--trainer.default_root_dir", str(resumed), "--trainer.accelerator", "cpu",
                            "--trainer.devices", "1", "--trainer.strategy", "auto", "--ckpt_path", str(checkpoints[0])])
        assert list((resumed / "logs").rglob("events.out.tfevents*"))  # the resumed run started and logged
        return [str(w.message) for w in caught if "replace these settings" in str(w.message)]

    assert resume("resumed") == []  # the same settings: nothing to warn about
    # A setting changed on the command line is replaced by the checkpoint's (Lightning's rule): say so, by name.
    replaced, = resume("changed", "--model.init_args.learning_rate", "0.123")
    assert "model.init_args.learning_rate: 0.123 ->" in replaced


def test_ranking_metrics_report_perfect_ordering():
    error = torch.tensor([[0.0, 1.0, 3.0, 5.0], [0.0, 2.5, 0.5, 4.0]])
    types = torch.tensor([[-1, 0, 1, 2], [-1, 0, 1, 2]])
    metrics = ranking_metrics(-error, error, types)
    assert metrics["auc_2mm"] == 1.0 and metrics["spearman"] == pytest.approx(-1.0)
    assert metrics["auc_identity"] == 1.0 and metrics["pos_neg_gap"] > 0


def test_the_gradient_group_refuses_an_unknown_metric_and_a_bad_start_mix():
    from regressor.training.critic import CriticModule

    with pytest.raises(ValueError, match="metric"):
        CriticModule(backbone_kwargs={"channels": [8, 8, 8, 8]}, gradient={"metric": "euclid"})
    with pytest.raises(ValueError, match="start_mix"):
        CriticModule(backbone_kwargs={"channels": [8, 8, 8, 8]}, gradient={"start_mix": [1.0, 0.0]})
    module = CriticModule(backbone_kwargs={"channels": [8, 8, 8, 8]}, hand_made_weight=0.0, activation="silu")
    assert module.hparams.hand_made_weight == 0.0 and module.critic.activation == "silu"
