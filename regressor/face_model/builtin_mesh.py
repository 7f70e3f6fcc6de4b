"""Geometry of the built-in stand-in head: a closed, star-shaped radial surface.

Why a radial surface: every vertex is ``centre + r(direction) * direction`` on a latitude /
longitude grid with one vertex per pole, so the mesh is a closed 2-manifold and free of
self-intersections for *any* positive radius function. The face is sculpted into ``r`` with
smooth bumps and dents placed in "design" coordinates (metres, head centre at the origin,
FLAME axes: +X subject's left, +Y up, +Z forward). The grid is denser on the face, and two
rows a hair apart straddle the mouth line, so that the lips meet in a deep crease and part
when the jaw (skinned across that crease) opens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Feature anchors in design coordinates (metres).
EYE_X, EYE_Y = 0.032, 0.012          # eyeball centres seen from the front
BROW_Y = 0.030
NOSE_TIP_Y, SUBNASALE_Y, NASION_Y = -0.030, -0.043, 0.014
MOUTH_Y, MOUTH_HALF_WIDTH = -0.060, 0.024
CHIN_Y = -0.095
MOUTH_LINE_THETA = np.arcsin(MOUTH_Y / 0.108)  # latitude of the mouth line at the midline
CREASE_HALF_GAP = np.deg2rad(0.12)               # the two lip-crease rows sit at theta_m +- this


@dataclass
class HeadGrid:
    """Latitude/longitude sampling of the sphere of directions.

    Attributes:
        theta: (n_lat,) latitudes (radians, -pi/2..pi/2 exclusive, increasing = upwards).
        phi: (n_lon,) longitudes (radians, 0 = facing +Z, increasing towards +X).
        directions: (V, 3) unit directions of all vertices, rows first, then bottom and top pole.
        faces: (F, 3) triangles, counter-clockwise seen from outside.
        crease_rows: (lower_row, upper_row) indices of the two rows straddling the mouth line.
    """

    theta: np.ndarray
    phi: np.ndarray
    directions: np.ndarray
    faces: np.ndarray
    crease_rows: tuple[int, int]

    @property
    def n_lat(self) -> int:
        return len(self.theta)

    @property
    def n_lon(self) -> int:
        return len(self.phi)

    def vertex_index(self, row: int, col: int) -> int:
        return row * self.n_lon + col % self.n_lon


def _inverse_cdf(density: np.ndarray, grid: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples of ``grid`` spaced so that their density follows ``density``."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.interp((np.arange(n) + 0.5) / n, cdf, grid)


def make_grid(n_lat: int = 66, n_lon: int = 78) -> HeadGrid:
    """Face-weighted direction grid; ``n_lat * n_lon + 2`` vertices."""
    t = np.linspace(-np.pi / 2, np.pi / 2, 4001)
    lat_density = (
        0.35
        + 1.6 * np.exp(-0.5 * ((t - np.deg2rad(-8)) / np.deg2rad(32)) ** 2)
        + 1.2 * np.exp(-0.5 * ((t - MOUTH_LINE_THETA) / np.deg2rad(6)) ** 2)
        + 0.6 * np.exp(-0.5 * ((t - np.arcsin(EYE_Y / 0.1)) / np.deg2rad(6)) ** 2)
    )
    theta = _inverse_cdf(lat_density, t, n_lat - 1)
    # Replace the row nearest the mouth line by two rows a hair apart: the lip crease.
    nearest = int(np.argmin(np.abs(theta - MOUTH_LINE_THETA)))
    theta = np.sort(np.concatenate([
        np.delete(theta, nearest),
        [MOUTH_LINE_THETA - CREASE_HALF_GAP, MOUTH_LINE_THETA + CREASE_HALF_GAP],
    ]))
    lower = int(np.searchsorted(theta, MOUTH_LINE_THETA)) - 1

    p = np.linspace(-np.pi, np.pi, 4001)
    lon_density = 0.3 + 1.0 * np.exp(-0.5 * (p / np.deg2rad(48)) ** 2)
    # Periodic: sample on [-pi, pi) with the back seam at +-pi.
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (lon_density[1:] + lon_density[:-1]) * np.diff(p))])
    cdf /= cdf[-1]
    phi = np.interp(np.arange(n_lon) / n_lon, cdf, p)
    phi = phi - np.interp(0.5, cdf, p)  # put a column exactly at phi = 0 (the midline)
    phi = np.sort(np.where(phi < -np.pi, phi + 2 * np.pi, phi))

    th, ph = np.meshgrid(theta, phi, indexing="ij")
    dirs = np.stack([np.cos(th) * np.sin(ph), np.sin(th), np.cos(th) * np.cos(ph)], -1).reshape(-1, 3)
    dirs = np.concatenate([dirs, [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    return HeadGrid(theta, phi, dirs, _grid_faces(n_lat, n_lon), (lower, lower + 1))


def _grid_faces(n_lat: int, n_lon: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(n_lat - 1), np.arange(n_lon), indexing="ij")
    a = rows * n_lon + cols
    b = rows * n_lon + (cols + 1) % n_lon
    c = a + n_lon
    d = b + n_lon
    quads = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    bottom, top = n_lat * n_lon, n_lat * n_lon + 1
    j = np.arange(n_lon)
    bottom_fan = np.stack([np.full(n_lon, bottom), (j + 1) % n_lon, j], -1)
    top_row = (n_lat - 1) * n_lon
    top_fan = np.stack([top_row + j, top_row + (j + 1) % n_lon, np.full(n_lon, top)], -1)
    return np.concatenate([quads, bottom_fan, top_fan]).astype(np.int64)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _ray_ellipsoid(d: np.ndarray, centre, axes) -> np.ndarray:
    """Distance along unit rays ``d`` (N,3) from the origin to the far side of an ellipsoid (0 if missed)."""
    c = np.asarray(centre) / np.asarray(axes)
    u = d / np.asarray(axes)
    a = (u * u).sum(-1)
    b = -2 * (u * c).sum(-1)
    cc = (c * c).sum() - 1.0
    disc = b * b - 4 * a * cc
    # Rays that miss (only for parts not containing the origin) contribute radius 0 to the union.
    return np.where(disc > 0, (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)


def _ray_neck(d: np.ndarray, centre_z: float, axes, top: float, bottom: float) -> np.ndarray:
    """Distance along rays ``d`` to a vertical elliptic cylinder with flat caps (origin inside)."""
    ax, az = axes
    a = (d[:, 0] / ax) ** 2 + (d[:, 2] / az) ** 2
    b = -2 * d[:, 2] * centre_z / az**2
    c = (centre_z / az) ** 2 - 1.0
    side = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * np.maximum(a, 1e-12))
    with np.errstate(divide="ignore"):
        cap = np.where(d[:, 1] < 0, bottom / np.minimum(d[:, 1], -1e-12), top / np.maximum(d[:, 1], 1e-12))
    return np.minimum(np.where(a > 1e-12, side, np.inf), cap)


def base_radius(d: np.ndarray, knobs: dict[str, float]) -> np.ndarray:
    """Radius of the smooth skull + face + jaw + neck union along directions ``d`` (N,3)."""
    w, length, height = knobs["head_width"], knobs["head_length"], knobs["head_height"]
    jaw_w, face_len = knobs["jaw_width"], knobs["face_length"]
    parts = [
        _ray_ellipsoid(d, (0, 0.024 * height, -0.016), (0.078 * w, 0.093 * height, 0.101 * length)),
        _ray_ellipsoid(d, (0, -0.022, 0.004), (0.070 * w, 0.070 * face_len, 0.090)),
        _ray_ellipsoid(d, (0, -0.049 * face_len, 0.0), (0.063 * jaw_w, 0.063 * face_len, 0.086)),
        _ray_neck(d, centre_z=-0.028, axes=(0.050, 0.056), top=0.0, bottom=-0.175),
    ]
    k = 160.0  # soft union of star-shaped parts = soft max of their radii
    stacked = np.stack(parts)
    top = stacked.max(0)
    return top + np.log(np.exp(k * (stacked - top)).sum(0)) / k


@dataclass
class Sculpt:
    """The head's radius and the semantic masks other builders reuse (all per vertex)."""

    radius: np.ndarray
    design_points: np.ndarray  # (V, 3) points of the smooth base surface (feature coordinates)
    vertices: np.ndarray       # (V, 3) final surface, design coordinates


DEFAULT_KNOBS = dict(
    head_width=1.0, head_length=1.0, head_height=1.0, jaw_width=1.0, face_length=1.0,
    nose_size=1.0, nose_length=1.0, nose_width=1.0, cheek=1.0, brow=1.0, chin=1.0,
    eye_spacing=1.0, lip=1.0, mouth_width=1.0, ear=1.0,
)


def sculpt(grid: HeadGrid, knobs: dict[str, float] | None = None) -> Sculpt:
    """Head surface for a set of semantic ``knobs`` (1.0 = the mean head)."""
    kn = dict(DEFAULT_KNOBS, **(knobs or {}))
    d = grid.directions
    r0 = base_radius(d, kn)
    base = d * r0[:, None]
    x, y, z = base.T
    front = smoothstep(0.02, 0.07, z)          # face region: forward-facing part of the head
    sx = np.abs(x)
    ex = EYE_X * kn["eye_spacing"]
    off = np.zeros_like(r0)

    # Forehead & brow ridge, then eye sockets with eyeballs and lids.
    off += 0.005 * kn["brow"] * gauss(sx, y, 0.027, BROW_Y, 0.020, 0.006) * front
    off -= 0.004 * gauss(sx, y, 0.068, 0.03, 0.012, 0.02) * smoothstep(0.0, 0.04, z)  # temples
    off += 0.0015 * gauss(x, y, 0.0, 0.045, 0.045, 0.03) * front
    off -= 0.013 * gauss(sx, y, ex, EYE_Y + 0.001, 0.017, 0.011) * front
    eye_r = np.sqrt(((sx - ex) / 0.0135) ** 2 + ((y - EYE_Y) / 0.0075) ** 2)
    off += 0.0085 * smoothstep(1.15, 0.2, eye_r) * front            # eyeball in the lid opening
    lid = gauss(sx, y, ex, EYE_Y + 0.0085, 0.014, 0.0025) + 0.6 * gauss(sx, y, ex, EYE_Y - 0.008, 0.013, 0.002)
    off += 0.0022 * lid * front

    # Nose: bridge rising to a rounded tip, then dropping to the subnasale; alar wings.
    ns, nl, nw = kn["nose_size"], kn["nose_length"], kn["nose_width"]
    tip_y = NOSE_TIP_Y * nl
    t_bridge = np.clip((NASION_Y - y) / (NASION_Y - tip_y), 0, 1)
    height = np.where(y > tip_y, 0.004 + 0.019 * t_bridge ** 1.3,
                      0.023 * np.clip(1 - ((tip_y - y) / (tip_y - SUBNASALE_Y + 0.0015)) ** 2, 0, 1))
    height = height * smoothstep(NASION_Y + 0.012, NASION_Y - 0.002, y) * smoothstep(SUBNASALE_Y - 0.004, SUBNASALE_Y + 0.001, y)
    half_w = (0.0065 + 0.004 * np.clip((NASION_Y - y) / 0.05, 0, 1)) * nw
    off += ns * height * np.exp(-0.5 * (x / half_w) ** 2) * front
    off += 0.007 * ns * nw * gauss(sx, y, 0.0135 * nw, tip_y - 0.007, 0.0055, 0.0055) * front
    off -= 0.0025 * gauss(sx, y, 0.0065, SUBNASALE_Y + 0.001, 0.003, 0.0025) * front  # nostrils

    # Cheeks, nasolabial folds.
    off += 0.005 * kn["cheek"] * gauss(sx, y, 0.042, -0.022, 0.016, 0.016) * front
    fold = np.abs((sx - 0.018) - 0.45 * (SUBNASALE_Y - y))
    off -= 0.0022 * np.exp(-0.5 * (fold / 0.0035) ** 2) * smoothstep(-0.03, -0.04, y) * smoothstep(-0.075, -0.062, y) * front

    # Lips (upper with philtrum and cupid's bow, lower fuller), mouth crease, chin.
    mw = MOUTH_HALF_WIDTH * kn["mouth_width"]
    mouth_span = np.exp(-((sx / mw) ** 3))
    off += 0.0042 * kn["lip"] * mouth_span * gauss(0, y, 0, MOUTH_Y + 0.0040, 1, 0.0042) * front
    off += 0.0048 * kn["lip"] * mouth_span * gauss(0, y, 0, MOUTH_Y - 0.0065, 1, 0.0050) * front
    off -= 0.0012 * gauss(x, y, 0.0, MOUTH_Y + 0.011, 0.003, 0.004) * front  # philtrum
    off -= 0.0025 * gauss(x, y, 0.0, -0.078, 0.016, 0.004) * front           # mentolabial sulcus
    off += 0.005 * kn["chin"] * gauss(x, y, 0.0, CHIN_Y, 0.017, 0.011) * front
    theta = np.arcsin(np.clip(d[:, 1], -1, 1))
    crease = np.exp(-0.5 * ((theta - MOUTH_LINE_THETA) / np.deg2rad(0.3)) ** 2)
    off -= 0.009 * crease * np.exp(-((sx / (mw * 1.02)) ** 6)) * front

    # Ears: rounded flaps on the sides.
    side = smoothstep(0.04, 0.07, sx)
    off += 0.012 * kn["ear"] * gauss(z, y, -0.012, 0.002, 0.011, 0.02) * side

    radius = np.maximum(r0 + off, 0.01)
    return Sculpt(radius=radius, design_points=base, vertices=d * radius[:, None])
