"""Every product LightningCLI yaml under configs/ runs for two steps with tiny sizes; every
experiment config (configs/experiments/) is parsed and validated as ``fit`` reads it, without running.

Configs are discovered, so a config added later is covered without editing this file;
``regression_helpers.shrink_config`` overrides sizes by key name (image_size, batch_size,
*_samples, backbone, ...) and points outputs into tmp_path.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from regressor.cli import main
from regressor.synthetic.splits import HELD_OUT_SPLITS
from tests.regression_helpers import (
    CONFIG_ROOT, QUICKSTART, TINY_SIZE, critic_checkpoint, fitting_configs, lightning_configs, shrink_config,
    shrink_fitting_config,
)

EXPERIMENTS = CONFIG_ROOT / "experiments"
CONFIGS = [p for p in lightning_configs() if EXPERIMENTS not in p.parents]
EXPERIMENT_CONFIGS = [p for p in lightning_configs() if EXPERIMENTS in p.parents]
FITTING_CONFIGS = fitting_configs()


def test_every_yaml_under_configs_is_exercised_here():
    every = set(CONFIG_ROOT.rglob("*.yaml"))
    known = set(CONFIGS) | set(EXPERIMENT_CONFIGS) | set(FITTING_CONFIGS)
    assert every == known, f"configs of an unknown kind: {every - known}"


def test_the_regressor_configs_are_discovered():
    names = {f"{p.parent.name}/{p.name}" for p in CONFIGS}
    assert {"regressor/quickstart.yaml", "regressor/full.yaml"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_fits_two_steps_with_tiny_sizes(config, tmp_path):
    torch.manual_seed(0)
    tiny = shrink_config(config, tmp_path, critic_checkpoint(tmp_path))
    assert main(["fit", "--config", str(tiny)]) == 0
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert checkpoints, f"{config.name}: no checkpoint written"
    last = max(checkpoints, key=lambda p: p.stat().st_mtime)
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2


def test_every_experiment_config_parses():
    """Experiment configs (none ship today: configs/experiments/README.md names the commit where they run)
    are only parsed, as ``fit`` reads them; a loop rather than a parameter list, so that none is no skip."""
    from regressor.training.cli import parse_lightning_config

    for config in EXPERIMENT_CONFIGS:
        parsed = parse_lightning_config(["--config", str(config)])
        assert parsed.model.class_path.startswith("regressor.") and parsed.data.class_path.startswith("regressor."), config


def test_quickstart_trains_on_the_train_split_and_validates_on_held_out_seeds():
    data = yaml.safe_load(QUICKSTART.read_text())["data"]["init_args"]
    assert data.get("train_source", "synthetic") in ("synthetic", "pool")  # a pool holds "train" seeds (regressor synth --pool)
    assert data.get("synthetic_seed_offset", 0) == 0
    assert data["val_source"] == "synthetic"
    # FaceDataModule draws val/test from their named held-out seed ranges.
    assert {"val", "test"} <= set(HELD_OUT_SPLITS)


def test_full_config_is_the_paper_scale_ddp_run():
    config = yaml.safe_load((CONFIG_ROOT / "regressor" / "full.yaml").read_text())
    assert config["trainer"]["strategy"] == "ddp"
    assert config["model"]["init_args"]["encoder"]["init_args"]["backbone"] == "resnet50"
    assert config["data"]["init_args"]["image_size"] == 224


@pytest.mark.parametrize("config", FITTING_CONFIGS, ids=lambda p: f"fitting/{p.stem}")
def test_fitting_config_runs_one_step_per_stage_with_tiny_sizes(config, tmp_path):
    from PIL import Image

    from regressor.data.landmarks_io import save_pts

    torch.manual_seed(0)
    folder = tmp_path / "faces"
    (folder / "images").mkdir(parents=True)
    (folder / "landmarks").mkdir()
    for name in ("a", "b"):
        Image.fromarray((torch.rand(TINY_SIZE, TINY_SIZE, 3) * 255).to(torch.uint8).numpy()).save(folder / "images" / f"{name}.png")
        points = TINY_SIZE * (0.3 + 0.4 * torch.rand(68, 2))
        save_pts(folder / "landmarks" / f"{name}.pts", points.numpy())
    tiny = shrink_fitting_config(config, tmp_path, critic_checkpoint(tmp_path))
    out = tmp_path / "fitted"
    assert main(["optimize", "--images", str(folder), "--config", str(tiny), "--out", str(out)]) in (0, None)
    written = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"a.obj", "b.obj"} <= written, sorted(written)
