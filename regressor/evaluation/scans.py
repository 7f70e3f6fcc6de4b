"""Outside scans and predicted meshes on disk, for ``regressor evaluate`` (NoW protocol, any topology).

* A **scan** is ``<stem>.obj`` or ``<stem>.ply`` (any vertex count and triangulation; only its
  vertices are scored, as NoW scores scan points against the predicted surface).
* Its **7 NoW landmarks** (right eye outer, right eye inner, left eye inner, left eye outer,
  nose bottom, right and left mouth corner; ``regressor.types``) are ``<stem>.txt`` / ``.npy``
  (7 rows of x y z), ``<stem>_landmarks.txt|.npy``, or a MeshLab picked-points ``<stem>.pp``,
  next to the scan or in ``--scan-landmarks``.
* A **prediction** is ``<stem>.obj`` plus ``<stem>.npz`` holding ``now_landmarks3d`` (7, 3), as
  ``regressor predict`` and ``regressor optimize`` write them. Everything is in metres.

**Units.** Scans often come in millimetres or centimetres. The scale is read from the scan's own
landmarks (outer-eye distance, about 0.09 m on adults): ``unit="auto"`` converts mm/cm scans to
metres with a warning; a fixed unit that disagrees with the landmarks by ~10x or more is an
error naming the likely unit.
"""
from __future__ import annotations

import warnings
from xml.etree import ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SCAN_EXTENSIONS = (".obj", ".ply")
LANDMARK_SUFFIXES = (".pp", ".npy", ".txt", "_landmarks.npy", "_landmarks.txt")
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
#: plausible outer-eye-corner distance of a face, metres (adults ~0.09)
EYE_DISTANCE_RANGE_M = (0.03, 0.3)


class EvaluationInputError(ValueError):
    """A missing or unusable scan, landmark file or prediction; the message names the file."""


@dataclass
class Mesh:
    """vertices (V, 3) float64 metres, faces (F, 3) long, now_landmarks (7, 3) metres."""

    vertices: Tensor
    faces: Tensor
    now_landmarks: Tensor


def load_mesh_file(path: Path) -> tuple[Tensor, Tensor]:
    """(vertices (V,3), faces (F,3)) of an .obj or .ply."""
    from pytorch3d.io import load_obj, load_ply

    try:
        if path.suffix.lower() == ".obj":
            vertices, faces, _ = load_obj(str(path), load_textures=False)
            faces = faces.verts_idx
        else:
            vertices, faces = load_ply(str(path))
    except (OSError, ValueError) as error:
        raise EvaluationInputError(f"cannot read mesh {path}: {error}") from None
    if vertices.ndim != 2 or vertices.shape[0] == 0:
        raise EvaluationInputError(f"mesh {path} has no vertices")
    return vertices.double(), faces.long()


def find_scan(stem: str, scans_dir: Path) -> Path | None:
    for extension in SCAN_EXTENSIONS:
        for candidate in (scans_dir / f"{stem}{extension}", scans_dir / f"{stem}{extension.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def find_scan_landmarks(stem: str, directories: list[Path]) -> Path | None:
    for directory in directories:
        for suffix in LANDMARK_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def load_now_landmarks(path: Path) -> Tensor:
    """(7, 3) landmarks from .txt / .npy (7 rows x y z) or a MeshLab .pp file."""
    try:
        if path.suffix.lower() == ".pp":
            points = [[float(p.attrib[k]) for k in ("x", "y", "z")] for p in ElementTree.parse(path).iter("point")]
            array = np.asarray(points, dtype=np.float64)
        elif path.suffix.lower() == ".npy":
            array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        else:
            array = np.loadtxt(path, dtype=np.float64, delimiter=None, ndmin=2)
    except (OSError, ValueError, KeyError, ElementTree.ParseError) as error:
        raise EvaluationInputError(f"cannot read landmarks {path}: {error}") from None
    array = array.reshape(-1, 3) if array.size == 21 else array
    if array.shape != (7, 3) or not np.isfinite(array).all():
        raise EvaluationInputError(f"landmarks {path} have shape {array.shape}, expected 7 finite rows of x y z "
                                   "(the NoW landmarks: right eye outer/inner, left eye inner/outer, nose bottom, "
                                   "right/left mouth corner)")
    return torch.from_numpy(array)


def guess_unit(now_landmarks: Tensor) -> str | None:
    """The unit in which the outer-eye distance is plausible, or None."""
    distance = float((now_landmarks[0] - now_landmarks[3]).norm())
    low, high = EYE_DISTANCE_RANGE_M
    for unit, factor in UNITS.items():
        if low <= distance * factor <= high:
            return unit
    return None


def to_metres(vertices: Tensor, landmarks: Tensor, unit: str, what: str) -> tuple[Tensor, Tensor]:
    """Scale a scan (and its landmarks) to metres, checking the unit against the landmarks."""
    distance = float((landmarks[0] - landmarks[3]).norm())
    guessed = guess_unit(landmarks)
    if guessed is None:
        raise EvaluationInputError(
            f"{what}: the outer-eye distance of its landmarks is {distance:g}, which fits no unit (m, cm, mm: "
            f"expected {EYE_DISTANCE_RANGE_M[0]}-{EYE_DISTANCE_RANGE_M[1]} m); are these the 7 NoW landmarks?")
    if unit == "auto":
        if guessed != "m":
            warnings.warn(f"{what} looks like {'centimetres' if guessed == 'cm' else 'millimetres'} "
                          f"(outer-eye distance {distance:g}); converted to metres", stacklevel=2)
        unit = guessed
    elif unit != guessed:
        names = {"m": "metres", "cm": "centimetres", "mm": "millimetres"}
        raise EvaluationInputError(
            f"{what}: units look like {names[guessed]}, not {names[unit]} (outer-eye distance {distance:g}; "
            f"expected about 0.09 m): pass --scan-unit {guessed} (or auto)")
    factor = UNITS[unit]
    return vertices * factor, landmarks * factor


def check_landmarks_on_scan(vertices: Tensor, landmarks: Tensor, what: str) -> None:
    """The landmarks must lie on the scan (within 1 cm of a vertex): catches swapped files and unit mix-ups."""
    nearest = torch.cdist(landmarks.double(), vertices.double()).min(dim=1).values
    if float(nearest.max()) > 0.01:
        raise EvaluationInputError(
            f"{what}: landmark {int(nearest.argmax())} lies {float(nearest.max()) * 1000:.1f} mm from the nearest "
            "scan vertex (expected < 10 mm): landmarks of another scan, or scan and landmarks in different units?")


def load_scan(stem: str, scans_dir: Path, landmark_dirs: list[Path], unit: str = "auto") -> Mesh:
    path = find_scan(stem, scans_dir)
    if path is None:
        raise EvaluationInputError(f"no scan for prediction '{stem}': looked for {stem}.obj / {stem}.ply in {scans_dir}")
    landmark_path = find_scan_landmarks(stem, landmark_dirs)
    if landmark_path is None:
        searched = ", ".join(str(d) for d in dict.fromkeys(landmark_dirs))
        raise EvaluationInputError(
            f"scan {path} has no landmarks: looked for {stem}{{{','.join(LANDMARK_SUFFIXES)}}} in {searched} "
            "(7 NoW landmarks, x y z per row, in the scan's units)")
    vertices, faces = load_mesh_file(path)
    vertices, landmarks = to_metres(vertices, load_now_landmarks(landmark_path), unit, f"scan {path}")
    check_landmarks_on_scan(vertices, landmarks, f"scan {path} with landmarks {landmark_path}")
    return Mesh(vertices, faces, landmarks)


def load_prediction(obj_path: Path) -> Mesh:
    npz_path = obj_path.with_suffix(".npz")
    if not npz_path.is_file():
        raise EvaluationInputError(f"prediction {obj_path} has no {npz_path.name} (it holds now_landmarks3d)")
    with np.load(npz_path) as stored:
        if "now_landmarks3d" not in stored.files:
            raise EvaluationInputError(f"{npz_path} has no now_landmarks3d (written by an older version? "
                                       "re-run regressor predict / optimize)")
        landmarks = torch.from_numpy(np.asarray(stored["now_landmarks3d"], dtype=np.float64))
    vertices, faces = load_mesh_file(obj_path)
    if guess_unit(landmarks) != "m":
        raise EvaluationInputError(f"prediction {obj_path}: its NoW landmarks are not in metres "
                                   f"(outer-eye distance {float((landmarks[0] - landmarks[3]).norm()):g})")
    return Mesh(vertices, faces, landmarks)
