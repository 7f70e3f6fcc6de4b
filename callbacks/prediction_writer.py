"""Lightning callback: write ``.obj``/``.npz``/``_render.png`` per predicted image.

The writing itself is ``regressor.io.reconstruction.write_reconstruction`` (plain PyTorch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_warn

from regressor.io.reconstruction import write_reconstruction


class MeshPredictionWriter(BasePredictionWriter):
    """Lightning prediction writer for ``RegressorModule.predict_step`` outputs (a ``Reconstruction``)."""

    def __init__(self, output_dir: str = "outputs/predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Optional[Sequence[int]],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not hasattr(prediction, "mesh") or not hasattr(prediction, "renders"):
            if batch_idx == 0:
                rank_zero_warn(f"MeshPredictionWriter: predictions of {type(pl_module).__name__} are not reconstructions; nothing written")
            return
        prefix = f"rank{trainer.global_rank}_batch{batch_idx:05d}" if trainer.world_size > 1 else f"batch{batch_idx:05d}"
        write_reconstruction(prediction, self.output_dir, fallback_prefix=prefix)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        if trainer.is_global_zero:
            print(f"predictions written to {Path(self.output_dir).resolve()}")
