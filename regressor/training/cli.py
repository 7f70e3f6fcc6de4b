"""LightningCLI wiring for ``regressor fit|validate|test|predict --config <yaml>``.

Both the model and the data module are given by ``class_path``/``init_args`` in the yaml
(``subclass_mode``), so the same entry point trains the regressor and the critic, and
jsonargparse is our config registry: any typed constructor argument is yaml-configurable.

Additions to the stock LightningCLI:

* ``image_size`` is set once, on the data module: when both the data module and the model
  have an ``image_size``, the model's is taken from the data module at instantiation.
* ``face_model`` is declared once, at the top level of the config (a ``FaceModelProtocol``
  ``class_path``/``init_args``; absent = the built-in stand-in), and linked into the model and the
  data module, so the regressor, the critic and their synthetic faces share one face model::

      face_model:
        class_path: regressor.face_model.FaceModel
        init_args: {model_path: /data/flame/generic_model.pkl, n_shape: 100}

* Keys from before the typed components (``backbone``, ``n_shape`` ..., dict-valued ``encoder``,
  ``renderer``, ``face_model_path``) are refused with an error naming the new key
  (``check_old_config_keys``).
* ``prediction_writer``: a ``MeshPredictionWriter`` config group, so ``predict`` writes
  ``<name>.obj``/``.npz``/``_render.png`` per image into ``--prediction_writer.output_dir``.
  Predicting on a folder of images::

      regressor predict --config configs/regressor/quickstart.yaml \\
          --ckpt_path outputs/quickstart/checkpoints/last.ckpt \\
          --data.init_args.predict_dir my_faces/ --prediction_writer.output_dir my_meshes/

* ``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of the ModelCheckpoint.
* A config that names a class by its path before the architecture step (2026-11-30), e.g.
  ``regressor.modules.regression.RegressorModule``, is refused with an error naming the new path.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI


# class_path strings that moved in the architecture step: old -> new.
MOVED_CLASS_PATHS = {
    "regressor.modules.regression.RegressorModule": "regressor.training.regression.RegressorModule",
    "regressor.modules.critic.CriticModule": "regressor.training.critic.CriticModule",
    "regressor.data.datamodule.FaceDataModule": "regressor.training.datamodule.FaceDataModule",
    "regressor.data.critic_data.CriticDataModule": "regressor.training.critic_data.CriticDataModule",
}


class MovedClassPathError(ValueError):
    """A config names a class by a path that moved; the message gives the new one."""


class OldConfigKeyError(ValueError):
    """A config uses a key from before the typed components; the message names the new key."""


def _config_texts(argv: list[str]) -> list[tuple[str, str]]:
    """(where, text) for every ``--config`` file and every plain argument in ``argv``."""
    texts = []
    for i, arg in enumerate(argv):
        path = None
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is not None and Path(path).is_file():
            texts.append((path, Path(path).read_text(encoding="utf-8", errors="replace")))
        texts.append(("the command line", arg))
    return texts


def check_moved_class_paths(argv: list[str]) -> None:
    """Raise ``MovedClassPathError`` when a config or argument uses a class path from before the architecture step."""
    for where, text in _config_texts(argv):
        for old, new in MOVED_CLASS_PATHS.items():
            if old in text:
                raise MovedClassPathError(f"{where}: class_path {old!r} has moved; use {new!r} (see docs/architecture.md)")


REGRESSOR = "regressor.training.regression.RegressorModule"
ENCODER = "model.init_args.encoder: {class_path: regressor.models.encoder.FaceEncoder, init_args: {%s}}"
FACE_MODEL = "the top-level face_model: {class_path: regressor.face_model.FaceModel, init_args: {%s}}"
# init_args keys replaced by typed components: old key -> (classes it applies to, where it went).
OLD_INIT_ARGS = {
    "backbone": ((REGRESSOR,), ENCODER % "backbone: ..."),
    "n_shape": ((REGRESSOR,), FACE_MODEL % "n_shape: ..."),
    "n_expression": ((REGRESSOR,), FACE_MODEL % "n_expression: ..."),
    "n_albedo": ((REGRESSOR,), FACE_MODEL % "n_albedo: ..."),
    "face_model_path": (("regressor.training.critic.CriticModule", "regressor.training.critic_data.CriticDataModule"),
                        FACE_MODEL % "model_path: ..."),
}
TYPED_COMPONENTS = {
    "encoder": ENCODER,
    "renderer": "model.init_args.renderer: {class_path: regressor.render.Renderer, init_args: {%s}}",
    "face_model": FACE_MODEL,
}


def _old_key_message(where: str, section: str, class_path: str, key: str, value: Any) -> Optional[str]:
    """The error for ``<section>.init_args.<key>: value`` of class ``class_path``, or None when the key is current."""
    if class_path == REGRESSOR and key in TYPED_COMPONENTS and isinstance(value, dict) and "class_path" not in value:
        inner = ", ".join(f"{k}: {v!r}" for k, v in value.items())
        return (f"{where}: {section}.init_args.{key} is a plain dict ({value}); components are typed now: write "
                + TYPED_COMPONENTS[key] % inner)
    if key == "face_model" and value is not None:
        return f"{where}: {section}.init_args.face_model is declared once now: move it to " + FACE_MODEL % "..."
    if key in OLD_INIT_ARGS and class_path in OLD_INIT_ARGS[key][0]:
        return f"{where}: {section}.init_args.{key} has moved; write it in " + OLD_INIT_ARGS[key][1]
    return None


def check_old_config_keys(argv: list[str]) -> None:
    """Raise ``OldConfigKeyError`` when a config file or argument uses a key from before the typed components."""
    classes: dict[str, str] = {}
    entries: list[tuple[str, str, str, Any]] = []  # (where, section, key, value)
    joined: list[str] = []  # "--key value" as "--key=value"
    for arg in argv:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and not arg.startswith("--"):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    for where, text in _config_texts(joined):
        if where == "the command line":
            match = re.match(r"--(model|data)(?:\.init_args)?(?:\.(\w+))?(?:=(.*))?$", text)
            if match and match.group(2) is None and match.group(3):
                classes[match.group(1)] = match.group(3)  # --model=ClassPath
            elif match and match.group(2) == "class_path" and match.group(3):
                classes[match.group(1)] = match.group(3)
            elif match and match.group(2):
                try:
                    value = yaml.safe_load(match.group(3)) if match.group(3) is not None else None
                except yaml.YAMLError:
                    value = match.group(3)
                entries.append((where, match.group(1), match.group(2), value))
            continue
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # jsonargparse reports unreadable yaml
        for section in ("model", "data"):
            block = config.get(section) if isinstance(config, dict) else None
            if not isinstance(block, dict):
                continue
            if block.get("class_path"):
                classes[section] = block["class_path"]
            for key, value in (block.get("init_args") or {}).items():
                entries.append((where, section, key, value))
    for where, section, key, value in entries:
        message = _old_key_message(where, section, classes.get(section, ""), key, value)
        if message:
            raise OldConfigKeyError(message)


def typed_hyperparameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """A ``RegressorModule`` checkpoint's hyper-parameters with the pipeline in the typed form: those
    written before the typed components (``backbone``, sizes, kwargs dicts) are translated, so
    ``--ckpt_path`` works with checkpoints of either age."""
    from regressor.pipeline import LEGACY_SIZE_KEYS, pipeline_specs

    hparams = dict(hparams)
    legacy = {key: hparams.pop(key) for key in LEGACY_SIZE_KEYS if key in hparams}
    if hparams.get("_class_path", REGRESSOR) != REGRESSOR or not legacy:
        return {**hparams, **legacy}
    specs = pipeline_specs(hparams.get("image_size", 64), hparams.get("encoder"), hparams.get("face_model"),
                           hparams.get("renderer"), **{k: v for k, v in legacy.items() if v is not None})
    hparams.update(encoder=specs["encoder"], renderer=specs["renderer"], face_model=specs["face_model"])
    return hparams


class RegressorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from callbacks.prediction_writer import MeshPredictionWriter
        from regressor.face_model.protocol import FaceModelProtocol

        # Silently skipped when either side has no ``image_size`` (e.g. critic configs).
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="instantiate")
        parser.add_argument("--face_model", type=Optional[FaceModelProtocol], default=None,
                            help="the one face model of this config (class_path/init_args), linked into the model "
                                 "and the data module; default: the built-in stand-in")
        # Linked at parse time: each side builds its own instance (the model's moves to the GPU with it,
        # the data module's stays on the CPU for DataLoader workers).
        parser.link_arguments("face_model", "model.init_args.face_model", apply_on="parse")
        parser.link_arguments("face_model", "data.init_args.face_model", apply_on="parse")
        parser.add_lightning_class_args(MeshPredictionWriter, "prediction_writer")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's, minus the link targets (``face_model``, ``image_size``): they stay the config's,
        and minus derived records (``critic_config``: what exported critic files read), which are no
        ``__init__`` argument and would make a critic's ``--ckpt_path`` resume fail to parse."""
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = typed_hyperparameters(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {}))
        for key in ("_instantiator", "face_model", "image_size", "critic_config"):
            hparams.pop(key, None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        given = _flat_settings(self.config[self.config.subcommand].get("model"))
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise
        warn_replaced_settings(ckpt_path, given, _flat_settings(self.config[self.config.subcommand].get("model")))


def _flat_settings(node: Any, prefix: str = "model") -> dict[str, Any]:
    """Dotted ``model.*`` keys -> leaf values of a parsed model config (Namespace or dict)."""
    if hasattr(node, "as_dict"):
        node = node.as_dict()
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_flat_settings(value, f"{prefix}.{key}"))
    return out


def warn_replaced_settings(ckpt_path: str, given: dict[str, Any], resumed: dict[str, Any]) -> list[str]:
    """Warn about every model setting of the config or command line that ``--ckpt_path`` replaced.

    Why: LightningCLI resumes with the model hyperparameters stored in the checkpoint, over the config and
    the command line, so ``--model...`` overrides given with ``--ckpt_path`` are silently ignored. Returns
    the replaced keys."""
    replaced = sorted(key for key in given if key in resumed and resumed[key] != given[key]
                      or key not in resumed and given[key] is not None)
    if replaced:
        shown = "; ".join(f"{key}: {given[key]!r} -> {resumed.get(key, '(not in the checkpoint)')!r}"
                          for key in replaced[:12])
        more = f" and {len(replaced) - 12} more" if len(replaced) > 12 else ""
        warnings.warn(f"--ckpt_path {ckpt_path}: the model resumes with the checkpoint's hyperparameters, which "
                      f"replace these settings of the config or command line: {shown}{more}. To resume with other "
                      "settings, change them under 'hyper_parameters' in a copy of the checkpoint; to start a new "
                      "run from its weights, use the model's init_checkpoint instead.", UserWarning, stacklevel=2)
    return replaced


class _ParseOnlyCLI(RegressorCLI):
    """``RegressorCLI`` that parses and validates a config (class paths imported, arguments type-checked,
    links applied) but builds nothing."""

    def instantiate_classes(self) -> None:
        pass


def parse_lightning_config(argv: list[str]):
    """The parsed config of ``--config <yaml> [overrides]`` (no subcommand), validated as ``fit`` would
    read it, without building the model, the data or the trainer; raises on an invalid config."""
    check_moved_class_paths(argv)
    check_old_config_keys(argv)
    with warnings.catch_warnings():  # called from Python while sys.argv holds the caller's own arguments
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = _ParseOnlyCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                            subclass_mode_data=True, args=argv, run=False,
                            parser_kwargs={"exit_on_error": False})
    return cli.config


def run_lightning_cli(argv: list[str], run: bool = True) -> LightningCLI:
    check_moved_class_paths(argv)
    check_old_config_keys(argv)
    return RegressorCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
