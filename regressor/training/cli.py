"""LightningCLI wiring for ``regressor fit|validate|test|predict --config <yaml>``.

Both the model and the data module are given by ``class_path``/``init_args`` in the yaml
(``subclass_mode``), so the same entry point trains the regressor and the critic, and
jsonargparse is our config registry: any typed constructor argument is yaml-configurable.

Additions to the stock LightningCLI:

* ``image_size`` is set once, on the data module: when both the data module and the model
  have an ``image_size``, the model's is taken from the data module at instantiation.
* ``prediction_writer``: a ``MeshPredictionWriter`` config group, so ``predict`` writes
  ``<name>.obj``/``.npz``/``_render.png`` per image into ``--prediction_writer.output_dir``.
  Predicting on a folder of images::

      regressor predict --config configs/regressor/quickstart.yaml \\
          --ckpt_path outputs/quickstart/checkpoints/last.ckpt \\
          --data.init_args.predict_dir my_faces/ --prediction_writer.output_dir my_meshes/

* ``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of the ModelCheckpoint.
* A config that names a class by its path before the architecture step (issue 14), e.g.
  ``regressor.modules.regression.RegressorModule``, is refused with an error naming the new path.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI


# class_path strings that moved in the architecture step (issue 14): old -> new.
MOVED_CLASS_PATHS = {
    "regressor.modules.regression.RegressorModule": "regressor.training.regression.RegressorModule",
    "regressor.modules.critic.CriticModule": "regressor.training.critic.CriticModule",
    "regressor.data.datamodule.FaceDataModule": "regressor.training.datamodule.FaceDataModule",
    "regressor.data.critic_data.CriticDataModule": "regressor.training.critic_data.CriticDataModule",
}


class MovedClassPathError(ValueError):
    """A config names a class by a path that moved; the message gives the new one."""


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
    """Raise ``MovedClassPathError`` when a config or argument uses a class path from before issue 14."""
    for where, text in _config_texts(argv):
        for old, new in MOVED_CLASS_PATHS.items():
            if old in text:
                raise MovedClassPathError(f"{where}: class_path {old!r} has moved; use {new!r} (see docs/architecture.md)")


class RegressorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from callbacks.prediction_writer import MeshPredictionWriter

        # Silently skipped when either side has no ``image_size`` (e.g. critic configs).
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="instantiate")
        parser.add_lightning_class_args(MeshPredictionWriter, "prediction_writer")


def run_lightning_cli(argv: list[str], run: bool = True) -> LightningCLI:
    check_moved_class_paths(argv)
    return RegressorCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
