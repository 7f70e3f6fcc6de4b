"""regressor.assets: the shipped weights and default configs are package data, found from any working directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from regressor.assets import (SHIPPED_CHECKPOINTS, default_config, is_shipped_config, resolve_shipped,
                              shipped_checkpoint)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_file_is_found_through_the_package():
    for name in SHIPPED_CHECKPOINTS:
        assert shipped_checkpoint(name).is_file(), name
    for path in (REPO_ROOT / "configs").rglob("*.yaml"):
        relative = path.relative_to(REPO_ROOT / "configs").as_posix()
        if is_shipped_config(relative):
            assert default_config(relative).read_bytes() == path.read_bytes(), relative
    assert is_shipped_config("fitting/default.yaml") and is_shipped_config("fitting/no_critic.yaml")
    assert is_shipped_config("regressor/quickstart.yaml") and not is_shipped_config("critic/focused.yaml")
    with pytest.raises(ValueError, match="not a shipped checkpoint"):
        shipped_checkpoint("critic_base.pt")
    assert not is_shipped_config("fitting/old/default.yaml")  # one folder level, as setup.cfg's globs
    with pytest.raises(ValueError, match="not a shipped config"):
        default_config("../setup.cfg")


def test_user_paths_win_and_documented_names_fall_back_to_the_shipped_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository
    assert resolve_shipped("checkpoints/regressor.ckpt") == shipped_checkpoint("regressor.ckpt")
    assert resolve_shipped("./configs/fitting/default.yaml") == default_config("fitting/default.yaml")
    assert resolve_shipped("checkpoints/critic_base.pt") == Path("checkpoints/critic_base.pt")  # not shipped: as given
    assert resolve_shipped("elsewhere/critic.pt") == Path("elsewhere/critic.pt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "regressor.ckpt").write_bytes(b"mine")
    assert resolve_shipped("checkpoints/regressor.ckpt") == Path("checkpoints/regressor.ckpt")  # the cwd's file


def test_default_fitting_config_loads_outside_the_repository(tmp_path, monkeypatch):
    from regressor.fitting_config import load_fitting_config

    monkeypatch.chdir(tmp_path)
    config = load_fitting_config("configs/fitting/default.yaml")  # `regressor optimize`'s default --config
    assert [stage.name for stage in config.stages][-1] == "perceptual"  # no_critic.yaml's stages + default's
    assert any(spec["name"] == "perceptual_shape" for spec in config.losses)
