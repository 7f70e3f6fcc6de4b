"""Positive and graded negative geometries for training and measuring the shape critic.

For every face with known geometry (synthetic ground truth: ``FaceParams`` + vertices, which may
include displacement beyond the model) we build C = 1 + K *candidate* geometries in the face's
own camera: candidate 0 is the positive (the true geometry, error exactly 0) and candidates
1..K are negatives of a registered type (``negative_types()``) at a severity in (0, 1]. Every candidate
carries its measured **mean vertex error** (mm), so the objective can rank by error rather than
by a real/fake label.

Error convention: candidates are compared to the truth in the *true camera's* metric frame, i.e.
a candidate seen through a different weak-perspective camera ``[s', tx', ty']`` is mapped to
``(X + t') * s'/s - t`` (and ``Z * s'/s``) before the distance is taken, so camera
perturbations get an error in millimetres like every other type. Parameter perturbations keep
the sample's extra displacement (truth - model(params)), so they differ from the truth only in
the perturbed factor.

Negative types are a registry (``register_negative``; a duplicate name is refused). A type works
in one of two spaces: ``"params"`` (perturbs the B*K ``FaceParams`` in place, before the face
model) or ``"geometry"`` (replaces the vertices of its rows, starting from the truth). The
built-in nine are in ``regressor/critic/negative_types/builtin.py``; a new type is one new file
in that package, selected in yaml by ``perturbation: {types: [..., my_type]}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from regressor.critic.negative_registry import (  # noqa: F401 - the registry's names, for callers of this module
    NegativeContext, NegativeType, negative_type, negative_types, register_negative,
)
from regressor.evaluation.metrics import mean_vertex_error_mm
from regressor.render.renderer import DEFAULT_LIGHT_DIRECTION, mesh_for_rendering
from regressor.types import FaceMesh, FaceParams


@dataclass
class PerturbationConfig:
    """Magnitudes at severity 1 (severity s scales them linearly).

    Attributes:
        identity: std of the added identity offset, per shape coefficient (basis-std units).
        expression: std of the added expression offset, per coefficient.
        jaw: jaw rotation offset (rad): opening about x plus a third of it sideways.
        pose: head rotation offset (rad), random axis.
        camera_shift: image-plane translation (metres, model units).
        camera_scale: relative scale change.
        smooth_iterations: Laplacian smoothing passes at severity 1 (blended by severity).
        flatten: fraction of depth relief removed along the view axis at severity 1.
        exaggerate: expression and jaw are multiplied by (1 + s * exaggerate), plus a small push
            along a random expression direction so neutral faces get exaggerated too.
        severity_power: severities are sampled as u ** power (u uniform), >1 favours small errors.
        types: which registered negative types to draw from (default: all).
        options: settings of types added by users, ``{type_name: {...}}``.
    """

    identity: float = 1.2
    expression: float = 2.5
    jaw: float = 0.4
    pose: float = 0.08
    camera_shift: float = 0.006
    camera_scale: float = 0.06
    smooth_iterations: int = 25
    flatten: float = 0.3
    exaggerate: float = 3.0
    severity_power: float = 1.5
    types: tuple[str, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = negative_types()
        self.types = known if self.types is None else tuple(self.types)
        unknown = [t for t in self.types if t not in known]
        if unknown:
            raise ValueError(f"unknown negative types {unknown}; known: {list(known)}")


@dataclass
class CandidateSet:
    """C candidate geometries for each of B faces (candidate 0 = the positive).

    Attributes:
        vertices: (B, C, V, 3) metres, model space.
        camera: (B, C, 3) weak-perspective camera each candidate is rendered with.
        error_mm: (B, C) mean vertex error against the truth (0 for the positive).
        type_index: (B, C) long index into ``negative_types()``; -1 for the positive.
        severity: (B, C) in [0, 1]; 0 for the positive.
    """

    vertices: Tensor
    camera: Tensor
    error_mm: Tensor
    type_index: Tensor
    severity: Tensor

    @property
    def num_candidates(self) -> int:
        return self.vertices.shape[1]


class MeshSmoother:
    """Uniform Laplacian smoothing on a fixed triangle mesh (unique edges built once)."""

    def __init__(self, faces: Tensor, num_vertices: int) -> None:
        f = faces.long()
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        edges = torch.cat([edges, edges.flip(1)]).unique(dim=0)  # both directions, once each
        self.source, self.target = edges[:, 0], edges[:, 1]
        self.degree = torch.bincount(self.source, minlength=num_vertices).clamp(min=1).float()

    def __call__(self, vertices: Tensor, iterations: int, step: float = 0.5) -> Tensor:
        """(B, V, 3) -> (B, V, 3), ``iterations`` passes of v += step * (mean(neighbours) - v)."""
        source, target = self.source.to(vertices.device), self.target.to(vertices.device)
        degree = self.degree.to(vertices)[None, :, None]
        x = vertices
        for _ in range(iterations):
            mean = torch.zeros_like(x).index_add(1, source, x[:, target]) / degree
            x = x + step * (mean - x)
        return x


def aligned_to_camera(vertices: Tensor, camera: Tensor, reference_camera: Tensor) -> Tensor:
    """Express vertices seen through ``camera`` in ``reference_camera``'s metric frame.

    vertices (..., V, 3), cameras (..., 3) ``[s, tx, ty]`` -> (..., V, 3).
    """
    ratio = (camera[..., 0] / reference_camera[..., 0])[..., None, None]
    shift = torch.zeros_like(camera)
    shift[..., :2] = camera[..., 1:]  # [tx, ty, 0]
    ref_shift = torch.zeros_like(reference_camera)
    ref_shift[..., :2] = reference_camera[..., 1:]
    return (vertices + shift[..., None, :]) * ratio - ref_shift[..., None, :]


class NegativeGenerator:
    """Builds ``CandidateSet``s from ground-truth params and vertices with a face model.

    Args:
        face_model: a ``regressor.face_model.FaceModel`` (only ``__call__`` and ``faces`` are used).
        config: perturbation magnitudes.
    """

    def __init__(self, face_model, config: PerturbationConfig | None = None) -> None:
        self.face_model = face_model
        self.config = config or PerturbationConfig()
        self.smoother = MeshSmoother(face_model.faces.detach().cpu(), int(face_model.v_template.shape[0]))

    @torch.no_grad()
    def sample(self, params: FaceParams, vertices: Tensor, num_negatives: int, generator: torch.Generator) -> CandidateSet:
        """Positive + ``num_negatives`` random negatives (types and severities drawn) per face."""
        b = params.batch_size
        known = negative_types()
        types = torch.tensor([known.index(t) for t in self.config.types])
        pick = torch.randint(len(types), (b, num_negatives), generator=generator)
        type_index = types[pick]
        u = torch.rand(b, num_negatives, generator=generator)
        severity = (0.03 + 0.97 * u) ** self.config.severity_power
        return self.build(params, vertices, type_index, severity, generator)

    @torch.no_grad()
    def build(self, params: FaceParams, vertices: Tensor, type_index: Tensor, severity: Tensor,
              generator: torch.Generator) -> CandidateSet:
        """Negatives of the given (B, K) types and severities, plus the positive in slot 0."""
        device = vertices.device
        b, k = type_index.shape
        type_index, severity = type_index.cpu(), severity.cpu().float()
        model_vertices = self.face_model(params).vertices
        displacement = vertices - model_vertices
        flat = params[torch.arange(b).repeat_interleave(k).to(device)].clone()
        t = type_index.reshape(-1)
        s = severity.reshape(-1)
        context = NegativeContext(self.config, params, k, _shared_draws(generator, b, k, t, device), self.smoother)
        known = negative_types()
        for name in known:  # params space first, in registration order (keeps the random stream)
            entry = negative_type(name)
            if entry.space == "params":
                mask = (t == known.index(name)).to(device)
                entry.fn(flat, s.to(device)[:, None] * mask[:, None].float(), context)
        neg_vertices = self.face_model(flat).vertices + displacement.repeat_interleave(k, dim=0)
        truth = vertices.repeat_interleave(k, dim=0)
        for name in known:  # geometry space: replaces its rows, starting from the truth
            entry = negative_type(name)
            rows = (t == known.index(name)).nonzero().squeeze(1)
            if entry.space == "geometry" and len(rows):
                neg_vertices[rows] = entry.fn(truth[rows], s[rows].to(device), context)
        aligned = aligned_to_camera(neg_vertices, flat.camera, params.camera.repeat_interleave(k, dim=0))
        error = mean_vertex_error_mm(aligned, truth).reshape(b, k)
        return CandidateSet(
            vertices=torch.cat([vertices[:, None], neg_vertices.reshape(b, k, *vertices.shape[1:])], dim=1),
            camera=torch.cat([params.camera[:, None], flat.camera.reshape(b, k, 3)], dim=1),
            error_mm=torch.cat([torch.zeros(b, 1, device=device), error], dim=1),
            type_index=torch.cat([torch.full((b, 1), -1), type_index], dim=1).to(device),
            severity=torch.cat([torch.zeros(b, 1), severity], dim=1).to(device),
        )


def _shared_draws(generator: torch.Generator, b: int, k: int, t: Tensor, device) -> Callable[..., Tensor]:
    """``draw(*shape)`` of ``NegativeContext``: (B*K, *shape), one normal draw per (face, type)."""
    face = torch.arange(b).repeat_interleave(k)
    num_types = len(negative_types())

    def draw(*shape: int) -> Tensor:
        draws = torch.randn(b, num_types, *shape, generator=generator)
        return draws[face, t].to(device)

    return draw


def candidate_meshes(candidates: CandidateSet, faces: Tensor) -> FaceMesh:
    """Flatten a CandidateSet into one (B*C)-batch FaceMesh for the renderer (dummy landmarks)."""
    b, c, v, _ = candidates.vertices.shape
    return mesh_for_rendering(candidates.vertices.reshape(b * c, v, 3), faces)


def random_light_directions(batch_size: int, generator: torch.Generator, spread: float = 0.6,
                            default=DEFAULT_LIGHT_DIRECTION, keep_default: float = 0.25) -> Tensor:
    """(B, 3) unit light directions around the frontal default; a fraction keep the default.

    Training randomises the grey render's light so that the critic does not memorise one light;
    at loss time the renderer's fixed default direction is used (``Renderer`` default
    ``DEFAULT_LIGHT_DIRECTION``), which is therefore also in the training distribution.
    """
    base = torch.tensor(default, dtype=torch.float32)
    base = base / base.norm()
    direction = torch.nn.functional.normalize(torch.randn(batch_size, 3, generator=generator), dim=1)
    direction = torch.nn.functional.normalize(base + spread * direction * 1.5, dim=1)
    direction[:, 2] = direction[:, 2].abs().clamp(min=0.2)
    direction = torch.nn.functional.normalize(direction, dim=1)
    keep = torch.rand(batch_size, generator=generator) < keep_default
    direction[keep] = base
    return direction


import regressor.critic.negative_types  # noqa: E402,F401 - registers the built-in types, then any added file
