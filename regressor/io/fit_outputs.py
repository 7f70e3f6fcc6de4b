"""What ``regressor optimize`` writes per photo, at the photo's own resolution (no Lightning).

For a photo ``<name>`` (its file stem):

* ``<name>.obj``, ``<name>.npz``, ``<name>_render.png``: as ``write_reconstruction`` (the npz
  also holds ``now_landmarks3d`` (7,3) and ``landmarks3d`` (68,3), metres);
* the npz's provenance keys: ``source_image`` (file name), ``source_sha1`` (of its bytes),
  ``source_box`` ``[x0, y0, x1, y1]`` (the crop, source pixels), ``source_landmarks`` (68,2 source
  pixels, NaN = invisible) and ``landmark_source``; they tie every output to the photo it was
  fitted to;
* ``<name>_overlay.png``: the photo, at its own size, with the grey shaded render of the fit
  blended over it (``OVERLAY_ALPHA``), re-rendered at the crop's source resolution (not an
  upscaled 128-px render);
* ``<name>_panel.png``: ``input | shaded | overlay`` side by side, each at the photo's size;
* ``<name>_albedo.png``: the fitted albedo, unlit (ambient white light), at the fitting size.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image

from regressor.data.crop import CropBox
from regressor.data.fit_folder import FitSample
from regressor.data.image_io import load_image
from regressor.io.reconstruction import output_stem, write_reconstruction

OVERLAY_ALPHA = 0.6
MAX_RENDER_SIZE = 2048  # the re-render for the overlay is capped at this side (then resampled)


def write_fit_outputs(out: Path, samples: list[FitSample], result, face_model, renderer) -> None:
    """Write every output of a fitted batch; ``result`` is a ``Reconstruction`` of the crops."""
    write_reconstruction(result, out, names=[s.name for s in samples])
    for i, sample in enumerate(samples):
        stem = output_stem(sample.name, f"face_{i:03d}")
        _add_provenance(out / f"{stem}.npz", sample, result.mesh[i : i + 1])
        photo = torch.from_numpy(load_image(sample.image_path)).permute(2, 0, 1).float() / 255.0
        shaded, mask = render_on_photo(result.params[i : i + 1], sample.box, photo.shape[-2:], face_model, renderer)
        overlaid = photo * (1 - OVERLAY_ALPHA * mask) + shaded * OVERLAY_ALPHA * mask
        save_image(overlaid, out / f"{stem}_overlay.png")
        save_image(torch.cat([photo, shaded.expand(3, -1, -1) * mask, overlaid], dim=-1), out / f"{stem}_panel.png")
        with torch.no_grad():
            albedo = renderer(result.mesh[i : i + 1], result.params.camera[i : i + 1],
                              albedo=face_model.albedo(result.params.albedo[i : i + 1])).albedo_shaded
        save_image(albedo[0].clamp(0, 1), out / f"{stem}_albedo.png")


def _add_provenance(path: Path, sample: FitSample, mesh) -> None:
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays.update(
        now_landmarks3d=mesh.now_landmarks3d[0].detach().float().cpu().numpy(),
        landmarks3d=mesh.landmarks3d[0].detach().float().cpu().numpy(),
        source_image=np.array(sample.image_path.name), source_sha1=np.array(sample.sha1),
        source_box=sample.box.as_array(), source_landmarks=sample.source_landmarks,
        landmarks_valid=sample.landmarks_valid.numpy(), landmark_source=np.array(sample.landmark_source),
    )
    np.savez(path, **arrays)


@torch.no_grad()
def render_on_photo(params, box: CropBox, photo_hw, face_model, renderer) -> tuple[Tensor, Tensor]:
    """(shaded (1,H,W), mask (1,H,W)) of the fit in the photo's pixels (zero outside the crop box).

    The weak-perspective camera is defined in the crop's normalised coordinates, so rendering the
    same parameters at the box's source resolution and resampling into the photo is exact up to
    one bilinear interpolation.
    """
    from regressor.render import Renderer

    height, width = int(photo_hw[0]), int(photo_hw[1])
    size = int(min(max(math.ceil(box.size), 16), MAX_RENDER_SIZE))
    big = Renderer(image_size=size, backend=renderer.backend, light_direction=renderer.light_direction,
                   ambient=renderer.ambient, cull_backfaces=renderer.cull_backfaces)
    mesh = face_model(params)
    renders = big(mesh, params.camera)
    # photo pixels covered by the box (the rest stays 0)
    x0, y0 = max(math.floor(box.x0), 0), max(math.floor(box.y0), 0)
    x1, y1 = min(math.ceil(box.x0 + box.size), width), min(math.ceil(box.y0 + box.size), height)
    shaded, mask = torch.zeros(1, height, width), torch.zeros(1, height, width)
    if x1 <= x0 or y1 <= y0:
        return shaded, mask
    xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - box.x0) / box.size * 2 - 1
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - box.y0) / box.size * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, h, w, 2) as (x, y)
    stacked = torch.cat([renders.shaded, renders.mask], dim=1).float().cpu()
    sampled = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    shaded[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1] = sampled[:1], sampled[1:].clamp(0, 1)
    return shaded, mask
