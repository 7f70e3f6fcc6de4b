"""The shipped regressor file: a plain dict that ``torch.load(weights_only=True)`` reads.

Why not the Lightning ``.ckpt``: it carries optimiser state (3x the weights), and its
hyper-parameters are tied to the training module's signature, which may change. This file
holds only what inference needs, and stores large weight tensors as int8 with one fp32 scale
per output channel (symmetric), which keeps a resnet18 regressor under 20 MB. Loading
dequantizes to fp32; ``benchmarks.regression`` reports the shipped figures *from this file*.

Layout::

    {"format": "face-psl-regressor", "version": 1,
     "pipeline": {backbone, n_shape, n_expression, n_albedo, image_size, encoder, face_model, renderer},
     "tensors": {name: fp32/int tensor}, "quantized": {name: {"q": int8, "scale": fp32 (C,1,...)}},
     "metadata": {...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "face-psl-regressor"
VERSION = 1
QUANTIZE_MIN_ELEMENTS = 4096  # small tensors (norms, biases, heads' last layers) stay fp32


class RegressorFileError(ValueError):
    """A file that is not an exported regressor, or whose weights do not fit its description."""


def quantize(weight: Tensor) -> dict[str, Tensor]:
    """Symmetric int8 per output channel (dim 0)."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(weight.shape)
    return {"q": q, "scale": scale.reshape(-1, *([1] * (weight.dim() - 1)))}


def dequantize(entry: dict[str, Tensor]) -> Tensor:
    return entry["q"].float() * entry["scale"]


def export_regressor(state_dict: dict[str, Tensor], pipeline: dict[str, Any], path: str | Path,
                     metadata: dict[str, Any] | None = None, quantized: bool = True) -> Path:
    """Write pipeline weights (``ReconstructionPipeline.state_dict()`` keys) and their description."""
    tensors, packed = {}, {}
    for name, value in state_dict.items():
        if quantized and value.is_floating_point() and value.dim() >= 2 and value.numel() >= QUANTIZE_MIN_ELEMENTS:
            packed[name] = quantize(value)
        else:
            tensors[name] = value.detach().cpu().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, "pipeline": dict(pipeline), "tensors": tensors,
                "quantized": packed, "metadata": dict(metadata or {})}, tmp)
    tmp.replace(path)
    return path


def is_regressor_file(checkpoint: dict[str, Any]) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def read_regressor_file(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(pipeline description, fp32 state dict) of a loaded exported file."""
    if checkpoint.get("version") != VERSION:
        raise RegressorFileError(f"{path}: exported regressor version {checkpoint.get('version')!r}, "
                                 f"this code reads version {VERSION}")
    for key in ("pipeline", "tensors", "quantized"):
        if not isinstance(checkpoint.get(key), dict):
            raise RegressorFileError(f"{path}: exported regressor lacks '{key}'")
    state = dict(checkpoint["tensors"])
    state.update({name: dequantize(entry) for name, entry in checkpoint["quantized"].items()})
    return checkpoint["pipeline"], state
