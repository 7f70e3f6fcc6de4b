"""Plain photos for ``predict``: no landmarks needed.

Each image is cropped, in order of preference, from:

1. its landmark file (same stem, ``.pts``/``.npy``/``.txt``, in ``landmarks_dir``,
   ``root/landmarks``, the ``landmarks/`` beside ``root`` when ``root`` is a face folder's
   ``images/`` (the layout ``regressor synth`` writes), or next to the image): the same crop as
   training; the detector is not consulted for such an image;
2. a box from ``boxes`` (a JSON file ``{"<stem or file name>": [x0, y0, x1, y1], ...}``),
   enlarged by ``box_scale``;
3. a ``landmark_provider`` (e.g. the optional offline detector, ``CachedLandmarkProvider``);
4. the largest centred square of the whole image.

Samples: ``image`` (3,S,S) float [0,1], ``name`` (file stem), ``index``, ``box`` (4,) float32
``[x0, y0, x1, y1]`` of the crop in source pixels (to map results back onto the photo), ``crop``
(``landmarks`` | ``box`` | ``detected`` | ``centre``: how it was cropped).
Unreadable images are skipped and counted: up front where the header shows it, else at load
time, where the sample comes back as None and ``collate_skipping_unreadable`` drops it.

An image the ``landmark_provider`` finds no face in is centre-cropped, logged at DEBUG level and
counted (``no_face_detected``, also inside DataLoader workers); the callers print the count once,
in their summary (``detection_report``), not one warning per image.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from regressor.data.crop import CropBox, box_from_image, box_from_landmarks, box_from_xyxy, crop_image
from regressor.data.image_io import ImageReadError, list_images, load_image_reduced, probe_image
from regressor.data.landmarks_io import LandmarkFileError, find_landmark_file, load_landmarks

log = logging.getLogger(__name__)


def _read_boxes(path: str | Path) -> dict[str, list[float]]:
    path = Path(path)
    try:
        boxes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read boxes file {path}: {error}") from None
    if not isinstance(boxes, dict):
        raise ValueError(f"boxes file {path} must hold a JSON object {{name: [x0, y0, x1, y1]}}")
    for name, box in boxes.items():
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ValueError(f"boxes file {path}: entry {name!r} is {box!r}, expected [x0, y0, x1, y1]")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"boxes file {path}: entry {name!r} {box} is empty (need x1 > x0 and y1 > y0)")
    return boxes


class PredictImageDataset(Dataset):
    """Crops of every image in ``root`` (or ``root/images``) for inference (see module doc)."""

    def __init__(
        self,
        root: str | Path,
        image_size: int = 64,
        landmarks_dir: str | Path | None = None,
        boxes: str | Path | None = None,
        crop_scale: float = 1.6,
        crop_shift_y: float = -0.04,
        box_scale: float = 1.2,
        landmark_provider: Callable[[Path], np.ndarray] | None = None,
    ):
        self.root = Path(root)
        images_dir = self.root / "images" if (self.root / "images").is_dir() else self.root
        self.image_size, self.crop_scale, self.box_scale = int(image_size), crop_scale, box_scale
        self.crop_shift_y = crop_shift_y
        self.landmark_provider = landmark_provider
        self.boxes = _read_boxes(boxes) if boxes is not None else {}
        beside = self.root.parent / "landmarks" if self.root.name == "images" else None  # <face folder>/images given
        self.landmark_dirs = [Path(d) for d in (landmarks_dir, self.root / "landmarks", beside, images_dir) if d is not None]
        self.skipped: Counter = Counter()
        self.paths: list[Path] = []
        self.sizes: list[tuple[int, int]] = []  # (height, width), upright
        self._lazy_failures = torch.zeros(0, dtype=torch.int8)  # per image, set in workers (shared memory)
        self._no_face = torch.zeros(0, dtype=torch.int8)  # per image: the provider found no face (shared memory)
        for path in list_images(images_dir):
            try:
                info = probe_image(path)
                self.paths.append(path)
                self.sizes.append((info.height, info.width))
            except ImageReadError as error:
                self.skipped["unreadable_image"] += 1
                warnings.warn(f"skipping {error}", stacklevel=2)
        if not self.paths:
            raise FileNotFoundError(f"no readable images in {images_dir} ({self.skip_report()})")
        self._lazy_failures = torch.zeros(len(self.paths), dtype=torch.int8).share_memory_()
        self._no_face = torch.zeros(len(self.paths), dtype=torch.int8).share_memory_()

    @property
    def total_skipped(self) -> Counter:
        return self.skipped + Counter({"unreadable_image": int(self._lazy_failures.sum())})

    @property
    def no_face_detected(self) -> int:
        """Images the ``landmark_provider`` found no face in (so far; centre-cropped)."""
        return int(self._no_face.sum())

    def detection_report(self) -> str:
        """One line on the images without a detected face, or "" when there were none."""
        missing = self.no_face_detected
        if not missing:
            return ""
        return (f"predict folder {self.root}: no face detected in {missing} of {len(self)} image(s), centre-cropped "
                "(a landmark file with the same stem, or a --boxes entry, crops it instead)")

    def skip_report(self) -> str:
        counts = self.total_skipped
        total = sum(counts.values())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v)
        return f"predict folder {self.root}: skipped {total} image(s)" + (f" ({detail})" if total else "")

    def __len__(self) -> int:
        return len(self.paths)

    def _box(self, index: int, path: Path, height: int, width: int) -> tuple[CropBox, str]:
        landmark_file = find_landmark_file(path.stem, self.landmark_dirs)
        if landmark_file is not None:
            try:
                landmarks = load_landmarks(landmark_file)
                return box_from_landmarks(landmarks, self.crop_scale, self.crop_shift_y), "landmarks"
            except (LandmarkFileError, ValueError) as error:
                warnings.warn(f"ignoring landmarks of {path.name}: {error}", stacklevel=3)
        box = self.boxes.get(path.stem, self.boxes.get(path.name))
        if box is not None:
            return box_from_xyxy(*box, scale=self.box_scale), "box"
        if self.landmark_provider is not None:
            try:
                return box_from_landmarks(self.landmark_provider(path), self.crop_scale, self.crop_shift_y), "detected"
            except ValueError as error:  # no face: fall back to the whole image; counted, summarised by the caller
                self._no_face[index] = 1
                log.debug("%s: %s; using a centre crop", path.name, error)
        return box_from_image(height, width), "centre"

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.paths[index]
        try:
            box, crop_source = self._box(index, path, *self.sizes[index])
            image, scale = load_image_reduced(path, 2.0 * self.image_size / box.size)
        except ImageReadError as error:
            self._lazy_failures[index] = 1
            warnings.warn(f"skipping {error}", stacklevel=2)
            return None
        crop = crop_image(image, box.scaled(scale), self.image_size)
        return {
            "image": torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0),
            "name": path.stem,
            "index": torch.tensor(index, dtype=torch.long),
            "box": torch.from_numpy(box.as_array()),
            "crop": crop_source,  # landmarks | box | detected | centre: how this image was cropped
        }


def collate_skipping_unreadable(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """``default_collate`` of the samples that loaded; an all-unreadable batch becomes an empty one."""
    kept = [s for s in samples if s is not None]
    if kept:
        return default_collate(kept)
    return {"image": torch.zeros(0, 3, 1, 1), "name": [], "index": torch.zeros(0, dtype=torch.long),
            "box": torch.zeros(0, 4), "crop": []}
