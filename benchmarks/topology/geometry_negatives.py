"""Same-topology negatives for meshes of any family: a registry of vertex-space perturbations.

The critic must compare *shape*, not mesh family, so every negative here keeps its
positive's topology (a face crop, a remeshed head, a subdivided head, a head with holes) and moves
only its vertices. Each type is one function registered by name with ``@register_geometry_negative``;
a duplicate name is refused (as ``register_loss`` refuses one), and ``build`` refuses unknown names.

A perturbation ``fn(vertices (C, V, 3), faces (F, 3), severity (C,), generator, anchors) -> (C, V, 3)``
moves the geometry by an amount that grows with ``severity`` in [0, 1]; ``anchors`` holds (3,) points
for local edits (``nose``, ``left_cheek``, ``right_cheek``, ``chin``). All lengths in metres.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.critic.negatives import MeshSmoother
from regressor.registry import Registry

GeometryNegative = Callable[[Tensor, Tensor, Tensor, torch.Generator, dict], Tensor]
_REGISTRY: Registry[GeometryNegative] = Registry("geometry negative")

SMOOTH_ITERATIONS = 40
DEPTH_CHANGE = 0.4
BUMP_MM = 8.0
BUMP_RADIUS_MM = 20.0
FIELD_MM = 6.0


def register_geometry_negative(name: str) -> Callable[[GeometryNegative], GeometryNegative]:
    """Decorator: make ``fn`` available as geometry negative ``name``; a second ``name`` is an error."""
    return _REGISTRY.register(name)


def geometry_negative_types() -> tuple[str, ...]:
    """Registered names, in registration order (their index is stable within a run)."""
    return _REGISTRY.names()


def build(name: str) -> GeometryNegative:
    return _REGISTRY.get(name)


def perturb(name: str, vertices: Tensor, faces: Tensor, severity: Tensor, generator: torch.Generator,
            anchors: dict[str, Tensor]) -> Tensor:
    """Apply negative ``name`` to C copies (C, V, 3) with severities (C,)."""
    return build(name)(vertices, faces, severity.to(vertices), generator, anchors)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(C, V, 3) area-weighted unit vertex normals of (C, V, 3) vertices on (F, 3) faces."""
    corners = vertices[:, faces]  # (C, F, 3, 3)
    face_normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_normals)
    return F.normalize(normals, dim=-1, eps=1e-12)


def boundary_vertices(faces: Tensor, num_vertices: int) -> Tensor:
    """(V,) bool: vertices on an edge used by exactly one triangle (the mesh's open border)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    unique, counts = edges.unique(dim=0, return_counts=True)
    border = torch.zeros(num_vertices, dtype=torch.bool, device=faces.device)
    border[unique[counts == 1].reshape(-1)] = True
    return border


def _smooth(vertices: Tensor, faces: Tensor, severity: Tensor, pinned: bool) -> Tensor:
    smoother = MeshSmoother(faces.cpu(), vertices.shape[1])
    smoothed = smoother(vertices, SMOOTH_ITERATIONS)
    out = vertices + severity[:, None, None] * (smoothed - vertices)
    if pinned:
        border = boundary_vertices(faces, vertices.shape[1])
        out[:, border] = vertices[:, border]
    return out


@register_geometry_negative("smooth_free")
def smooth_free(vertices, faces, severity, generator, anchors):
    """Uniform Laplacian smoothing, border free (a crop shrinks towards a blob)."""
    return _smooth(vertices, faces, severity, pinned=False)


@register_geometry_negative("smooth_pinned")
def smooth_pinned(vertices, faces, severity, generator, anchors):
    """The same with the border pinned (the silhouette stays, the relief goes)."""
    return _smooth(vertices, faces, severity, pinned=True)


def _depth(vertices: Tensor, factor: Tensor) -> Tensor:
    out = vertices.clone()
    centre = out[..., 2].median(dim=1, keepdim=True).values
    out[..., 2] = centre + factor[:, None] * (out[..., 2] - centre)
    return out


@register_geometry_negative("depth_flatten")
def depth_flatten(vertices, faces, severity, generator, anchors):
    """Depth along the view axis scaled by 1 - 0.4 s."""
    return _depth(vertices, 1.0 - DEPTH_CHANGE * severity)


@register_geometry_negative("depth_exaggerate")
def depth_exaggerate(vertices, faces, severity, generator, anchors):
    """Depth along the view axis scaled by 1 + 0.4 s (the direction the first critic preferred)."""
    return _depth(vertices, 1.0 + DEPTH_CHANGE * severity)


def _bump(vertices: Tensor, faces: Tensor, severity: Tensor, generator: torch.Generator, anchors: dict,
          sign: float) -> Tensor:
    names = sorted(anchors)
    pick = torch.randint(len(names), (vertices.shape[0],), generator=generator).tolist()
    centre = torch.stack([anchors[names[i]] for i in pick]).to(vertices)  # (C, 3)
    radius = BUMP_RADIUS_MM / 1000.0
    weight = torch.exp(-((vertices - centre[:, None]).norm(dim=-1) / radius) ** 2)
    amplitude = sign * BUMP_MM / 1000.0 * severity[:, None]
    return vertices + (amplitude * weight)[..., None] * vertex_normals(vertices, faces)


@register_geometry_negative("bump")
def bump(vertices, faces, severity, generator, anchors):
    """A Gaussian bump (8 mm at s = 1, 20 mm radius) out along the normals at the nose, a cheek or the chin."""
    return _bump(vertices, faces, severity, generator, anchors, +1.0)


@register_geometry_negative("dent")
def dent(vertices, faces, severity, generator, anchors):
    """The same pushed in."""
    return _bump(vertices, faces, severity, generator, anchors, -1.0)


@register_geometry_negative("smooth_field")
def smooth_field(vertices, faces, severity, generator, anchors, centres: int = 6):
    """A random smooth field along the normals: signed Gaussians (2.5 cm wide) at random vertices, 6 mm at s = 1."""
    c, v = vertices.shape[:2]
    index = torch.randint(v, (c, centres), generator=generator).to(vertices.device)
    points = torch.gather(vertices, 1, index[..., None].expand(-1, -1, 3))  # (C, K, 3)
    signs = (torch.randn(c, centres, generator=generator)).to(vertices)
    distance = torch.cdist(vertices, points)  # (C, V, K)
    field = (torch.exp(-(distance / 0.025) ** 2) * signs[:, None]).sum(-1)
    field = field / field.abs().amax(dim=1, keepdim=True).clamp(min=1e-9)
    return vertices + (FIELD_MM / 1000.0 * severity[:, None] * field)[..., None] * vertex_normals(vertices, faces)
