"""Crash-safe checkpoint writes.

Why not Lightning's default: ``TorchCheckpointIO`` goes through an fsspec transaction, which
moves a temp file into place but never ``fsync``s it, so after a power loss or ``kill -9`` at
the wrong moment the new ``last.ckpt`` can be a zero-length or truncated file. Here the bytes
are written to a temp file *in the same directory*, flushed and fsync'ed, then
``os.replace``d over the target (atomic on POSIX), and the directory entry is fsync'ed too.
Either the old or the new checkpoint is on disk, never half of one.

Use it from yaml::

    trainer:
      plugins:
        - class_path: callbacks.atomic_checkpoint.AtomicCheckpointIO
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote URLs keep Lightning's path).

    Loading (``--ckpt_path``) is ``weights_only=True`` unless a caller asks otherwise, so a
    checkpoint from an untrusted source cannot run code even where torch's own default differs
    (e.g. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``); our checkpoints hold only tensors and plain types.
    """

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Optional[Any] = lambda storage, loc: storage,
        weights_only: Optional[bool] = None,
    ) -> dict[str, Any]:
        weights_only = True if weights_only is None else weights_only
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO.save_checkpoint got storage_options={storage_options!r}; it takes none."
            )
        fs = get_filesystem(path)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        if "file" not in protocols:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
