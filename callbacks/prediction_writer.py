"""Write one mesh, one parameter file and one overlay picture per predicted image.

For an input named ``<name>`` (its file stem) the writer produces, in ``output_dir``:
``<name>.obj`` (pytorch3d ``save_obj``, metres, model space), ``<name>.npz`` (every
``FaceParams`` field without the batch dimension) and ``<name>_render.png`` (the grey
shaded render blended over the input).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch3d.io import save_obj
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_warn
from torchvision.utils import save_image

from callbacks.visuals import overlay

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_stem(name: Optional[str], fallback: str) -> str:
    """File stem for a sample: the input's stem with unsafe characters replaced."""
    if not name:
        return fallback
    stem = Path(str(name)).stem or fallback
    return _UNSAFE.sub("_", stem)


def write_reconstruction(result: Any, output_dir: str | Path, names: Sequence[Optional[str]] | None = None, fallback_prefix: str = "face") -> list[Path]:
    """Write ``.obj``/``.npz``/``_render.png`` for every sample of a ``Reconstruction``; returns the .obj paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names if names is not None else (result.names or []))
    batch_size = result.mesh.vertices.shape[0]
    faces = result.mesh.faces.detach().cpu()
    written = []
    for i in range(batch_size):
        stem = output_stem(names[i] if i < len(names) else None, f"{fallback_prefix}_{i:03d}")
        save_obj(out / f"{stem}.obj", result.mesh.vertices[i].detach().float().cpu(), faces)
        params = {key: value[i].detach().float().cpu().numpy() for key, value in result.params.items()}
        np.savez(out / f"{stem}.npz", **params)
        if result.images is not None:
            picture = overlay(result.images[i : i + 1].float(), result.renders.shaded[i : i + 1].float(), result.renders.mask[i : i + 1].float())
        else:
            picture = result.renders.shaded[i : i + 1].float().expand(-1, 3, -1, -1)
        save_image(picture.detach().cpu().clamp(0, 1), out / f"{stem}_render.png")
        written.append(out / f"{stem}.obj")
    return written


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
