"""Landmarks for a raw photo on demand: detect once, cache next to the outputs, reuse.

``predict``, ``optimize`` and the folder datasets call :func:`landmarks_for_image` when an image
has no landmark file. The cache layout is the one ``regressor landmarks`` writes, so a folder
produced by that command is a valid cache (and vice versa):

* ``<cache_dir>/<stem>.pts``  the 68 points (iBUG .pts, see ``regressor.data.landmarks_io``);
* ``<cache_dir>/<stem>.json`` the record: source image signature (size, mtime), image size,
  ``num_faces``, ``box``, ``score``. A record with ``num_faces: 0`` caches "no face here" too,
  so a face-less photo is not re-scanned every epoch.

A record is reused only while the image's size and modification time still match it; an
edited image (or a different image with the same stem) is detected again.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regressor.data.crop import CropBox, box_from_landmarks, crop_image, crop_points
from regressor.data.image_io import load_image
from regressor.data.landmarks_io import LandmarkFileError, load_landmarks, save_pts

RECORD_VERSION = 1


class NoFaceFoundError(ValueError):
    """The detector found no face in an image (the caller decides: skip and count, or stop)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        super().__init__(
            f"no face found in {self.path} (dlib's frontal detector needs a roughly frontal face "
            "of at least ~20 px; supply a landmark file for this image instead)"
        )


def source_signature(path: Path) -> dict:
    """What must stay equal for a cached record to still describe ``path``."""
    stat = path.stat()
    return {"image": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_paths(cache_dir: str | os.PathLike, image_path: str | os.PathLike) -> tuple[Path, Path]:
    """(.pts path, .json path) of ``image_path``'s cache entry."""
    stem = Path(image_path).stem
    return Path(cache_dir) / f"{stem}.pts", Path(cache_dir) / f"{stem}.json"


def _write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # pid: DataLoader workers may race
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_cached(image_path: Path, cache_dir: str | os.PathLike) -> tuple[dict, np.ndarray | None] | None:
    """The cached (record, landmarks or None when no face) for ``image_path``, or None if stale/missing."""
    pts_path, json_path = record_paths(cache_dir, image_path)
    if not image_path.is_file():
        return None
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("version") != RECORD_VERSION or record.get("source") != source_signature(image_path):
        return None
    if record.get("num_faces", 0) == 0:
        return record, None
    try:
        return record, load_landmarks(pts_path)
    except LandmarkFileError:
        return None


def detect_and_cache(image_path: str | os.PathLike, cache_dir: str | os.PathLike, detector=None, reuse: bool = True):
    """Detect the largest face in ``image_path`` and write its cache entry.

    Returns:
        (record dict, landmarks (68, 2) float32 or None when no face, image (H, W, 3) uint8 or
        None when the cached entry was reused without reading the image).
    Raises:
        ImageReadError: the image cannot be read (nothing is cached then).
        DetectorUnavailableError: detection is needed but the ``[detect]`` extra is missing.
    """
    image_path = Path(image_path)
    if reuse:
        cached = read_cached(image_path, cache_dir)
        if cached is not None:
            return cached[0], cached[1], None
    if detector is None:
        from regressor.detect.dlib_detector import default_detector

        detector = default_detector()
    image = load_image(image_path)
    detection = detector.detect(image)
    record = {
        "version": RECORD_VERSION,
        "source": source_signature(image_path),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "num_faces": 0,
        "box": None,
        "score": None,
    }
    pts_path, json_path = record_paths(cache_dir, image_path)
    landmarks = None
    if detection is not None:
        record.update(detection.to_json())
        landmarks = detection.landmarks
        save_pts(pts_path, landmarks)
    elif pts_path.exists():
        pts_path.unlink()  # a stale .pts from an older version of this image must not be picked up
    _write_json_atomic(json_path, record)
    return record, landmarks, image


def landmarks_for_image(path: str | os.PathLike, cache_dir: str | os.PathLike, detector=None) -> np.ndarray:
    """(68, 2) float32 landmarks of the largest face in ``path`` (pixels of ``load_image(path)``).

    Detects on first use and caches in ``cache_dir``; later calls read the cache.

    Raises:
        DetectorUnavailableError: no cache entry and the ``[detect]`` extra is not installed.
        NoFaceFoundError: the detector found no face (also cached).
        ImageReadError: the image cannot be read.
    """
    _, landmarks, _ = detect_and_cache(path, cache_dir, detector=detector)
    if landmarks is None:
        raise NoFaceFoundError(path)
    return landmarks


class CachedLandmarkProvider:
    """``provider(image_path) -> (68, 2)``: :func:`landmarks_for_image` bound to one cache folder.

    The shape of ``regressor.data.folder.LandmarkProvider``; picklable, so DataLoader workers get
    their own copy (the dlib models are loaded lazily in each worker, once). Usable from yaml:
    ``landmark_provider: {class_path: regressor.detect.CachedLandmarkProvider, init_args: {cache_dir: ...}}``.

    Args:
        cache_dir: where ``<stem>.pts``/``<stem>.json`` are read and written (e.g. ``<out>/landmarks``).
        detector: a ``FaceDetector`` (or anything with ``detect(image)``); None = the shared default.
    """

    def __init__(self, cache_dir: str | os.PathLike, detector=None):
        self.cache_dir = Path(cache_dir)
        self.detector = detector

    def __call__(self, image_path: str | os.PathLike) -> np.ndarray:
        return landmarks_for_image(image_path, self.cache_dir, detector=self.detector)

    def __repr__(self) -> str:
        return f"CachedLandmarkProvider(cache_dir={str(self.cache_dir)!r})"


@dataclass(frozen=True)
class FaceCrop:
    """A raw photo cut down to what predict/optimize consume.

    Fields:
        image: (size, size, 3) uint8 RGB crop around the face.
        landmarks: (68, 2) float32 landmarks in crop pixels.
        box: the crop's square in source-image pixels.
        source_landmarks: (68, 2) float32 landmarks in pixels of ``load_image(path)``.
    """

    image: np.ndarray
    landmarks: np.ndarray
    box: CropBox
    source_landmarks: np.ndarray


def face_crop(
    path: str | os.PathLike, cache_dir: str | os.PathLike, size: int, crop_scale: float = 1.25, detector=None
) -> FaceCrop:
    """Detect (or read cached) landmarks for a raw photo and crop the face as the folder datasets do
    (``box_from_landmarks`` with the same default ``crop_scale``), so a model sees the framing it was
    trained on. Raises like :func:`landmarks_for_image`."""
    landmarks = landmarks_for_image(path, cache_dir, detector=detector)
    box = box_from_landmarks(landmarks, scale=crop_scale)
    image = load_image(path)
    return FaceCrop(
        image=crop_image(image, box, size), landmarks=crop_points(landmarks, box, size).astype(np.float32),
        box=box, source_landmarks=landmarks,
    )
