"""TensorBoard image grids of what the regressor currently reconstructs.

One row per sample: ``input | albedo render | grey shaded render | overlay | landmarks``
(predicted red, target green). Written every ``every_n_steps`` training steps and for the
first validation batch of each validation run. The callback re-runs the model on a few
images under ``no_grad`` in eval mode instead of keeping the step's renders alive, so
training memory does not depend on whether a grid is due.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from regressor.io.visuals import reconstruction_panels
from regressor.types import FaceBatch

PANELS_PER_SAMPLE = 5


class ImageGridLogger(pl.Callback):
    """Args:
        every_n_steps: training steps between grids (0 disables the training grids).
        max_images: samples (rows) per grid.
        log_validation: also log the first validation batch of every validation run.
        save_dir: if set, grids are also written there as png (e.g. for the README).
    """

    def __init__(
        self, every_n_steps: int = 100, max_images: int = 4, log_validation: bool = True, save_dir: Optional[str] = None
    ) -> None:
        super().__init__()
        if every_n_steps < 0 or max_images < 1:
            raise ValueError(f"every_n_steps must be >= 0 and max_images >= 1, got {every_n_steps}, {max_images}")
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.log_validation = log_validation
        self.save_dir = save_dir

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            self._log(trainer, pl_module, batch, tag="train/reconstruction", step=step)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.log_validation and batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking and trainer.is_global_zero:
            self._log(trainer, pl_module, batch, tag="val/reconstruction", step=trainer.global_step)

    @torch.no_grad()
    def grid(self, pl_module: pl.LightningModule, batch: Any) -> torch.Tensor:
        """(3, H', W') grid image for the first ``max_images`` samples of ``batch``."""
        face_batch = FaceBatch.from_dict(batch)
        images = face_batch.image[: self.max_images]
        was_training = pl_module.training
        pl_module.eval()
        try:
            result = pl_module.reconstruct(images)
        finally:
            pl_module.train(was_training)
        panels = reconstruction_panels(images, result.renders, face_batch.landmarks[: self.max_images])
        return make_grid(panels, nrow=PANELS_PER_SAMPLE, padding=2, pad_value=1.0)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, tag: str, step: int) -> None:
        grid = self.grid(pl_module, batch).cpu()
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, global_step=step)
        if self.save_dir:
            out = Path(self.save_dir)
            out.mkdir(parents=True, exist_ok=True)
            save_image(grid, out / f"{tag.replace('/', '_')}_step{step:07d}.png")
