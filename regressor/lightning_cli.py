"""LightningCLI wiring for ``regressor fit|validate|test|predict --config <yaml>``.

Both the model and the data module are given by ``class_path``/``init_args`` in the yaml
(``subclass_mode``), so the same entry point trains the regressor and the critic, and
jsonargparse is our config registry: any typed constructor argument is yaml-configurable.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI


def run_lightning_cli(argv: list[str]) -> LightningCLI:
    return LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
    )
