"""Square face crops: choose a box (from landmarks, a given box, or the whole image), then
cut it out and resize it, moving landmarks with the pixels.

Coordinates are the project's (``regressor.types``): pixel corners at integers, pixel
``(c, r)`` centred at ``(c + 0.5, r + 0.5)``. A box is ``(x0, y0, size)`` in those units, and
may extend past the image: the outside is filled with zeros, as a camera would have seen
nothing there. Resizing uses Pillow's ``resize(box=...)``, which antialiases on downscaling
(``cv2.warpAffine`` does not, and faces in photos are often 10-50x larger than the crop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CropBox:
    """Square box: top-left corner ``(x0, y0)`` and side ``size``, in source pixels."""

    x0: float
    y0: float
    size: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.size / 2, self.y0 + self.size / 2

    @classmethod
    def around(cls, cx: float, cy: float, size: float) -> "CropBox":
        return cls(cx - size / 2, cy - size / 2, size)

    def scaled(self, factor: float) -> "CropBox":
        """The same box in an image resized by ``factor`` (e.g. a reduced JPEG decode)."""
        return CropBox(self.x0 * factor, self.y0 * factor, self.size * factor)

    def as_array(self) -> np.ndarray:
        """(4,) float32 ``[x0, y0, x1, y1]``."""
        return np.array([self.x0, self.y0, self.x0 + self.size, self.y0 + self.size], np.float32)


def box_from_landmarks(
    landmarks: np.ndarray,
    scale: float = 1.25,
    shift_y: float = 0.0,
    jitter: float = 0.0,
    scale_jitter: float = 0.0,
    rng: np.random.Generator | None = None,
) -> CropBox:
    """Square box around the landmarks' bounding box.

    Args:
        landmarks: (N, 2) points.
        scale: box side / the larger side of the landmarks' bounding box.
        shift_y: move the centre by this fraction of the side (negative = up, towards the forehead).
        jitter: random centre shift, uniform in ``±jitter * side`` per axis (training only).
        scale_jitter: random side factor, uniform in ``1 ± scale_jitter``.
        rng: source of the jitter; required when jitter or scale_jitter is non-zero.
    """
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = float(max(high - low)) * scale
    if not side > 0:
        raise ValueError(f"landmarks span an empty box {low.tolist()}-{high.tolist()}")
    cx, cy = (low + high) / 2
    cy += shift_y * side
    if jitter or scale_jitter:
        if rng is None:
            raise ValueError("box_from_landmarks: jitter needs an rng")
        dx, dy = rng.uniform(-jitter, jitter, size=2) * side
        side *= float(rng.uniform(1 - scale_jitter, 1 + scale_jitter))
        cx, cy = cx + dx, cy + dy
    return CropBox.around(float(cx), float(cy), side)


def box_from_image(height: int, width: int) -> CropBox:
    """The largest centred square inside the image."""
    side = min(height, width)
    return CropBox((width - side) / 2, (height - side) / 2, side)


def box_from_xyxy(x0: float, y0: float, x1: float, y1: float, scale: float = 1.0) -> CropBox:
    """Square box around a (detector) rectangle, enlarged by ``scale``."""
    side = max(x1 - x0, y1 - y0) * scale
    return CropBox.around((x0 + x1) / 2, (y0 + y1) / 2, side)


def _padded_region(array: np.ndarray, box: CropBox) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Integer region covering ``box``, zero-padded where it leaves the image, and the box
    relative to that region (floats, for Pillow's sub-pixel ``box`` argument)."""
    height, width = array.shape[:2]
    ix0, iy0 = math.floor(box.x0), math.floor(box.y0)
    ix1, iy1 = math.ceil(box.x0 + box.size), math.ceil(box.y0 + box.size)
    region = np.zeros((iy1 - iy0, ix1 - ix0) + array.shape[2:], dtype=array.dtype)
    sx0, sy0, sx1, sy1 = max(ix0, 0), max(iy0, 0), min(ix1, width), min(iy1, height)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = array[sy0:sy1, sx0:sx1]
    relative = (box.x0 - ix0, box.y0 - iy0, box.x0 - ix0 + box.size, box.y0 - iy0 + box.size)
    return region, relative


def crop_image(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8."""
    region, relative = _padded_region(image, box)
    resized = Image.fromarray(region).resize((size, size), Image.Resampling.BILINEAR, box=relative)
    return np.array(resized, dtype=np.uint8)  # writable, so torch.from_numpy is safe


def crop_mask(mask: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(H, W) float in [0, 1] -> (size, size) float32 (soft at the edges)."""
    region, relative = _padded_region(mask.astype(np.float32), box)
    resized = Image.fromarray(region, mode="F").resize((size, size), Image.Resampling.BILINEAR, box=relative)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def crop_points(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(N, 2) source pixels -> (N, 2) pixels of the ``size`` x ``size`` crop."""
    origin = np.array([box.x0, box.y0], dtype=np.float64)
    return ((points.astype(np.float64) - origin) * (size / box.size)).astype(np.float32)


def landmark_hull_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 face mask: the filled convex hull of the jaw and brow landmarks
    (iBUG 0-26). The stand-in when a folder has no mask files; it covers the face from the
    brows down, which is the region the landmarks (and the photometric loss) care about."""
    import cv2  # albumentations' dependency; imported here so crop.py stays light

    outline = np.asarray(landmarks[:27], dtype=np.float64) - 0.5  # cv2: pixel centres at integers
    mask = np.zeros((size, size), dtype=np.uint8)
    if np.isfinite(outline).all():
        hull = cv2.convexHull(np.round(outline * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)
