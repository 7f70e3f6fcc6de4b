"""Find and vet the samples of a face folder before training touches them.

Layout (``root``):

* ``images/`` (or ``root`` itself): ``*.jpg``, ``*.png``, ... ;
* landmarks with the same stem (``.pts``, ``.npy`` or ``.txt``), searched in ``landmarks_dir``
  (if given), then ``root/landmarks/``, then next to the images;
* optional ``masks/<stem>.<image ext>`` (face mask, white = face) and ``meshes/<stem>.obj``;
* optional ``splits/<split>.txt``: one stem per line, restricting the folder to that split
  (``split=None``: every image).

The scan is cheap (file headers and text files only, no pixel decoding), so it runs up front:
every file problem it can see is found before the first epoch and counted by reason in a
:class:`SkipLog`. What only decoding reveals (e.g. a truncated JPEG) is caught lazily by the
dataset and recorded in the same log.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from regressor.data.image_io import IMAGE_EXTENSIONS, ImageReadError, list_images, probe_image
from regressor.data.landmarks_io import (LandmarkFileError, find_landmark_file, load_landmarks,
                                         load_landmarks_with_visibility)

SKIP_REASONS = (
    "unreadable_image",  # missing, corrupt, truncated, not an image, too large
    "missing_landmarks",  # no landmark file (and no landmark_provider)
    "bad_landmarks",  # malformed file, wrong point count, degenerate
    "nan_landmarks",  # NaN / inf coordinates
    "landmarks_outside_image",  # most points off the image: mislabelled or wrong file
    "unreadable_mask",  # a mask file exists but is corrupt or has the wrong size
    "missing_mesh",  # meshes requested but no .obj for this image
    "unreadable_mesh",  # the .obj exists but cannot be parsed
    "no_face_detected",  # the landmark_provider found no face
)


class SampleSkipped(Exception):
    """One sample cannot be used; ``reason`` is one of ``SKIP_REASONS``."""

    def __init__(self, reason: str, error: Exception):
        assert reason in SKIP_REASONS, reason
        self.reason = reason
        self.error = error
        super().__init__(f"[{reason}] {error}")


@dataclass
class FaceRecord:
    """One usable image: paths, and landmarks when a file provided them (None = ask the provider).

    ``landmarks_valid`` (68,) bool is set when invisible points were allowed (their landmarks are NaN).
    """

    name: str
    image_path: Path
    width: int
    height: int
    landmarks: np.ndarray | None
    mask_path: Path | None = None
    mesh_path: Path | None = None
    landmark_path: Path | None = None
    landmarks_valid: np.ndarray | None = None


class SkipLog:
    """Counts skipped files by reason: up-front ones in a Counter, lazy ones in a shared-memory
    tensor (one reason code per record) so that DataLoader worker processes report back to
    the main process without any extra channel."""

    def __init__(self, num_records: int = 0):
        self.upfront: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.files: list[tuple[str, str, str]] = []  # (file name, reason, detail) of every up-front skip
        self.converted: Counter = Counter()
        self.reset_lazy(num_records)

    def reset_lazy(self, num_records: int) -> None:
        self.lazy_codes = torch.zeros(max(num_records, 1), dtype=torch.int8).share_memory_()

    def add(self, reason: str, detail: str, name: str = "") -> None:
        self.upfront[reason] += 1
        self.files.append((name, reason, detail))
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(detail)

    def mark_lazy(self, record_index: int, reason: str) -> None:
        self.lazy_codes[record_index] = SKIP_REASONS.index(reason) + 1

    def lazy_reason(self, record_index: int) -> str | None:
        code = int(self.lazy_codes[record_index])
        return SKIP_REASONS[code - 1] if code else None

    @property
    def skipped(self) -> Counter:
        counts = Counter(self.upfront)
        codes = self.lazy_codes[self.lazy_codes > 0].tolist()
        counts.update(SKIP_REASONS[code - 1] for code in codes)
        return counts

    def report(self, what: str) -> str:
        counts = self.skipped
        total = sum(counts.values())
        text = f"{what}: skipped {total} file(s)"
        if total:
            text += " (" + ", ".join(f"{reason}: {counts[reason]}" for reason in SKIP_REASONS if counts[reason]) + ")"
        if self.converted:
            text += "; converted " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.converted.items()))
        return text


def _split_stems(root: Path, split: str) -> set[str] | None:
    listing = root / "splits" / f"{split}.txt"
    if not listing.is_file():
        return None
    return {line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()}


def _find_sidecar(directory: Path, stem: str, extensions: tuple[str, ...]) -> Path | None:
    for extension in extensions:
        for candidate in (directory / f"{stem}{extension}", directory / f"{stem}{extension.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def check_landmarks_fit_image(landmarks: np.ndarray, width: int, height: int, path: Path) -> None:
    """Reject landmarks that cannot belong to this image (a mislabelled or swapped file).
    Invisible (NaN) points are not looked at."""
    landmarks = landmarks[np.isfinite(landmarks).all(axis=1)]
    if len(landmarks) == 0:
        raise LandmarkFileError(path, "has non-finite coordinates at every point")
    span = landmarks.max(axis=0) - landmarks.min(axis=0)
    if float(span.max()) < 2.0:
        raise LandmarkFileError(path, f"has degenerate landmarks (they span only {span.max():.2f} px)")
    margin = 0.1 * np.array([width, height])
    inside = np.all((landmarks >= -margin) & (landmarks <= np.array([width, height]) + margin), axis=1)
    if inside.mean() < 0.5:
        raise LandmarkFileError(
            path, f"has {int((~inside).sum())} of {len(landmarks)} points outside the {width}x{height} image "
            "(landmarks of another image?)"
        )


def _landmark_reason(error: LandmarkFileError) -> str:
    if "non-finite" in error.problem:
        return "nan_landmarks"
    if "outside the" in error.problem:
        return "landmarks_outside_image"
    return "bad_landmarks"


def scan_face_folder(
    root: str | Path,
    split: str | None = "train",
    landmarks_dir: str | Path | None = None,
    strict: bool = False,
    load_meshes: bool = False,
    allow_missing_landmarks: bool = False,
    allow_invisible_points: bool = False,
) -> tuple[list[FaceRecord], SkipLog]:
    """Vet every image of ``root`` (see module doc). Returns the usable records and a SkipLog.

    Args:
        strict: raise the first problem (``ImageReadError`` / ``LandmarkFileError`` /
            ``FileNotFoundError``, each naming the file) instead of skipping it.
        allow_missing_landmarks: keep images without a landmark file (a landmark provider
            will be asked for them later) instead of skipping them.
        allow_invisible_points: accept landmark files with invisible points (NaN or a visibility
            column, ``landmarks_io.load_landmarks_with_visibility``); records get ``landmarks_valid``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"face folder {root} does not exist")
    images_dir = root / "images" if (root / "images").is_dir() else root
    landmark_dirs = [Path(d) for d in (landmarks_dir, root / "landmarks", images_dir) if d is not None]
    masks_dir, meshes_dir = root / "masks", root / "meshes"
    wanted = _split_stems(root, split) if split is not None else None
    paths = [p for p in list_images(images_dir) if wanted is None or p.stem in wanted]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {images_dir}")

    records: list[FaceRecord] = []
    log = SkipLog()
    for path in paths:
        try:
            records.append(
                _vet_one(path, landmark_dirs, masks_dir, meshes_dir, load_meshes, allow_missing_landmarks, log,
                         allow_invisible_points)
            )
        except SampleSkipped as skip:
            if strict:
                raise skip.error from None
            log.add(skip.reason, str(skip.error), path.name)
            warnings.warn(f"skipping {path.name}: {skip.error}", stacklevel=2)
    log.reset_lazy(len(records))
    return records, log


def _vet_one(path, landmark_dirs, masks_dir, meshes_dir, load_meshes, allow_missing_landmarks, log,
             allow_invisible_points=False) -> FaceRecord:
    try:
        info = probe_image(path)
    except ImageReadError as error:
        raise SampleSkipped("unreadable_image", error) from None
    landmarks, valid = None, None
    landmark_path = find_landmark_file(path.stem, landmark_dirs)
    if landmark_path is None and not allow_missing_landmarks:
        searched = ", ".join(str(d) for d in dict.fromkeys(landmark_dirs))
        error = FileNotFoundError(
            f"no landmark file for {path} (looked for {path.stem}.pts/.npy/.txt in {searched}); supply one, "
            "or detect them with `regressor landmarks` / a landmark_provider"
        )
        raise SampleSkipped("missing_landmarks", error)
    if landmark_path is not None:
        try:
            if allow_invisible_points:
                landmarks, valid = load_landmarks_with_visibility(landmark_path)
            else:
                landmarks = load_landmarks(landmark_path)
            check_landmarks_fit_image(landmarks, info.width, info.height, landmark_path)
        except LandmarkFileError as error:
            raise SampleSkipped(_landmark_reason(error), error) from None
    mask_path = _find_sidecar(masks_dir, path.stem, IMAGE_EXTENSIONS) if masks_dir.is_dir() else None
    if mask_path is not None:
        try:
            mask_info = probe_image(mask_path)
        except ImageReadError as error:
            raise SampleSkipped("unreadable_mask", error) from None
        if (mask_info.width, mask_info.height) != (info.width, info.height):
            error = ImageReadError(
                mask_path, f"mask is {mask_info.width}x{mask_info.height}, image is {info.width}x{info.height}"
            )
            raise SampleSkipped("unreadable_mask", error)
    mesh_path = None
    if load_meshes:
        mesh_path = _find_sidecar(meshes_dir, path.stem, (".obj",))
        if mesh_path is None:
            missing = FileNotFoundError(f"no mesh {meshes_dir / (path.stem + '.obj')} for {path}")
            raise SampleSkipped("missing_mesh", missing)
    if info.conversion is not None:
        log.converted[info.conversion] += 1
    return FaceRecord(path.stem, path, info.width, info.height, landmarks, mask_path, mesh_path, landmark_path, valid)
