"""Landmark embeddings and albedo of the built-in head, in FLAME's conventions.

Static 51 (iBUG 17-67) are placed by casting frontal rays at 2D targets derived from the
sculpting anchors; the inner-lip points sit on the two crease rows, so they part when the jaw
opens. The dynamic 79x17 jaw contour is, per yaw bin, the outline of the lower face seen
under that yaw (FLAME's bin order: bins 0..39 = yaw 0..39 deg, bins 40..78 = yaw -1..-39 deg).
"""
from __future__ import annotations

import numpy as np

from regressor.face_model.builtin_mesh import (
    BROW_Y, EYE_X, EYE_Y, MOUTH_HALF_WIDTH, MOUTH_Y, NASION_Y, NOSE_TIP_Y, SUBNASALE_Y, HeadGrid, Sculpt,
    gauss, smoothstep,
)


def yaw_of_bin(bin_index: int) -> int:
    """FLAME's dynamic-contour bin order, in degrees."""
    return bin_index if bin_index <= 39 else 39 - bin_index


def _static_targets() -> np.ndarray:
    """(51, 2) frontal (x, y) targets for iBUG 17..67; x < 0 is the subject's right."""
    brow_x = np.array([0.050, 0.040, 0.029, 0.018, 0.008])
    brow_y = BROW_Y + np.array([-0.004, 0.001, 0.003, 0.002, -0.001])
    pts = [(-bx, by) for bx, by in zip(brow_x, brow_y)]
    pts += [(bx, by) for bx, by in zip(brow_x[::-1], brow_y[::-1])]
    pts += [(0.0, yy) for yy in np.linspace(NASION_Y - 0.002, NOSE_TIP_Y, 4)]
    pts += [(-0.012, SUBNASALE_Y + 0.003), (-0.006, SUBNASALE_Y), (0.0, SUBNASALE_Y - 0.0015),
            (0.006, SUBNASALE_Y), (0.012, SUBNASALE_Y + 0.003)]
    e = EYE_X
    right_eye = [(-e - 0.0135, EYE_Y), (-e - 0.005, EYE_Y + 0.0045), (-e + 0.005, EYE_Y + 0.0045),
                 (-e + 0.0135, EYE_Y), (-e + 0.005, EYE_Y - 0.004), (-e - 0.005, EYE_Y - 0.004)]
    left_eye = [(-px, py) for px, py in [right_eye[i] for i in (3, 2, 1, 0, 5, 4)]]
    pts += right_eye + left_eye
    mw = MOUTH_HALF_WIDTH
    pts += [(-mw, MOUTH_Y), (-0.015, MOUTH_Y + 0.006), (-0.006, MOUTH_Y + 0.009), (0.0, MOUTH_Y + 0.0085),
            (0.006, MOUTH_Y + 0.009), (0.015, MOUTH_Y + 0.006), (mw, MOUTH_Y),
            (0.015, MOUTH_Y - 0.010), (0.006, MOUTH_Y - 0.0125), (0.0, MOUTH_Y - 0.013),
            (-0.006, MOUTH_Y - 0.0125), (-0.015, MOUTH_Y - 0.010)]
    pts += [(0.0, MOUTH_Y)] * 8  # inner lip 60..67: replaced by crease-row vertices
    return np.array(pts)


def _frontal_hits(vertices: np.ndarray, faces: np.ndarray, targets: np.ndarray):
    """Front-most surface point under each (x, y) target: (face index, barycentrics)."""
    tri = vertices[faces]  # (F, 3, 3)
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    facing = det > 1e-12  # counter-clockwise in the xy projection = facing +Z
    face_idx, bary = [], []
    for t in targets:
        l1 = ((t[0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (t[1] - a[:, 1])) / np.where(facing, det, 1)
        l2 = ((b[:, 0] - a[:, 0]) * (t[1] - a[:, 1]) - (t[0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / np.where(facing, det, 1)
        l0 = 1 - l1 - l2
        inside = facing & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        cand = np.nonzero(inside)[0]
        if len(cand) == 0:
            raise RuntimeError(f"no front-facing surface under landmark target {t}")
        depth = (l0 * tri[:, 0, 2] + l1 * tri[:, 1, 2] + l2 * tri[:, 2, 2])[cand]
        best = cand[np.argmax(depth)]
        face_idx.append(best)
        bary.append(np.clip([l0[best], l1[best], l2[best]], 0, 1))
    bary = np.array(bary)
    return np.array(face_idx), bary / bary.sum(1, keepdims=True)


def _vertex_as_bary(faces: np.ndarray, vertex: int) -> tuple[int, np.ndarray]:
    face = int(np.nonzero((faces == vertex).any(1))[0][0])
    bary = (faces[face] == vertex).astype(float)
    return face, bary


def static_embedding(grid: HeadGrid, s: Sculpt) -> tuple[np.ndarray, np.ndarray]:
    """(51,) face indices and (51, 3) barycentrics of iBUG landmarks 17..67."""
    faces_idx, bary = _frontal_hits(s.vertices, grid.faces, _static_targets())
    lower, upper = grid.crease_rows
    cols_x = s.vertices[upper * grid.n_lon:(upper + 1) * grid.n_lon, 0]
    front_cols = np.nonzero(np.cos(grid.phi) > 0.5)[0]

    def crease_vertex(row: int, x: float) -> int:
        col = front_cols[np.argmin(np.abs(cols_x[front_cols] - x))]
        return grid.vertex_index(row, col)

    mw = MOUTH_HALF_WIDTH
    inner = {60: (upper, -0.85 * mw), 61: (upper, -0.008), 62: (upper, 0.0), 63: (upper, 0.008),
             64: (upper, 0.85 * mw), 65: (lower, 0.008), 66: (lower, 0.0), 67: (lower, -0.008)}
    for ibug, (row, x) in inner.items():
        faces_idx[ibug - 17], bary[ibug - 17] = _vertex_as_bary(grid.faces, crease_vertex(row, x))
    for ibug, x in ((48, -0.97 * mw), (54, 0.97 * mw)):  # outer mouth corners end the crease
        faces_idx[ibug - 17], bary[ibug - 17] = _vertex_as_bary(grid.faces, crease_vertex(upper, x))
    return faces_idx.astype(np.int64), bary


def dynamic_embedding(grid: HeadGrid, s: Sculpt) -> tuple[np.ndarray, np.ndarray]:
    """(79, 17) face indices and (79, 17, 3) barycentrics of the jaw contour per yaw bin."""
    v, p = s.vertices, s.design_points
    centre = np.array([0.0, -0.03, 0.0])
    radial2d = np.linalg.norm(p[:, :2] - centre[:2], axis=1)
    under_chin = (p[:, 1] < -0.09) & (p[:, 2] < 0.045)
    eligible = (p[:, 1] < EYE_Y - 0.005) & (p[:, 1] > -0.115) & (p[:, 2] > 0.0) & (radial2d > 0.045) & ~under_chin
    idx = np.nonzero(eligible)[0]
    angles = np.deg2rad(np.linspace(-108, 108, 17))  # from straight down; negative = subject's right
    faces_idx = np.zeros((79, 17), np.int64)
    bary = np.zeros((79, 17, 3))
    for b in range(79):
        yaw = np.deg2rad(yaw_of_bin(b))
        rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        q = v[idx] @ rot.T - centre @ rot.T
        ang = np.arctan2(q[:, 0], -q[:, 1])
        reach = np.hypot(q[:, 0], q[:, 1])
        for k, a in enumerate(angles):
            near = np.abs(ang - a) < np.deg2rad(4)
            best = idx[np.nonzero(near)[0][np.argmax(reach[near])]]
            faces_idx[b, k], bary[b, k] = _vertex_as_bary(grid.faces, best)
    return faces_idx, bary


def albedo_model(s: Sculpt, rng: np.random.Generator, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo mean (V, 3) and basis (V, 3, n), linear RGB-ish in [0, 1]."""
    x, y, z = s.design_points.T
    sx = np.abs(x)
    front = smoothstep(0.02, 0.07, z)
    skin = np.array([0.80, 0.60, 0.50])
    mean = np.tile(skin, (len(x), 1))
    lips = np.exp(-((sx / (MOUTH_HALF_WIDTH * 1.05)) ** 4)) * gauss(0, y, 0, MOUTH_Y, 1, 0.008) * front
    brows = gauss(sx, y, 0.029, BROW_Y + 0.001, 0.016, 0.0035) * front
    cheeks = gauss(sx, y, 0.043, -0.025, 0.014, 0.012) * front
    eye = np.sqrt(((sx - EYE_X) / 0.0135) ** 2 + ((y - EYE_Y) / 0.0075) ** 2)
    sclera = smoothstep(1.0, 0.8, eye) * front
    iris = smoothstep(0.45, 0.3, eye) * front
    mix = lambda base, colour, w: base * (1 - w[:, None]) + np.asarray(colour) * w[:, None]  # noqa: E731
    mean = mix(mean, [0.86, 0.62, 0.55], 0.5 * cheeks)
    mean = mix(mean, [0.72, 0.36, 0.36], lips)
    mean = mix(mean, [0.30, 0.22, 0.17], 0.85 * brows)
    depth = s.radius - np.linalg.norm(s.design_points, axis=1)  # < 0 where sculpted inwards
    interior = lips * smoothstep(-0.0015, -0.005, depth)  # the lip crease = the mouth's inside
    mean = mix(mean, [0.25, 0.08, 0.08], interior)
    mean = mix(mean, [0.90, 0.88, 0.85], sclera)
    mean = mix(mean, [0.25, 0.17, 0.12], iris)
    skin_w = (1 - sclera)[:, None]
    columns = [
        -0.18 * mean * skin_w,                                   # darker / lighter skin
        np.outer(1 - sclera, [0.04, 0.0, -0.05]),                # warm / cool undertone
        lips[:, None] * [0.06, -0.05, -0.03],                    # lip redness
        brows[:, None] * [-0.08, -0.07, -0.06],                  # brow darkness
        cheeks[:, None] * [0.05, -0.03, -0.02],                  # cheek redness
    ]
    for _ in range(n - len(columns)):
        centre = s.design_points[rng.integers(len(x))]
        blob = np.exp(-0.5 * ((s.design_points - centre) ** 2).sum(1) / 0.03**2) * (1 - sclera)
        columns.append(0.02 * blob[:, None] * rng.normal(size=3))
    return mean, np.stack(columns, -1)
