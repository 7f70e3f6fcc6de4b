"""Positive and graded negative geometries for training and measuring the shape critic.

For every face with known geometry (synthetic ground truth: ``FaceParams`` + vertices, which may
include displacement beyond the model) we build C = 1 + K *candidate* geometries in the face's
own camera: candidate 0 is the positive (the true geometry, error exactly 0) and candidates
1..K are negatives of a type from ``NEGATIVE_TYPES`` at a severity in (0, 1]. Every candidate
carries its measured **mean vertex error** (mm), so the objective can rank by error rather than
by a real/fake label.

Error convention: candidates are compared to the truth in the *true camera's* metric frame, i.e.
a candidate seen through a different weak-perspective camera ``[s', tx', ty']`` is mapped to
``(X + t') * s'/s - t`` (and ``Z * s'/s``) before the distance is taken, so camera
perturbations get an error in millimetres like every other type. Parameter perturbations keep
the sample's extra displacement (truth - model(params)), so they differ from the truth only in
the perturbed factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from regressor.evaluation.metrics import mean_vertex_error_mm
from regressor.render.renderer import DEFAULT_LIGHT_DIRECTION
from regressor.types import FaceMesh, FaceParams

NEGATIVE_TYPES: tuple[str, ...] = (
    "identity", "expression", "jaw", "pose", "camera", "other_identity", "smooth", "flatten", "exaggerate",
)


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
        types: which negative types to draw from.
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
    types: tuple[str, ...] = NEGATIVE_TYPES

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in NEGATIVE_TYPES]
        if unknown:
            raise ValueError(f"unknown negative types {unknown}; known: {list(NEGATIVE_TYPES)}")
        self.types = tuple(self.types)


@dataclass
class CandidateSet:
    """C candidate geometries for each of B faces (candidate 0 = the positive).

    Attributes:
        vertices: (B, C, V, 3) metres, model space.
        camera: (B, C, 3) weak-perspective camera each candidate is rendered with.
        error_mm: (B, C) mean vertex error against the truth (0 for the positive).
        type_index: (B, C) long index into ``NEGATIVE_TYPES``; -1 for the positive.
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
        types = torch.tensor([NEGATIVE_TYPES.index(t) for t in self.config.types])
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
        self._perturb_params(flat, params, t, s, generator, b, k)
        neg_vertices = self.face_model(flat).vertices + displacement.repeat_interleave(k, dim=0)
        truth = vertices.repeat_interleave(k, dim=0)
        neg_vertices = self._geometry_negatives(neg_vertices, truth, flat.camera, t, s)
        aligned = aligned_to_camera(neg_vertices, flat.camera, params.camera.repeat_interleave(k, dim=0))
        error = mean_vertex_error_mm(aligned, truth).reshape(b, k)
        return CandidateSet(
            vertices=torch.cat([vertices[:, None], neg_vertices.reshape(b, k, *vertices.shape[1:])], dim=1),
            camera=torch.cat([params.camera[:, None], flat.camera.reshape(b, k, 3)], dim=1),
            error_mm=torch.cat([torch.zeros(b, 1, device=device), error], dim=1),
            type_index=torch.cat([torch.full((b, 1), -1), type_index], dim=1).to(device),
            severity=torch.cat([torch.zeros(b, 1), severity], dim=1).to(device),
        )

    def _perturb_params(self, flat: FaceParams, params: FaceParams, t: Tensor, s: Tensor,
                        generator: torch.Generator, b: int, k: int) -> None:
        """In place on ``flat`` (B*K params): the parameter-space negative types."""
        cfg, device = self.config, flat.shape.device

        face = torch.arange(b).repeat_interleave(k)
        num_types = len(NEGATIVE_TYPES)

        def randn(*shape: int) -> Tensor:
            """One draw per (face, type), shared by that face's negatives of that type, so graded
            severities of one type move the geometry along one direction (monotone error)."""
            draws = torch.randn(b, num_types, *shape, generator=generator)
            return draws[face, t].to(device)

        def rows(name: str) -> tuple[Tensor, Tensor]:
            mask = t == NEGATIVE_TYPES.index(name)
            return mask.to(device), s.to(device)[:, None] * mask.to(device)[:, None].float()

        mask, sev = rows("identity")
        flat.shape += sev * cfg.identity * randn(flat.shape.shape[1])
        mask, sev = rows("expression")
        flat.expression += sev * cfg.expression * randn(flat.expression.shape[1])
        mask, sev = rows("jaw")
        # Open (or close, but never past closed) the mouth, with a little sideways motion.
        draw = randn(2)
        opening = torch.where(draw[:, 0] >= 0, torch.full_like(draw[:, 0], cfg.jaw),
                              -flat.jaw_pose[:, 0].clamp(min=0.0, max=cfg.jaw))
        direction = torch.stack([opening, draw[:, 1] * cfg.jaw / 3.0, torch.zeros_like(opening)], dim=1)
        flat.jaw_pose += sev * direction
        mask, sev = rows("pose")
        axis = torch.nn.functional.normalize(randn(3), dim=1)
        flat.global_pose += sev * cfg.pose * axis
        mask, sev = rows("camera")
        draw = randn(2)
        angle = draw[:, 0] * math.pi
        shift = torch.stack([angle.cos(), angle.sin()], dim=1) * cfg.camera_shift
        scale = 1.0 + cfg.camera_scale * torch.sign(draw[:, 1])
        camera = flat.camera.clone()
        camera[:, 1:] += sev * shift
        camera[:, 0] *= 1.0 + sev[:, 0] * (scale - 1.0)
        flat.camera = camera
        mask, sev = rows("other_identity")
        other = params.shape.roll(1, dims=0).repeat_interleave(k, dim=0)
        flat.shape += sev * (other - flat.shape)
        mask, sev = rows("exaggerate")
        push = torch.nn.functional.normalize(randn(flat.expression.shape[1]), dim=1) * 4.0
        flat.expression = flat.expression * (1 + sev * cfg.exaggerate) + sev * push
        flat.jaw_pose = flat.jaw_pose * (1 + sev * cfg.exaggerate)

    def _geometry_negatives(self, vertices: Tensor, truth: Tensor, camera: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Smoothed and flattened variants of the true geometry (rows of those types)."""
        cfg, device = self.config, vertices.device
        out = vertices.clone()
        rows = (t == NEGATIVE_TYPES.index("smooth")).nonzero().squeeze(1)
        if len(rows):
            smoothed = self.smoother(truth[rows], cfg.smooth_iterations)
            w = s[rows].to(device)[:, None, None]
            out[rows] = truth[rows] + w * (smoothed - truth[rows])
        rows = (t == NEGATIVE_TYPES.index("flatten")).nonzero().squeeze(1)
        if len(rows):
            v = truth[rows].clone()
            centre = v[..., 2].median(dim=1, keepdim=True).values
            keep = 1.0 - cfg.flatten * s[rows].to(device)[:, None]
            v[..., 2] = centre + keep * (v[..., 2] - centre)
            out[rows] = v
        return out


def mesh_for_rendering(vertices: Tensor, faces: Tensor) -> FaceMesh:
    """(N, V, 3) vertices -> a FaceMesh the renderer accepts (dummy landmarks: only the surface is drawn)."""
    zeros = vertices.new_zeros
    n = vertices.shape[0]
    return FaceMesh(vertices=vertices, faces=faces, landmarks3d=zeros(n, 68, 3), now_landmarks3d=zeros(n, 7, 3))


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

