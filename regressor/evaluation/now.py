"""NoW-style scan-to-mesh error (Sanyal et al. 2019), on our synthetic "scans".

The protocol, as in NoW's public evaluation code:

1. crop the scan to a sphere around the face (centre and radius from the 7 NoW landmarks);
2. similarity Procrustes of the predicted mesh onto the scan on the 7 landmark pairs;
3. refine scale, rotation and translation by minimising the scan-to-mesh distance;
4. error = unsigned distance from every cropped scan point to the closest point on the predicted
   *surface* (pytorch3d's point-to-triangle distance, not nearest vertex), pooled over samples:
   median / mean / std in mm.

A REALY-like regional breakdown (nose, mouth, forehead, cheeks) is added; regions are assigned
from the scan's own 7 landmarks, so the metric works for any topology.

Procrustes uses ``regressor.evaluation.metrics.similarity_transform`` (Umeyama) and the distance uses
``pytorch3d``'s ``point_face_distance``; what is written here is only the protocol glue.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pytorch3d.loss.point_mesh_distance import point_face_distance
from pytorch3d.transforms import axis_angle_to_matrix
from torch import Tensor

from regressor.evaluation.metrics import MM_PER_METRE, similarity_transform

REGIONS = ("nose", "mouth", "forehead", "cheeks")
# indices into the 7 NoW landmarks (see regressor.types)
R_EYE_OUT, R_EYE_IN, L_EYE_IN, L_EYE_OUT, NOSE_BOTTOM, R_MOUTH, L_MOUTH = range(7)


@dataclass
class Similarity:
    """``x -> scale * x @ rotation + translation`` (row vectors, pytorch3d convention)."""

    scale: Tensor  # ()
    rotation: Tensor  # (3, 3)
    translation: Tensor  # (3,)

    def apply(self, points: Tensor) -> Tensor:
        return self.scale * points @ self.rotation + self.translation


@dataclass
class NowResult:
    """Per-point errors in mm, pooled over samples, plus the region label of every point."""

    errors_mm: Tensor  # (N,)
    regions: Tensor  # (N,) long, index into REGIONS, -1 = outside all regions
    per_sample_median_mm: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = _stats(self.errors_mm)
        for index, name in enumerate(REGIONS):
            selected = self.errors_mm[self.regions == index]
            if selected.numel():
                out[f"{name}_mean_mm"] = float(selected.mean())
                out[f"{name}_median_mm"] = float(selected.median())
        return out

    @staticmethod
    def cat(results: list["NowResult"]) -> "NowResult":
        return NowResult(
            errors_mm=torch.cat([r.errors_mm for r in results]),
            regions=torch.cat([r.regions for r in results]),
            per_sample_median_mm=[m for r in results for m in r.per_sample_median_mm],
        )


def _stats(errors_mm: Tensor) -> dict[str, float]:
    return {"median_mm": float(errors_mm.median()), "mean_mm": float(errors_mm.mean()), "std_mm": float(errors_mm.std())}


def procrustes(source: Tensor, target: Tensor) -> Similarity:
    """Similarity transform (no reflection) mapping ``source`` (P,3) landmarks onto ``target`` (P,3)."""
    result = similarity_transform(source[None].double(), target[None].double())
    return Similarity(result.scale[0].to(source), result.rotation[0].to(source), result.translation[0].to(source))


def crop_scan(scan: Tensor, scan_now_landmarks: Tensor) -> Tensor:
    """Bool mask (N,) of scan points inside NoW's face sphere."""
    nose = scan_now_landmarks[NOSE_BOTTOM]
    mid_inner_eyes = 0.5 * (scan_now_landmarks[R_EYE_IN] + scan_now_landmarks[L_EYE_IN])
    centre = nose + 0.3 * (mid_inner_eyes - nose)
    outer_eye_distance = (scan_now_landmarks[R_EYE_OUT] - scan_now_landmarks[L_EYE_OUT]).norm()
    nose_length = (mid_inner_eyes - nose).norm()
    radius = 1.4 * (outer_eye_distance + nose_length) / 2
    return (scan - centre).norm(dim=-1) <= radius


def face_frame(points: Tensor, now_landmarks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(u, v, w) per point (N,) in the frame of the 7 NoW landmarks.

    u runs from the subject's right to left eye (units: outer-eye distance), v up from the nose
    bottom (units: nose-bottom-to-eye-line distance), w towards the camera (outer-eye distances).
    The one frame used by the region labels below and by the critic's face crops.
    """
    eye_centre = 0.25 * (now_landmarks[R_EYE_OUT] + now_landmarks[R_EYE_IN] + now_landmarks[L_EYE_IN]
                         + now_landmarks[L_EYE_OUT])
    nose = now_landmarks[NOSE_BOTTOM]
    x_axis = now_landmarks[L_EYE_OUT] - now_landmarks[R_EYE_OUT]
    eye_width = x_axis.norm()
    x_axis = x_axis / eye_width
    y_axis = eye_centre - nose
    y_axis = y_axis - (y_axis @ x_axis) * x_axis
    height = y_axis.norm()
    y_axis = y_axis / height
    z_axis = torch.linalg.cross(x_axis, y_axis)
    offset = points - nose
    return (offset @ x_axis) / eye_width, (offset @ y_axis) / height, (offset @ z_axis) / eye_width


def assign_regions(points: Tensor, now_landmarks: Tensor) -> Tensor:
    """Region label per point (N,) from a face frame spanned by the 7 landmarks.

    u runs from the subject's right to left eye (units: outer-eye distance), v runs up from the
    nose bottom (units: nose-bottom-to-eye-line distance).
    """
    u, v, _ = face_frame(points, now_landmarks)
    eye_width = (now_landmarks[L_EYE_OUT] - now_landmarks[R_EYE_OUT]).norm()
    mouth_half_width = 0.5 * (now_landmarks[L_MOUTH] - now_landmarks[R_MOUTH]).norm() / eye_width
    labels = torch.full(points.shape[:1], -1, dtype=torch.long, device=points.device)
    cheeks = (u.abs() >= 0.18) & (v > -0.9) & (v < 1.0)
    forehead = v >= 1.25
    mouth = (u.abs() < mouth_half_width + 0.1) & (v <= -0.15) & (v > -1.6)
    nose_region = (u.abs() < 0.18) & (v > -0.15) & (v < 1.0)
    labels[cheeks] = REGIONS.index("cheeks")
    labels[forehead] = REGIONS.index("forehead")
    labels[mouth] = REGIONS.index("mouth")
    labels[nose_region] = REGIONS.index("nose")
    return labels


def _point_triangle_squared(points: Tensor, triangles: Tensor, candidates: Tensor) -> Tensor:
    """(N,) squared distance from each point (N,3) to the nearest of its candidate triangles.

    ``candidates`` (N,K) indexes ``triangles`` (F,3,3). Every point becomes its own "mesh" of K
    triangles for pytorch3d's kernel, so the cost is N*K instead of N*F.
    """
    n, k = candidates.shape
    packed = triangles[candidates.reshape(-1)]  # (N*K, 3, 3)
    points_first = torch.arange(n, device=points.device)
    triangles_first = points_first * k
    return point_face_distance(points, points_first, packed, triangles_first, n)


def scan_to_mesh_distance(
    points: Tensor, vertices: Tensor, faces: Tensor, smoothing: float = 0.0, candidates: Tensor | None = None,
) -> Tensor:
    """Unsigned distance (N,) from each point to the closest point on the triangle surface.

    Exact, but not brute force: pytorch3d's CPU kernel tests every point against every face
    (N*F with backward; minutes per head mesh over the refinement). ``nearest_triangle_candidates``
    picks, per point, the triangles with the smallest lower bound ``|p - c_t| - r_t`` (centroid
    distance minus the triangle's radius), and only those go through pytorch3d's kernel. Where
    the best candidate beats the next-smallest bound the answer is certified exact; the other
    points fall back to the brute-force kernel.

    ``candidates`` (N,K) reuses a candidate set (the refinement's fixed set): then the result
    is the distance to the nearest *candidate* (an upper bound, exact while the mesh moves
    little) and nothing is certified.

    pytorch3d's kernel is float32-only; both inputs are centred on the points' mean first so
    that float32 keeps sub-micrometre precision for heads far from the origin.
    """
    centre = points.detach().mean(0)
    triangles = (vertices - centre)[faces].float()
    local = (points - centre).float()
    if candidates is not None:
        squared = _candidate_squared_distance(local, triangles, candidates)
    else:
        index, bound = nearest_triangle_candidates(local, triangles)
        squared = _candidate_squared_distance(local, triangles, index)
        uncertain = squared.detach().clamp_min(0).sqrt() > bound
        if uncertain.any():
            rows = uncertain.nonzero()[:, 0]
            first = torch.zeros(1, dtype=torch.long, device=points.device)
            brute = point_face_distance(local[rows], first, triangles, first, rows.numel())
            squared = squared.index_put((rows,), brute)
    # ``smoothing`` (m^2) keeps the gradient of sqrt finite at zero distance during refinement
    return (squared.clamp_min(0) + smoothing).sqrt().to(points.dtype)


@torch.no_grad()
def nearest_triangle_candidates(
    points: Tensor, triangles: Tensor, k: int = 128, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Per point (N,3), the ``k`` triangles (F,3,3) with the smallest distance lower bound.

    Returns ``(index (N,k), bound (N,))``: no triangle outside ``index`` is closer than ``bound``
    (the (k+1)-th smallest lower bound; +inf when every triangle is a candidate).
    """
    points, triangles = points.detach().float(), triangles.detach().float()
    centroids = triangles.mean(1)
    radius = (triangles - centroids[:, None]).norm(dim=-1).max(1).values  # (F,)
    count = triangles.shape[0]
    take = min(k + 1, count)
    indices, bounds = [], []
    for part in points.split(chunk):
        lower = torch.cdist(part, centroids) - radius[None]
        values, index = lower.topk(take, dim=1, largest=False)
        if take <= k:
            indices.append(index)
            bounds.append(torch.full_like(values[:, 0], float("inf")))
        else:
            indices.append(index[:, :k])
            bounds.append(values[:, k])
    return torch.cat(indices), torch.cat(bounds)


def _candidate_squared_distance(points: Tensor, triangles: Tensor, candidates: Tensor) -> Tensor:
    """(N,) squared distance from each point (N,3) to the nearest of its candidate triangles (N,K).

    Every point becomes its own "mesh" of K triangles for pytorch3d's kernel (cost N*K).
    """
    n, k = candidates.shape
    packed = triangles[candidates.reshape(-1)]  # (N*K, 3, 3)
    points_first = torch.arange(n, device=points.device)
    return point_face_distance(points, points_first, packed, points_first * k, n)


def refine_alignment(
    points: Tensor, vertices: Tensor, faces: Tensor, init: Similarity, steps: int = 50, lr: float = 2e-3,
    refresh_every: int = 25,
) -> Similarity:
    """Minimise the mean scan-to-mesh distance over a similarity applied to the *mesh*.

    Parametrised as a delta around ``init`` (log-scale keeps the scale positive). The nearest
    candidate triangles are re-selected every ``refresh_every`` steps (the optimiser only needs
    the distance near the current pose; the final error is computed exactly).
    """
    device, dtype = vertices.device, vertices.dtype
    log_scale = torch.zeros((), device=device, dtype=dtype, requires_grad=True)
    axis_angle = torch.zeros(3, device=device, dtype=dtype, requires_grad=True)
    shift = torch.zeros(3, device=device, dtype=dtype, requires_grad=True)
    aligned = init.apply(vertices).detach()
    centre = aligned.mean(0).detach()
    extent = (aligned - centre).norm(dim=-1).mean().detach()
    optimizer = torch.optim.Adam([log_scale, axis_angle, shift], lr=lr)

    def transform() -> Similarity:
        rotation = axis_angle_to_matrix(axis_angle)
        scale = log_scale.exp()
        # rotate/scale about the mesh centre, then shift (in units of the mesh extent)
        return Similarity(scale, rotation, centre - scale * centre @ rotation + shift * extent)

    candidates = None
    best, best_delta = float("inf"), None
    with torch.enable_grad():
        for step in range(steps):
            optimizer.zero_grad()
            current = transform()
            moved = current.apply(aligned)
            if step % refresh_every == 0:  # the mesh moves little: reuse the nearest triangles a while
                candidates, _ = nearest_triangle_candidates(points.float(), moved[faces].float(), k=32)
            distance = scan_to_mesh_distance(points, moved, faces, smoothing=1e-12, candidates=candidates)
            loss = distance.mean()
            # keep the best iterate: Adam's first steps have a fixed length, so a start that is
            # already (nearly) optimal would otherwise be left for a worse pose
            if float(loss.detach()) < best:
                best = float(loss.detach())
                best_delta = Similarity(current.scale.detach(), current.rotation.detach(), current.translation.detach())
            loss.backward()
            optimizer.step()
    delta = transform()
    delta = Similarity(delta.scale.detach(), delta.rotation.detach(), delta.translation.detach())
    if best_delta is not None:
        with torch.no_grad():
            final = float(scan_to_mesh_distance(points, delta.apply(aligned), faces, candidates=candidates).mean())
        if best < final:
            delta = best_delta
    # compose: delta(init(x))
    return Similarity(
        delta.scale * init.scale,
        init.rotation @ delta.rotation,
        delta.scale * init.translation @ delta.rotation + delta.translation,
    )


def now_error(
    pred_vertices: Tensor,
    faces: Tensor,
    pred_now_landmarks: Tensor,
    gt_vertices: Tensor,
    gt_now_landmarks: Tensor,
    refine_steps: int = 50,
    crop: bool = True,
) -> NowResult:
    """NoW error for one sample (all inputs in metres, unbatched). Returns per-point errors in mm."""
    pred_vertices, gt_vertices = pred_vertices.detach().double(), gt_vertices.detach().double()
    pred_now_landmarks, gt_now_landmarks = pred_now_landmarks.detach().double(), gt_now_landmarks.detach().double()
    for name, tensor in (("pred_vertices", pred_vertices), ("gt_vertices", gt_vertices)):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"now_error: {name} contains non-finite values")
    scan = gt_vertices[crop_scan(gt_vertices, gt_now_landmarks)] if crop else gt_vertices
    alignment = procrustes(pred_now_landmarks, gt_now_landmarks)
    if refine_steps > 0:
        alignment = refine_alignment(scan, pred_vertices, faces, alignment, steps=refine_steps)
    errors_mm = scan_to_mesh_distance(scan, alignment.apply(pred_vertices), faces).float() * MM_PER_METRE
    return NowResult(
        errors_mm=errors_mm,
        regions=assign_regions(scan, gt_now_landmarks).to(errors_mm.device),
        per_sample_median_mm=[float(errors_mm.median())],
    )


def now_error_batch(
    pred_vertices: Tensor, faces: Tensor, pred_now_landmarks: Tensor, gt_vertices: Tensor,
    gt_now_landmarks: Tensor, refine_steps: int = 50,
) -> NowResult:
    """``now_error`` over a batch (B,V,3) / (B,7,3), pooled as NoW pools over images."""
    return NowResult.cat([
        now_error(pred_vertices[b], faces, pred_now_landmarks[b], gt_vertices[b], gt_now_landmarks[b], refine_steps)
        for b in range(pred_vertices.shape[0])
    ])


def cumulative_error_curve(errors_mm: Tensor, max_mm: float = 5.0, bins: int = 101) -> tuple[Tensor, Tensor]:
    """(thresholds, fraction of points with error <= threshold), as plotted in the NoW paper."""
    thresholds = torch.linspace(0, max_mm, bins)
    fraction = (errors_mm[None, :].cpu() <= thresholds[:, None]).float().mean(dim=1)
    return thresholds, fraction
