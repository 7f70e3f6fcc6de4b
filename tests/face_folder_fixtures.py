"""Test helpers: a schematic 68-point iBUG face and folders of drawn faces with landmark files.

The schematic face is written point by point from the iBUG layout (image-left = the subject's
right), independently of ``IBUG_FLIP_PERMUTATION``, so tests can check the permutation against it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from regressor.data.landmarks_io import save_pts


def _eye(cx: float, cy: float, outer_first_sign: float) -> list[tuple[float, float]]:
    """6 eye points: corner, 2 upper, other corner, 2 lower (iBUG order, clockwise in the image)."""
    s = outer_first_sign
    return [(cx - 0.2 * s, cy), (cx - 0.07 * s, cy - 0.06), (cx + 0.07 * s, cy - 0.06),
            (cx + 0.2 * s, cy), (cx + 0.07 * s, cy + 0.06), (cx - 0.07 * s, cy + 0.06)]


def schematic_face() -> np.ndarray:
    """(68, 2) iBUG points of a frontal face in a unit box (x right, y down, centre 0)."""
    points: list[tuple[float, float]] = []
    for i in range(17):  # jaw: image-left ear -> chin -> image-right ear
        theta = np.pi * i / 16
        points.append((-np.cos(theta), 0.1 + 0.9 * np.sin(theta)))
    points += [(-0.8 + 0.15 * i, -0.45 - 0.05 * np.sin(np.pi * i / 4)) for i in range(5)]  # right brow
    points += [(0.2 + 0.15 * i, -0.45 - 0.05 * np.sin(np.pi * i / 4)) for i in range(5)]  # left brow
    points += [(0.0, -0.3 + 0.15 * i) for i in range(4)]  # nose bridge
    points += [(-0.2 + 0.1 * i, 0.25 + 0.05 * (1 - abs(i - 2) / 2)) for i in range(5)]  # nostrils
    points += _eye(-0.4, -0.2, 1.0)  # right eye: 36 outer (image-left) ... 39 inner
    points += _eye(0.4, -0.2, 1.0)  # left eye: 42 inner ... 45 outer (image-right)
    top = [(-0.4, 0.55), (-0.27, 0.5), (-0.12, 0.47), (0.0, 0.49), (0.12, 0.47), (0.27, 0.5), (0.4, 0.55)]
    bottom = [(0.27, 0.65), (0.12, 0.69), (0.0, 0.7), (-0.12, 0.69), (-0.27, 0.65)]
    points += top + bottom  # outer lip 48-59
    points += [(-0.32, 0.56), (-0.12, 0.54), (0.0, 0.545), (0.12, 0.54), (0.32, 0.56),
               (0.12, 0.6), (0.0, 0.61), (-0.12, 0.6)]  # inner lip 60-67
    return np.asarray(points, dtype=np.float32)


FACE_COLOUR = (110, 140, 170)  # bluish, so that red dots stand out even after blurring


def draw_face(height: int, width: int, landmarks: np.ndarray, seed: int = 0, dot_radius: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8: dark noisy background, a face-coloured hull, a red dot on every landmark."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    outline = [tuple(p) for p in landmarks[:17]] + [tuple(p) for p in landmarks[26:16:-1]]
    draw.polygon(outline, fill=FACE_COLOUR)
    radius = dot_radius if dot_radius is not None else max(1.0, 0.015 * max(height, width))
    for x, y in landmarks:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    return np.asarray(image)


def make_face_folder(root: Path, count: int = 10, height: int = 120, width: int = 100, seed: int = 0) -> list[str]:
    """``root/images/face_XX.png`` + ``root/landmarks/face_XX.pts``; returns the stems."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "landmarks").mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(count):
        scale = rng.uniform(0.25, 0.35) * min(height, width)
        centre = np.array([width / 2, height / 2]) + rng.uniform(-0.1, 0.1, 2) * min(height, width)
        landmarks = schematic_face() * scale + centre
        stem = f"face_{i:02d}"
        Image.fromarray(draw_face(height, width, landmarks, seed=i)).save(root / "images" / f"{stem}.png")
        save_pts(root / "landmarks" / f"{stem}.pts", landmarks)
        stems.append(stem)
    return stems
