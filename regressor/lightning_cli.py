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
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI


class RegressorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from callbacks.prediction_writer import MeshPredictionWriter

        # Silently skipped when either side has no ``image_size`` (e.g. critic configs).
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="instantiate")
        parser.add_lightning_class_args(MeshPredictionWriter, "prediction_writer")


def run_lightning_cli(argv: list[str], run: bool = True) -> LightningCLI:
    return RegressorCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
