"""Typed fitting configs: ``configs/fitting/*.yaml`` read through jsonargparse into ``FittingConfig``.

A fitting yaml is a ``FittingFile``: the keys of ``FittingConfig`` (all optional) plus

* ``base``: another fitting yaml (path relative to this file) whose effective config this file
  starts from; every key this file sets replaces the base's value (lists replace whole);
* ``extra_stages``: stages appended after the (inherited or stated) ``stages``.

jsonargparse checks every key and type, so a misspelled key (``stagez``, a stage's ``step``) is an
error naming it, and ``FitStage`` checks its parameter groups and steps.

**The schedule lives in one place.** The calibrated stages (``rigid``, ``shape``, ``appearance``)
are written only in ``configs/fitting/no_critic.yaml``, the calibrated baseline they were chosen
for (docs/results/fitting_calibration.md); ``default.yaml`` is ``base: no_critic.yaml`` plus the
critic term and the ``perceptual`` stage (``extra_stages``); ``default_224.yaml`` is
``base: default.yaml`` at 224 px. ``regressor.fitting.default_stages`` (the ``fit_images``
default) reads ``default.yaml`` too. Why the yaml and not a Python default: the schedule is a
calibrated, documented artefact that the configs reference and ``regressor optimize`` runs as
written, so a reader sees the numbers in the file they pass; Python only holds the schema.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from regressor.assets import default_config, resolve_shipped

#: the ``FaceParams`` fields a stage may optimise (``regressor.fitting.DEFAULT_LEARNING_RATES`` has one rate each)
PARAM_GROUPS = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "camera", "albedo", "light")


@dataclass
class FitStage:
    """One stage of the coarse-to-fine schedule.

    Attributes:
        name: label for logs and plots.
        steps: Adam steps in this stage.
        optimize: ``FaceParams`` field names optimised in this stage (``PARAM_GROUPS``).
        weights: loss label -> multiplier of the stack's configured weight; absent labels are off.
        lr_scale: multiplies every group's learning rate (``regressor.fitting.DEFAULT_LEARNING_RATES``).
    """

    name: str
    steps: int
    optimize: list[str]
    weights: dict[str, float]
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.optimize) - set(PARAM_GROUPS))
        if unknown:
            raise ValueError(f"fitting stage '{self.name}': unknown parameter groups {unknown}; known: {PARAM_GROUPS}")
        if self.steps < 0:
            raise ValueError(f"fitting stage '{self.name}': steps must be >= 0, got {self.steps}")


#: one stage of the schedule: ``{name, steps, optimize, weights, lr_scale}`` (``FitStage``)
StageConfig = FitStage

#: ``configs/fitting/default.yaml``, package data (``regressor.assets``), so also in an installed wheel
DEFAULT_FITTING_CONFIG = default_config("fitting/default.yaml")
CONFIG_DIR = DEFAULT_FITTING_CONFIG.parent


@dataclass
class FittingConfig:
    """The effective config of one fit (``regressor optimize``, ``benchmarks.fitting``).

    Attributes:
        losses: the loss stack, ``{name, weight, **term arguments}`` (``regressor.losses.LossStack``).
        stages: the coarse-to-fine schedule, run in order.
        image_size: crop and render size of the fit.
        batch_size: images fitted together (no cross-talk between them).
        face_model: ``FaceModel`` arguments (``{}`` = the built-in stand-in).
        renderer: ``Renderer`` arguments.
        learning_rates: per-group Adam rates overriding ``regressor.fitting.DEFAULT_LEARNING_RATES``.
    """

    losses: list[dict[str, Any]]
    stages: list[StageConfig]
    image_size: int = 128
    batch_size: int = 8
    face_model: dict[str, Any] = field(default_factory=dict)
    renderer: dict[str, Any] = field(default_factory=dict)
    learning_rates: Optional[dict[str, float]] = None

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form the fitting entry points take (``config["stages"]`` as dicts)."""
        return asdict(self)


@dataclass
class FittingFile:
    """What one fitting yaml may say: ``FittingConfig``'s keys (unset = inherited) plus ``base``/``extra_stages``."""

    base: Optional[str] = None
    extra_stages: list[StageConfig] = field(default_factory=list)
    losses: Optional[list[dict[str, Any]]] = None
    stages: Optional[list[StageConfig]] = None
    image_size: Optional[int] = None
    batch_size: Optional[int] = None
    face_model: Optional[dict[str, Any]] = None
    renderer: Optional[dict[str, Any]] = None
    learning_rates: Optional[dict[str, float]] = None


def _parse(schema: type, content: dict[str, Any], source: str):
    """``content`` checked and instantiated as ``schema`` by jsonargparse; errors name the key and ``source``."""
    import jsonargparse

    parser = jsonargparse.ArgumentParser(exit_on_error=False, default_env=False)
    parser.add_class_arguments(schema, "config")
    try:
        parsed = parser.parse_object({"config": content})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
        return instantiate(parsed).config
    except jsonargparse.ArgumentError as error:
        raise ValueError(f"fitting config {source}: {error}".replace("Group 'config' does not accept option",
                                                                       "unknown key")) from None


def _read_file(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The effective config of ``path`` as a dict (``base`` resolved, ``extra_stages`` appended)."""
    from omegaconf import OmegaConf

    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"fitting config {path} does not exist (see configs/fitting/)")
    if path in seen:
        raise ValueError(f"fitting config {path}: 'base' chain loops ({' -> '.join(str(p) for p in seen)})")
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    if not isinstance(content, dict):
        raise ValueError(f"fitting config {path}: expected a mapping of keys, got {type(content).__name__}")
    file = _parse(FittingFile, content, str(path))
    effective = _read_file(path.parent / file.base, seen + (path,)) if file.base else {}
    for item in fields(FittingConfig):
        if item.name in content:
            value = getattr(file, item.name)
            effective[item.name] = [asdict(s) for s in value] if item.name == "stages" else copy.deepcopy(value)
    if file.extra_stages:
        effective["stages"] = effective.get("stages", []) + [asdict(s) for s in file.extra_stages]
    return effective


def load_fitting_config(path: str | Path = DEFAULT_FITTING_CONFIG) -> FittingConfig:
    """The typed, effective ``FittingConfig`` of a fitting yaml: ``path`` as given (relative to the working
    directory), or the shipped one it names (``configs/fitting/default.yaml`` outside the repository)."""
    effective = _read_file(resolve_shipped(path), ())
    for key in ("losses", "stages"):
        if key not in effective:
            raise KeyError(f"fitting config {path} has no '{key}' section (set it, or 'base' a file that does)")
    return _parse(FittingConfig, effective, str(path))


def load_config(path: str | Path) -> dict[str, Any]:
    """``load_fitting_config`` as the plain dict ``fit_images`` callers index (``config["stages"]``, ...)."""
    return load_fitting_config(path).to_dict()
