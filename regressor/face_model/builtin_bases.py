"""Linear bases and rig of the built-in head: identity, expression, skinning, joints, pose correctives.

Identity components are finite differences of the sculpting knobs (head width, nose size, ...)
followed by smooth random fields; expression components are displacement fields of named
facial actions (smile, brow raise, ...) followed by small localised random fields. Each basis
is orthonormalised (w.r.t. the flattened (V*3,) vertex vector, semantic components first) and
then scaled so that the per-vertex RMS displacement of one unit decreases with the index.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from regressor.face_model.builtin_mesh import (
    DEFAULT_KNOBS, EYE_X, EYE_Y, MOUTH_HALF_WIDTH, MOUTH_LINE_THETA, MOUTH_Y, HeadGrid, Sculpt,
    gauss, sculpt, smoothstep,
)

N_IDENTITY, N_EXPRESSION = 300, 100
# Identity knobs in decreasing order of effect, with their std (relative to 1.0 = the mean head).
IDENTITY_KNOBS = {
    "head_width": 0.05, "head_length": 0.045, "head_height": 0.045, "face_length": 0.05, "jaw_width": 0.08,
    "cheek": 0.5, "nose_size": 0.18, "chin": 0.5, "brow": 0.5, "nose_length": 0.12, "nose_width": 0.15,
    "ear": 0.35, "lip": 0.3, "eye_spacing": 0.04,
}
EXPRESSION_STD = 0.6  # a named action's full displacement field is ~1.7 sigma
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")


def _random_fields(rng: np.random.Generator, points: np.ndarray, amplitudes: np.ndarray, scale: float,
                   weight: np.ndarray) -> list:
    """Smooth displacement fields (V,3) with max |displacement| ``amplitudes[i]`` (metres).

    Each is a sum of random Gaussian blobs, mostly along the surface normal (approximated by
    the radial direction) with some tangential slide; every other field is mirror-symmetric.
    """
    radial = points / np.linalg.norm(points, axis=1, keepdims=True)
    span = points.max(0) - points.min(0)
    fields = []
    for i, amplitude in enumerate(amplitudes):
        width = scale * (1.0 + 1.5 * rng.random())
        centres = points.min(0) + rng.random((6, 3)) * span
        normal_amps, slide_amps = rng.normal(size=6), 0.3 * rng.normal(size=(6, 3))
        field = np.zeros_like(points)
        mirrors = (1, -1) if i % 2 == 0 else (1,)
        for c, a, t in zip(centres, normal_amps, slide_amps):
            for m in mirrors:  # symmetric partner: the blob mirrored across x = 0
                blob = np.exp(-0.5 * ((points - c * [m, 1, 1]) ** 2).sum(-1) / width**2)[:, None]
                field += blob * (a * radial + t * [m, 1, 1])
        field *= weight[:, None]
        fields.append(field * amplitude / max(np.linalg.norm(field, axis=1).max(), 1e-12))
    return fields


def _orthogonalised(fields: list[np.ndarray]) -> np.ndarray:
    """Gram-Schmidt in the given order, keeping each residual's own magnitude as its std.

    Column k is the part of ``fields[k]`` orthogonal to the earlier ones (w.r.t. the flattened
    (V*3,) vector); columns are then sorted by that std (the basis is ordered by variance; the
    semantic components are the larger ones, so they come first). Returns (V, 3, K).
    """
    matrix = np.stack([f.reshape(-1) for f in fields], 1)
    q, scale = matrix, np.ones(matrix.shape[1])
    for _ in range(2):  # CholeskyQR2: Gram-Schmidt order, positive diagonal (keeps semantic signs)
        upper = np.linalg.cholesky(q.T @ q).T
        q = scipy.linalg.solve_triangular(upper, q.T, trans="T").T
        scale = scale * np.diag(upper)
    order = np.argsort(-scale, kind="stable")
    return (q * scale[None, :])[:, order].reshape(matrix.shape[0] // 3, 3, -1)


def identity_basis(grid: HeadGrid, rng: np.random.Generator, n: int = N_IDENTITY) -> np.ndarray:
    """(V, 3, n) identity basis: one sigma of each sculpting knob, then smooth random fields."""
    neutral = sculpt(grid).vertices
    fields = [sculpt(grid, {k: DEFAULT_KNOBS[k] + std}).vertices - neutral for k, std in IDENTITY_KNOBS.items()]
    amplitudes = 0.003 / (1.0 + np.arange(n - len(fields)) / 8.0)
    fields += _random_fields(rng, neutral, amplitudes, scale=0.025, weight=np.ones(len(neutral)))
    return _orthogonalised(fields)


def _front(v: np.ndarray) -> np.ndarray:
    return smoothstep(0.02, 0.07, v[:, 2])


def expression_fields(v: np.ndarray) -> dict[str, np.ndarray]:
    """Named facial actions as (V,3) displacement fields on the neutral head (design coordinates)."""
    x, y, z = v.T
    sx, sign = np.abs(x), np.sign(x)
    front = _front(v)
    mw = MOUTH_HALF_WIDTH
    corners = gauss(sx, y, mw, MOUTH_Y, 0.011, 0.011) * front
    lips = np.exp(-((sx / (mw * 1.1)) ** 4)) * gauss(0, y, 0, MOUTH_Y, 1, 0.011) * front
    brows = gauss(sx, y, 0.028, 0.030, 0.024, 0.012) * front
    inner_brows = gauss(sx, y, 0.012, 0.028, 0.011, 0.010) * front
    eye = np.sqrt(((sx - EYE_X) / 0.0135) ** 2 + ((y - EYE_Y) / 0.0075) ** 2)
    upper_eye = smoothstep(1.3, 0.5, eye) * smoothstep(EYE_Y - 0.009, EYE_Y + 0.002, y) * front
    cheeks = gauss(sx, y, 0.042, -0.035, 0.017, 0.017) * front
    upper_lip = lips * smoothstep(MOUTH_Y - 0.001, MOUTH_Y + 0.002, y)
    lower_lip = lips * smoothstep(MOUTH_Y + 0.001, MOUTH_Y - 0.002, y)
    nose_sides = gauss(sx, y, 0.012, -0.02, 0.01, 0.012) * front
    vec = lambda dx, dy, dz: np.stack(np.broadcast_arrays(dx, dy, dz), -1)  # noqa: E731
    left, right = (x > 0).astype(float), (x < 0).astype(float)
    smile = vec(0.004 * sign * corners, 0.006 * corners + 0.003 * cheeks, -0.002 * corners + 0.002 * cheeks)
    eye_close = vec(0 * y, -0.0085 * upper_eye, 0.0015 * upper_eye)
    return {
        "smile": smile,
        "brow_raise": vec(0 * x, 0.006 * brows, 0.0005 * brows),
        "frown": vec(-0.003 * sign * inner_brows, -0.004 * inner_brows, 0.0015 * inner_brows),
        "eye_closure": eye_close,
        "lip_pucker": vec(-0.006 * x / mw * lips, 0 * y, 0.007 * lips),
        "mouth_stretch": vec(0.006 * sign * corners, -0.002 * corners, -0.002 * lips),
        "cheek_puff": vec(0.006 * sign * cheeks, 0 * y, 0.003 * cheeks),
        "lip_press": vec(0 * x, -0.002 * upper_lip + 0.002 * lower_lip, -0.003 * lips),
        "smile_left": smile * left[:, None],
        "eye_closure_left": eye_close * left[:, None],
        "lower_lip_down": vec(0 * x, -0.004 * lower_lip, 0.001 * lower_lip),
        "upper_lip_raise": vec(0 * x, 0.003 * upper_lip, 0.001 * upper_lip),
        "nose_wrinkle": vec(0 * x, 0.003 * nose_sides, 0.001 * nose_sides),
        "frown_mouth": vec(0.001 * sign * corners, -0.005 * corners, 0 * z),
        "brow_raise_right": vec(0 * x, 0.006 * brows * right, 0 * z),
    }


def expression_basis(grid: HeadGrid, rng: np.random.Generator, n: int = N_EXPRESSION) -> np.ndarray:
    """(V, 3, n) expression basis: named actions first, then small localised random fields."""
    v = sculpt(grid).vertices
    fields = [EXPRESSION_STD * f for f in expression_fields(v).values()]
    face = _front(v) * smoothstep(0.06, 0.045, v[:, 1]) * smoothstep(-0.12, -0.1, v[:, 1])
    amplitudes = 0.0012 / (1.0 + np.arange(n - len(fields)) / 8.0)
    fields += _random_fields(rng, v, amplitudes, scale=0.012, weight=face)
    return _orthogonalised(fields)


def skinning_weights(grid: HeadGrid, s: Sculpt) -> np.ndarray:
    """(V, 5) LBS weights: the jaw takes the lower face (hard step across the lip crease)."""
    x, y, z = s.design_points.T
    sx = np.abs(x)
    theta = np.arcsin(np.clip(grid.directions[:, 1], -1, 1))
    below_crease = (theta < MOUTH_LINE_THETA).astype(float)
    # Across the lips the jaw weight steps at the crease; elsewhere it blends smoothly.
    lips = np.exp(-((sx / (MOUTH_HALF_WIDTH * 1.05)) ** 6) - ((y - MOUTH_Y) / 0.016) ** 4)
    lower_face = smoothstep(-0.045, -0.085, y)
    jaw = lips * below_crease + (1 - lips) * lower_face
    jaw *= smoothstep(-0.04, 0.035, z) * smoothstep(-0.165, -0.11, y)
    root = smoothstep(-0.15, -0.19, y)
    eye = np.sqrt(((sx - EYE_X) / 0.0135) ** 2 + ((y - EYE_Y) / 0.0075) ** 2)
    eyeball = smoothstep(1.05, 0.7, eye) * _front(s.design_points)
    left, right = eyeball * (x > 0), eyeball * (x < 0)
    jaw = jaw * (1 - root)
    neck = 1 - root - jaw - left - right
    return np.stack([root, neck, jaw, left, right], 1)


def joint_positions(s: Sculpt) -> np.ndarray:
    """(5, 3) rest joints in design coordinates: root, neck, jaw hinge, eyeball centres."""
    surface_z = s.vertices[:, 2]
    eye_z = []
    for side in (1, -1):
        d = (s.design_points[:, 0] - side * EYE_X) ** 2 + (s.design_points[:, 1] - EYE_Y) ** 2
        eye_z.append(surface_z[np.argmin(d + 1e3 * (s.design_points[:, 2] < 0))] - 0.012)
    return np.array([
        [0.0, -0.150, -0.025],
        [0.0, -0.100, -0.020],
        [0.0, -0.022, -0.005],
        [EYE_X, EYE_Y, eye_z[0]],
        [-EYE_X, EYE_Y, eye_z[1]],
    ])


def joint_regressor(s: Sculpt, joints: np.ndarray) -> np.ndarray:
    """(5, V) affine vertex weights (each row sums to 1) reproducing ``joints`` on the template.

    Each joint uses a ring of nearby vertices; the minimum-norm correction of their mean makes
    the regressed joint exact on the template while following identity changes of that ring.
    """
    v, p = s.vertices, s.design_points
    x, y, z = p.T
    eye = lambda side: np.sqrt(((x - side * EYE_X) / 0.0135) ** 2 + ((y - EYE_Y) / 0.0075) ** 2)  # noqa: E731
    rings = [
        np.abs(y + 0.15) < 0.008,
        np.abs(y + 0.10) < 0.008,
        (np.abs(y + 0.022) < 0.012) & (np.abs(x) > 0.05) & (np.abs(z) < 0.03),
        (eye(1) < 1.8) & (z > 0),
        (eye(-1) < 1.8) & (z > 0),
    ]
    regressor = np.zeros((5, len(v)))
    for j, ring in enumerate(rings):
        idx = np.nonzero(ring)[0]
        a = np.concatenate([v[idx].T, np.ones((1, len(idx)))])  # (4, K)
        w0 = np.full(len(idx), 1.0 / len(idx))
        b = np.concatenate([joints[j], [1.0]])
        w = w0 + a.T @ np.linalg.solve(a @ a.T, b - a @ w0)
        regressor[j, idx] = w
    return regressor


def pose_correctives(s: Sculpt, weights: np.ndarray) -> np.ndarray:
    """(V, 3, 36) pose blendshapes: opening the jaw slims the stretched cheeks a little.

    Pose feature layout (FLAME): for the non-root joints (neck, jaw, eyes) the 9 entries of
    ``R - I``; entry (2, 1) of the jaw (index 9 + 7 = 16) is sin(opening angle).
    """
    posedirs = np.zeros((len(weights), 3, 36))
    jaw = weights[:, 2]
    stretch = 4 * jaw * (1 - jaw)  # the skin between fixed and moving parts
    inward = -s.design_points * [1, 0, 0.3] / np.maximum(np.linalg.norm(s.design_points, axis=1, keepdims=True), 1e-6)
    posedirs[:, :, 16] = 0.006 * stretch[:, None] * inward
    return posedirs
