"""Read and write 68-point iBUG landmark files: ``.pts``, ``.npy`` and ``.txt``.

Coordinate conventions (the project's, see ``regressor.types``): pixels, origin at the
top-left *corner*, so pixel ``(col, row)`` has its centre at ``(col + 0.5, row + 0.5)``.

* ``.pts`` files follow the iBUG 300-W convention, which is 1-based (Matlab): the centre of
  the top-left pixel is ``(1, 1)``. We therefore subtract 0.5 on reading and add 0.5 on
  writing (``PTS_TO_PROJECT``), so ``save_pts`` then ``load_landmarks`` is exact and files
  from 300-W, Menpo or dlib-based tools line up with our pixel grid.
* ``.npy`` and ``.txt`` files are taken to be in the project's convention already (no shift).
  ``.npy``: an array of shape (68, 2), (1, 68, 2), (136,) or (68, 3).
  ``.txt``: 68 lines of ``x y`` (spaces or commas), or one line of 136 numbers, or 68 lines of ``x y v``.

**Invisible points** (``load_landmarks_with_visibility``, used by fitting): a point is invalid
when its coordinates are NaN (any format; ``nan`` in text files), or when a third column is a
*visibility* column: every value 0 or 1 and at least one of each (a column of only 0 or only 1
is a z column, dropped, as before). ``load_landmarks`` (training) still refuses invalid points.

Why hand-written: the ``.pts`` format is a 6-line text format; no maintained library reads it
with the validation we need (counts, NaN), and pulling in menpo for it would be absurd.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NUM_POINTS = 68
LANDMARK_EXTENSIONS = (".pts", ".npy", ".txt")
PTS_TO_PROJECT = -0.5  # add to 1-based iBUG .pts coordinates to get project pixels


class LandmarkFileError(ValueError):
    """A landmark file that is missing, malformed, has the wrong count, or non-finite values."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path} {problem}" if problem.startswith("has ") else f"{self.path}: {problem}")


def _parse_pts(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise LandmarkFileError(path, "is not a text .pts file (binary content)") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    declared = None
    for line in lines:
        if line.lower().startswith("n_points"):
            try:
                declared = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise LandmarkFileError(path, f"has a malformed header line {line!r}") from None
    if "{" not in lines or "}" not in lines:
        raise LandmarkFileError(path, "is not an iBUG .pts file (expected 'n_points: N' then points inside '{ }')")
    body = lines[lines.index("{") + 1 : lines.index("}")]
    points = []
    for number, line in enumerate(body, start=1):
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise LandmarkFileError(path, f"point line {number} {line!r} does not hold two coordinates")
        try:
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise LandmarkFileError(path, f"point line {number} {line!r} is not numeric") from None
    if declared is not None and declared != len(points):
        raise LandmarkFileError(path, f"declares n_points: {declared} but lists {len(points)} points")
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return array + PTS_TO_PROJECT


def _parse_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise LandmarkFileError(path, f"is not a readable .npy array ({error})") from None
    return np.asarray(array, dtype=np.float64)


def _parse_txt(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        rows = [line.replace(",", " ").split() for line in lines]
        return np.asarray([[float(v) for v in row] for row in rows], dtype=np.float64) if rows else np.zeros((0, 2))
    except (UnicodeDecodeError, ValueError) as error:
        raise LandmarkFileError(path, f"is not a text file of numbers ({error})") from None


def _as_points(array: np.ndarray, path: Path, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Accept the common layouts, then check count and shape; returns (points (N,2), visible (N,) bool)."""
    if array.dtype == object:
        raise LandmarkFileError(path, "holds ragged rows (different numbers of values per line)")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2 and array.shape[0] == 1 and array.shape[1] == 2 * num_points:
        array = array[0]
    if array.ndim == 1:
        if array.size % 2:
            raise LandmarkFileError(path, f"has {array.size} values, expected {2 * num_points} (x, y pairs)")
        array = array.reshape(-1, 2)
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise LandmarkFileError(path, f"has shape {tuple(array.shape)}, expected ({num_points}, 2)")
    if array.shape[0] != num_points:
        raise LandmarkFileError(path, f"has {array.shape[0]} points, expected {num_points}")
    points = array[:, :2].copy()
    visible = np.isfinite(points).all(axis=1)
    if array.shape[1] == 3 and _is_visibility_column(array[:, 2]):
        visible &= array[:, 2] == 1
    points[~visible] = np.nan
    return points, visible


def _is_visibility_column(column: np.ndarray) -> bool:
    """0/1 values with both present (a constant column is a z coordinate, see the module doc)."""
    finite = column[np.isfinite(column)]
    return finite.size == column.size and bool(np.isin(finite, (0.0, 1.0)).all()) and len(np.unique(finite)) == 2


def load_landmarks(path: str | os.PathLike, num_points: int = NUM_POINTS) -> np.ndarray:
    """Load ``(num_points, 2) float32`` landmarks in project pixel coordinates, every point valid.

    Raises:
        LandmarkFileError: missing file, unknown extension, malformed content, wrong number of
            points (``"x.pts has 67 points, expected 68"``), NaN/inf coordinates or points marked
            invisible (``load_landmarks_with_visibility`` accepts those).
    """
    points, visible = _read_points(Path(path), num_points)
    bad = np.flatnonzero(~visible)
    if bad.size:
        first = int(bad[0])
        raise LandmarkFileError(
            path,
            f"has non-finite coordinates at {bad.size} point(s), "
            f"first point {first}: ({points[first, 0]}, {points[first, 1]})",
        )
    return points.astype(np.float32)


def load_landmarks_with_visibility(path: str | os.PathLike, num_points: int = NUM_POINTS
                                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(points (N,2) float32, visible (N,) bool)``; invisible points are NaN (see the module doc).

    Raises ``LandmarkFileError`` as ``load_landmarks`` does, except for invisible points, and
    when no point at all is visible.
    """
    points, visible = _read_points(Path(path), num_points)
    if not visible.any():
        raise LandmarkFileError(path, "has non-finite coordinates at every point (no visible landmark)")
    return points.astype(np.float32), visible


def _read_points(path: Path, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise LandmarkFileError(path, "does not exist")
    suffix = path.suffix.lower()
    if suffix == ".pts":
        array = _parse_pts(path)
    elif suffix == ".npy":
        array = _parse_npy(path)
    elif suffix == ".txt":
        array = _parse_txt(path)
    else:
        raise LandmarkFileError(path, f"has unknown extension {suffix!r}; expected one of {LANDMARK_EXTENSIONS}")
    return _as_points(array, path, num_points)


def save_pts(path: str | os.PathLike, points: np.ndarray) -> Path:
    """Write ``(N, 2)`` project-pixel landmarks as an iBUG ``.pts`` file (1-based, see module doc)."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"save_pts: points must have shape (N, 2), got {tuple(points.shape)}")
    if not np.isfinite(points).all():
        raise ValueError(f"save_pts: refusing to write non-finite landmarks to {path}")
    shifted = points - PTS_TO_PROJECT
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x:.4f} {y:.4f}" for x, y in shifted]
    lines.append("}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def find_landmark_file(stem: str, directories: list[Path]) -> Path | None:
    """The first ``<stem>.pts|.npy|.txt`` found in ``directories`` (in that order), else None."""
    for directory in directories:
        for extension in LANDMARK_EXTENSIONS:
            candidate = Path(directory) / f"{stem}{extension}"
            if candidate.is_file():
                return candidate
    return None
