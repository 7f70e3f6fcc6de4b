"""Photos for per-image fitting (``regressor optimize``): every sample carries its own identity.

The training dataset (``FaceFolderDataset``) replaces a sample that fails to load by the next
good one, which keeps an epoch going but must never happen when outputs are written under the
sample's name. Here nothing is ever replaced: an image that cannot be used becomes a
``SkippedImage`` (name, reason, detail), and a batch holds only the images that loaded, each
with the name, path, file hash and landmarks it was loaded with (``FitSample``).

``resolve_face_folder`` makes ``DIR`` and ``DIR/images`` the same folder when ``DIR`` is a face
folder (it has ``landmarks/``), so its landmark files are found either way.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from regressor.data.crop import CropBox, box_from_landmarks, crop_image, crop_points
from regressor.data.folder_scan import FaceRecord, SampleSkipped, check_landmarks_fit_image, scan_face_folder
from regressor.data.image_io import ImageReadError, load_image
from regressor.data.landmarks_io import LandmarkFileError
from regressor.types import NUM_LANDMARKS

#: a photo needs at least this many visible landmarks to be fitted
MIN_VISIBLE_LANDMARKS = 6


def resolve_face_folder(path: str | Path) -> Path:
    """The face folder's root: ``DIR/images`` -> ``DIR`` when ``DIR`` holds ``landmarks/`` next to it."""
    path = Path(path)
    if path.name == "images" and (path.parent / "landmarks").is_dir():
        return path.parent
    return path


@dataclass
class FitSample:
    """One photo ready to fit.

    Attributes:
        name: file stem (outputs are written under it); image_path: the file; sha1: of its bytes.
        image: (3, S, S) float [0, 1], the crop; box: the crop in source pixels.
        landmarks: (68, 2) crop pixels, 0 at invisible points; landmarks_valid: (68,) float 1/0.
        source_landmarks: (68, 2) source pixels, NaN at invisible points.
        landmark_source: the landmark file, or ``"detected"``.
        source_size: (H, W) of the photo.
    """

    name: str
    image_path: Path
    sha1: str
    image: Tensor
    box: CropBox
    landmarks: Tensor
    landmarks_valid: Tensor
    source_landmarks: np.ndarray
    landmark_source: str
    source_size: tuple[int, int]


@dataclass
class SkippedImage:
    """An image that was not fitted, and why (``reason``: one of ``folder_scan.SKIP_REASONS``)."""

    name: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "detail": self.detail}


def file_sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class FitFolder:
    """Every image of a folder for fitting, loaded in order, batch by batch (see module doc).

    Args:
        images: a folder of photos, or a face folder (``DIR`` or ``DIR/images``).
        image_size: side of the square crops.
        landmarks_dir: searched first for ``<stem>.pts|.npy|.txt`` (then ``DIR/landmarks``, then
            next to the images).
        landmark_provider: ``provider(path) -> (68, 2)`` for images without a file (raises
            ``ValueError`` when there is no face: the image is skipped as ``no_face_detected``).
        strict: raise at the first unusable image instead of skipping it.
        crop_scale, crop_shift_y: the crop around the visible landmarks (as in training).
    """

    images: str | Path
    image_size: int
    landmarks_dir: str | Path | None = None
    landmark_provider: Callable[[Path], np.ndarray] | None = None
    strict: bool = False
    crop_scale: float = 1.6
    crop_shift_y: float = -0.04
    skipped: list[SkippedImage] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.root = resolve_face_folder(self.images)
        self.records, log = scan_face_folder(
            self.root, split=None, landmarks_dir=self.landmarks_dir, strict=self.strict,
            allow_missing_landmarks=self.landmark_provider is not None, allow_invisible_points=True,
        )
        self.skipped = [SkippedImage(Path(name).stem, reason, detail) for name, reason, detail in log.files]

    def __len__(self) -> int:
        """Images that passed the up-front scan (some may still be skipped while loading)."""
        return len(self.records)

    def batches(self, batch_size: int) -> Iterator[list[FitSample]]:
        """Lists of at most ``batch_size`` loaded samples, in file order; failures go to ``skipped``."""
        batch: list[FitSample] = []
        for record in self.records:
            try:
                batch.append(self.load(record))
            except SampleSkipped as skip:
                if self.strict:
                    raise skip.error from None
                self.skipped.append(SkippedImage(record.name, skip.reason, str(skip.error)))
                warnings.warn(f"skipping {record.image_path.name}: {skip.error}", stacklevel=2)
                continue
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def load(self, record: FaceRecord) -> FitSample:
        """The sample of ``record``; raises ``SampleSkipped`` with the reason when it cannot be used."""
        if record.landmarks is not None:
            points, valid = record.landmarks, record.landmarks_valid
            if valid is None:
                valid = np.isfinite(points).all(axis=1)
            source = str(record.landmark_path)
        else:
            points, valid, source = self._detect(record), np.ones(NUM_LANDMARKS, bool), "detected"
        if int(valid.sum()) < MIN_VISIBLE_LANDMARKS:
            raise SampleSkipped("bad_landmarks", LandmarkFileError(
                source, f"has {int(valid.sum())} visible landmarks, at least {MIN_VISIBLE_LANDMARKS} are needed"))
        box = box_from_landmarks(points[valid], self.crop_scale, self.crop_shift_y)
        try:
            photo = load_image(record.image_path)
        except ImageReadError as error:
            raise SampleSkipped("unreadable_image", error) from None
        crop = crop_image(photo, box, self.image_size)
        crop_landmarks = np.nan_to_num(crop_points(points, box, self.image_size)) * valid[:, None]
        return FitSample(
            name=record.name, image_path=record.image_path, sha1=file_sha1(record.image_path),
            image=torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0), box=box,
            landmarks=torch.from_numpy(crop_landmarks.astype(np.float32)),
            landmarks_valid=torch.from_numpy(valid.astype(np.float32)),
            source_landmarks=np.where(valid[:, None], points, np.nan).astype(np.float32),
            landmark_source=source, source_size=(photo.shape[0], photo.shape[1]),
        )

    def _detect(self, record: FaceRecord) -> np.ndarray:
        try:
            landmarks = np.asarray(self.landmark_provider(record.image_path), dtype=np.float32)
        except ImageReadError as error:
            raise SampleSkipped("unreadable_image", error) from None
        except ValueError as error:  # no face found (NoFaceFoundError is a ValueError)
            raise SampleSkipped("no_face_detected", error) from None
        if landmarks.shape != (NUM_LANDMARKS, 2) or not np.isfinite(landmarks).all():
            raise RuntimeError(f"landmark_provider returned {landmarks.shape} landmarks for {record.image_path}, "
                               "expected finite (68, 2)")
        try:
            check_landmarks_fit_image(landmarks, record.width, record.height, record.image_path)
        except LandmarkFileError as error:
            raise SampleSkipped("landmarks_outside_image", error) from None
        return landmarks


def collate(samples: list[FitSample]) -> dict[str, Tensor | list[str]]:
    """Stack a batch: ``image`` (B,3,S,S), ``landmarks`` (B,68,2), ``landmarks_valid`` (B,68), ``name``."""
    return {
        "image": torch.stack([s.image for s in samples]),
        "landmarks": torch.stack([s.landmarks for s in samples]),
        "landmarks_valid": torch.stack([s.landmarks_valid for s in samples]),
        "name": [s.name for s in samples],
    }
