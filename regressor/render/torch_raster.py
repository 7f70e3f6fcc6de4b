"""A vectorised z-buffer rasterizer in plain torch (CPU and CUDA).

Why our own: pytorch3d's CPU ``rasterize_meshes`` tests every pixel against every face
(its coarse-to-fine binning exists only in CUDA, pytorch3d issue #469). On a head mesh at
128 px, batch 8, that is ~0.3 img/s on two cores -- far too slow to train on a CPU. This
rasterizer touches only the pixels inside each face's bounding box and does all the work in
a few large tensor ops, which is two to three orders of magnitude faster; on CUDA the
default stays pytorch3d.

Algorithm (hard rasterization, ``faces_per_pixel=1``):

1. Per face: screen bounding box in pixel-centre units, signed area, validity (finite,
   non-degenerate, optionally front-facing).
2. Faces are bucketed by bounding-box size (power-of-two width x height), so each bucket
   enumerates a dense ``(faces, bw * bh)`` grid of candidate pixels with little waste; large
   buckets are processed in chunks to bound memory.
3. Edge functions give barycentrics; a candidate is kept if the pixel centre is inside
   (all barycentrics >= 0) and its interpolated depth is > 0.
4. The nearest face per pixel is a single ``scatter_reduce('amin')`` over an int64 key
   ``(float32 depth bits << 32) | packed face id``. Positive floats order like their bit
   patterns, so this is an exact depth test, and equal depths resolve to the lower face id
   (as pytorch3d, which keeps the first face on ties).
5. Only for the winning (pixel, face) pairs the barycentrics and depth are recomputed with
   autograd from the screen-space vertices, so gradients flow to the vertices.

Output follows pytorch3d's conventions (packed face ids, -1 on background); see
``regressor.types.Fragments``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.types import Fragments

_NO_FACE = torch.iinfo(torch.int64).max
# Candidate (face, pixel) pairs evaluated per tensor op; bounds peak memory (~40 B each).
DEFAULT_MAX_CANDIDATES = 1 << 21
_DEGENERATE_AREA = 1e-10  # px^2; pytorch3d skips faces with |area| < 1e-8 in NDC^2 units


def _edge_barycentrics(face_xy: Tensor, px: Tensor, py: Tensor, area: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Barycentrics of points ``(px, py)`` in triangles; shapes broadcast.

    face_xy: (N, 3, 2) triangle corners; px, py: (N, K) or (N,); area: (N,) signed doubled area.
    """
    x0, y0 = face_xy[:, 0, 0:1], face_xy[:, 0, 1:2]
    x1, y1 = face_xy[:, 1, 0:1], face_xy[:, 1, 1:2]
    x2, y2 = face_xy[:, 2, 0:1], face_xy[:, 2, 1:2]
    if px.dim() == 1:
        px, py = px[:, None], py[:, None]
    inv_area = 1.0 / area[:, None]
    b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
    b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
    b2 = 1.0 - b0 - b1
    return b0, b1, b2


def signed_area(face_xy: Tensor) -> Tensor:
    """(N, 3, 2) -> (N,) doubled signed area in screen space (y down).

    Model-space counter-clockwise faces that face the camera come out *negative* here,
    because the screen's y axis points down.
    """
    e1 = face_xy[:, 1] - face_xy[:, 0]
    e2 = face_xy[:, 2] - face_xy[:, 0]
    return e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]


def _nearest_face_keys(
    face_verts: Tensor, batch: int, faces_per_mesh: int, height: int, width: int, cull_backfaces: bool,
    max_candidates: int,
) -> Tensor:
    """(B*F, 3, 3) detached screen faces -> (B*H*W,) int64 packed (depth, face) keys."""
    device = face_verts.device
    best = torch.full((batch * height * width,), _NO_FACE, dtype=torch.int64, device=device)
    if face_verts.shape[0] == 0 or best.numel() == 0:
        return best
    fv = face_verts.float()
    xy, z = fv[..., :2], fv[..., 2]
    area = signed_area(xy)
    valid = torch.isfinite(fv).flatten(1).all(dim=1) & (area.abs() > _DEGENERATE_AREA) & (z.amax(dim=1) > 0)
    if cull_backfaces:
        valid &= area < 0
    # Pixel (col, row) is a candidate if its centre (col + .5, row + .5) lies in the bounding box.
    xy_safe = torch.nan_to_num(xy, nan=-1.0, posinf=-1.0, neginf=-1.0).clamp(-1e6, 1e6)
    col_lo = torch.ceil(xy_safe[..., 0].amin(dim=1) - 0.5).clamp(min=0)
    col_hi = torch.floor(xy_safe[..., 0].amax(dim=1) - 0.5).clamp(max=width - 1)
    row_lo = torch.ceil(xy_safe[..., 1].amin(dim=1) - 0.5).clamp(min=0)
    row_hi = torch.floor(xy_safe[..., 1].amax(dim=1) - 0.5).clamp(max=height - 1)
    valid &= (col_hi >= col_lo) & (row_hi >= row_lo)
    face_ids = valid.nonzero().squeeze(1)
    if face_ids.numel() == 0:
        return best
    col_lo, row_lo = col_lo[face_ids].long(), row_lo[face_ids].long()
    box_w = col_hi[face_ids].long() - col_lo + 1
    box_h = row_hi[face_ids].long() - row_lo + 1
    # Bucket by power-of-two box size: log2 of the next power of two (0 for 1 px).
    log_w = torch.ceil(torch.log2(box_w.float())).long()
    log_h = torch.ceil(torch.log2(box_h.float())).long()
    bucket = log_w * 64 + log_h
    order = torch.argsort(bucket)
    bucket_sorted = bucket[order]
    unique_buckets, counts = torch.unique_consecutive(bucket_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pixels_per_image = height * width
    for key, start, count in zip(unique_buckets.tolist(), starts.tolist(), counts.tolist()):
        grid_w, grid_h = 1 << (key // 64), 1 << (key % 64)
        cells = grid_w * grid_h
        dx = torch.arange(grid_w, device=device).repeat(grid_h)
        dy = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
        chunk = max(1, max_candidates // cells)
        for c0 in range(start, start + count, chunk):
            sel = order[c0:min(c0 + chunk, start + count)]
            fid = face_ids[sel]
            px = col_lo[sel, None] + dx
            py = row_lo[sel, None] + dy
            in_box = (px - col_lo[sel, None] < box_w[sel, None]) & (py - row_lo[sel, None] < box_h[sel, None])
            b0, b1, b2 = _edge_barycentrics(xy[fid], px.float() + 0.5, py.float() + 0.5, area[fid])
            zf = z[fid]
            depth = b0 * zf[:, 0:1] + b1 * zf[:, 1:2] + b2 * zf[:, 2:3]
            hit = in_box & (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (depth > 0)
            hit_face, hit_cell = hit.nonzero(as_tuple=True)
            if hit_face.numel() == 0:
                continue
            packed_face = fid[hit_face]
            image = packed_face // faces_per_mesh
            pixel = image * pixels_per_image + py[hit_face, hit_cell] * width + px[hit_face, hit_cell]
            depth_bits = depth[hit_face, hit_cell].contiguous().view(torch.int32).to(torch.int64)
            keys = (depth_bits << 32) | packed_face
            best.scatter_reduce_(0, pixel, keys, reduce="amin", include_self=True)
    return best


def rasterize_torch(
    verts_screen: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    cull_backfaces: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> Fragments:
    """Hard z-buffer rasterization of a batch of meshes sharing one topology.

    Args:
        verts_screen: (B, V, 3) screen-space ``(x px, y px, depth)``; validated by the caller.
        faces: (F, 3) long vertex indices.
        image_size: (H, W).
        cull_backfaces: drop faces whose screen winding is clockwise-from-the-viewer's
            side, i.e. faces pointing away from the camera (model-space CCW convention).
    Returns:
        Fragments with (B, H, W, 1) ``pix_to_face`` (packed ``b * F + f``, -1 background),
        (B, H, W, 1, 3) ``bary_coords`` and (B, H, W, 1) ``zbuf`` -- the latter two
        differentiable w.r.t. ``verts_screen``.
    """
    height, width = image_size
    batch, num_faces = verts_screen.shape[0], faces.shape[0]
    face_verts = verts_screen[:, faces].reshape(batch * num_faces, 3, 3)  # (B*F, 3, 3), keeps autograd
    best = _nearest_face_keys(face_verts.detach(), batch, num_faces, height, width, cull_backfaces, max_candidates)
    covered = best != _NO_FACE
    pix_to_face = torch.where(covered, best & 0xFFFFFFFF, torch.full_like(best, -1))

    pixel = covered.nonzero().squeeze(1)
    dtype = verts_screen.dtype
    bary = torch.full((batch * height * width, 3), -1.0, dtype=dtype, device=verts_screen.device)
    zbuf = torch.full((batch * height * width,), -1.0, dtype=dtype, device=verts_screen.device)
    if pixel.numel() > 0:
        winner = face_verts[pix_to_face[pixel]]  # (N, 3, 3) differentiable
        in_image = pixel % (height * width)
        px = (in_image % width).to(dtype) + 0.5
        py = torch.div(in_image, width, rounding_mode="floor").to(dtype) + 0.5
        b0, b1, b2 = _edge_barycentrics(winner[..., :2], px, py, signed_area(winner[..., :2]))
        winner_bary = torch.cat([b0, b1, b2], dim=1)
        winner_depth = (winner_bary * winner[..., 2]).sum(dim=1)
        bary = bary.index_put((pixel,), winner_bary)
        zbuf = zbuf.index_put((pixel,), winner_depth)
    return Fragments(
        pix_to_face=pix_to_face.view(batch, height, width, 1),
        bary_coords=bary.view(batch, height, width, 1, 3),
        zbuf=zbuf.view(batch, height, width, 1),
    )
