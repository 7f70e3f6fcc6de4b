"""Typed fitting configs: jsonargparse reads configs/fitting/*.yaml into ``FittingConfig``,
misspelled keys are errors naming the key, and every shipped config keeps the numbers it had before
the schedule moved to one place (``no_critic.yaml``; ``default.yaml``/``default_224.yaml`` build on it)."""
import copy
from pathlib import Path

import pytest
import yaml

from benchmarks.fitting import fit_benchmark_faces  # noqa: F401  (the dict|path entry point still imports)
from regressor.fitting import DEFAULT_LEARNING_RATES, default_stages, stages_from_config
from regressor.fitting_cli import build_components
from regressor.fitting_config import CONFIG_DIR, FitStage, FittingConfig, load_config, load_fitting_config

LOSSES = [
    {"name": "landmarks", "weight": 1.0},
    {"name": "photometric", "weight": 1.0, "trim": 0.3},
    {"name": "regularizers", "weight": 1.0, "shape": 0.0001, "expression": 0.0001},
]
CRITIC = {"name": "perceptual_shape", "weight": 0.0016, "checkpoint": "checkpoints/critic.pt"}  # retuned on `val` for
# the gradient-trained critic (before: 0.02 and the perceptual stage's lr_scale 0.1, for the ranking critic)
CALIBRATED = [
    {"name": "rigid", "steps": 20, "optimize": ["global_pose", "camera"], "weights": {"landmarks": 1.0}, "lr_scale": 2.0},
    {"name": "shape", "steps": 130, "optimize": ["shape", "expression", "jaw_pose", "neck_pose", "global_pose", "camera"],
     "weights": {"landmarks": 1.0, "regularizers": 1.0}},
    {"name": "appearance", "steps": 150,
     "optimize": ["shape", "expression", "jaw_pose", "neck_pose", "global_pose", "camera", "albedo", "light"],
     "weights": {"landmarks": 1.0, "regularizers": 1.0, "photometric": 0.5}},
]  # the recalibration of 26e6964 (docs/results/fitting_calibration.md, phase 5); before: appearance 50 steps at 0.3, untrimmed
PERCEPTUAL = {"name": "perceptual", "steps": 60, "optimize": ["shape", "expression", "jaw_pose", "neck_pose", "albedo", "light"],
              "lr_scale": 0.3, "weights": {"landmarks": 1.0, "regularizers": 1.0, "photometric": 0.3, "perceptual_shape": 1.0}}
#: the effective values of each shipped config, captured before the configs were rewritten
BEFORE = {
    "no_critic": {"image_size": 128, "batch_size": 8, "face_model": {}, "renderer": {}, "losses": LOSSES,
                  "stages": CALIBRATED},
    "default": {"image_size": 128, "batch_size": 8, "face_model": {}, "renderer": {}, "losses": LOSSES + [CRITIC],
                "stages": CALIBRATED + [PERCEPTUAL]},
    "default_224": {"image_size": 224, "batch_size": 8, "face_model": {}, "renderer": {}, "losses": LOSSES + [CRITIC],
                    "stages": CALIBRATED + [PERCEPTUAL]},
}


def test_every_shipped_fitting_config_is_covered():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == set(BEFORE)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_shipped_configs_keep_their_stages_steps_weights_and_learning_rates(name):
    before, config = BEFORE[name], load_config(CONFIG_DIR / f"{name}.yaml")
    assert stages_from_config(config["stages"]) == stages_from_config(before["stages"])
    assert config["losses"] == before["losses"]
    for key in ("image_size", "batch_size", "face_model", "renderer"):
        assert config[key] == before[key], key
    assert config.get("learning_rates") is None  # DEFAULT_LEARNING_RATES, as before
    typed = load_fitting_config(CONFIG_DIR / f"{name}.yaml")
    assert isinstance(typed, FittingConfig) and all(isinstance(s, FitStage) for s in typed.stages)


def test_default_stages_are_default_yaml_and_rescale():
    assert default_stages() == stages_from_config(CALIBRATED + [PERCEPTUAL])
    scaled = default_stages(40)
    assert sum(s.steps for s in scaled) == 40 and [s.name for s in scaled] == ["rigid", "shape", "appearance", "perceptual"]
    assert default_stages(perceptual_weight=0.5)[-1].weights["perceptual_shape"] == 0.5
    assert DEFAULT_LEARNING_RATES["camera"] == 0.003


def _write(tmp_path: Path, content: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(stagez=c.pop("stages")), "stagez"),
    (lambda c: c["stages"][0].update(step=c["stages"][0].pop("steps")), "step"),
    (lambda c: c.update(learning_rate={"shape": 0.1}), "learning_rate"),
])
def test_misspelled_keys_are_errors_naming_the_key(tmp_path, mutate, key):
    content = copy.deepcopy(BEFORE["no_critic"])
    mutate(content)
    with pytest.raises(ValueError, match=key):
        load_config(_write(tmp_path, content))


def test_a_bad_parameter_group_is_an_error(tmp_path):
    content = copy.deepcopy(BEFORE["no_critic"])
    content["stages"][0]["optimize"] = ["shap"]
    with pytest.raises(ValueError, match="shap"):
        load_config(_write(tmp_path, content))


def test_base_overrides_and_extra_stages(tmp_path):
    _write(tmp_path, BEFORE["no_critic"], "base.yaml")
    path = _write(tmp_path, {"base": "base.yaml", "image_size": 64, "learning_rates": {"shape": 0.1},
                             "extra_stages": [dict(PERCEPTUAL, steps=3)]})
    config = load_config(path)
    assert config["image_size"] == 64 and config["learning_rates"] == {"shape": 0.1}
    assert [s["name"] for s in config["stages"]] == ["rigid", "shape", "appearance", "perceptual"]
    assert config["stages"][-1]["steps"] == 3 and config["losses"] == LOSSES
    with pytest.raises(KeyError, match="stages"):
        load_config(_write(tmp_path, {"losses": LOSSES}, "nostages.yaml"))


def test_the_loaded_dict_builds_components():
    config = load_config(CONFIG_DIR / "no_critic.yaml")
    config["image_size"] = 16
    _, renderer, stack = build_components(config)
    assert renderer.image_size[0] == 16 and set(stack.weights) == {"landmarks", "photometric", "regularizers"}
