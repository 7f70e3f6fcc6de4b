"""Write one mesh, one parameter file and one overlay picture per reconstructed image (no Lightning).

For an input named ``<name>`` (its file stem) ``write_reconstruction`` produces, in ``output_dir``:
``<name>.obj`` (pytorch3d ``save_obj``, metres, model space), ``<name>.npz`` (every
``FaceParams`` field without the batch dimension, plus ``now_landmarks3d`` (7, 3) metres, the
NoW alignment landmarks, so that ``regressor evaluate`` needs nothing else) and ``<name>_render.png`` (the grey
shaded render blended over the input). Used by ``regressor optimize`` and by the Lightning
``MeshPredictionWriter`` callback.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from pytorch3d.io import save_obj
from torchvision.utils import save_image

from regressor.io.visuals import overlay

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
        params["now_landmarks3d"] = result.mesh.now_landmarks3d[i].detach().float().cpu().numpy()
        np.savez(out / f"{stem}.npz", **params)
        if result.images is not None:
            picture = overlay(result.images[i : i + 1].float(), result.renders.shaded[i : i + 1].float(), result.renders.mask[i : i + 1].float())
        else:
            picture = result.renders.shaded[i : i + 1].float().expand(-1, 3, -1, -1)
        save_image(picture.detach().cpu().clamp(0, 1), out / f"{stem}_render.png")
        written.append(out / f"{stem}.obj")
    return written
