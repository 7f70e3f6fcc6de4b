"""Extra candidate groups and checks of ``CriticModule`` (operating point, other topologies), as plain functions.

* ``OperatingPointGroup``: candidates at the no-critic fitter's pose and camera
  (``regressor.critic.operating_candidates``), with the fits of the whole training pool computed once
  and cached on disk (``regressor.critic.fits``).
* ``topology_group``: meshes of other topologies and coverage with same-topology negatives
  (``regressor.critic.topology``), one random training variant per face.
* ``outside_gradient_fraction``: the share of the critic's input gradient outside the eroded face
  mask, used as a penalty (differentiable: double backpropagation).
* ``validation_figures``: the operating-point and topology figures on a few validation faces, from
  the same implementation as ``benchmarks.critic``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from regressor.critic.fits import OperatingFits, cached_fits
from regressor.critic.operating_candidates import OperatingPointConfig, operating_candidates
from regressor.critic.operating_point import eroded, operating_point_figures
from regressor.critic.target import face_region
from regressor.critic.topology import TRAIN_VARIANTS, VARIANTS, build_variant, surface_candidates
from regressor.critic import geometry_negatives
from regressor.render import project_weak_perspective
from regressor.synthetic.displacement import displace_landmarks
from regressor.types import FaceParams


@dataclass
class TopologyConfig:
    """Topology candidates in critic training (``faces_per_step = 0`` switches them off).

    Attributes: faces_per_step; negatives per face (same-topology types and severities drawn);
    variants drawn from (``topology.TRAIN_VARIANTS`` by default); weight of the group's ranking loss;
    negative_weights: relative draw probability per ``geometry_negatives`` type (None = uniform over all;
    a type left out is never drawn). Why: bumps, dents and smooth fields stay under 1 mm of aligned error,
    so uniform draws spend 4 of 9 negatives below the figures' thresholds, while depth scaling, the one
    type the critics lose to (docs/results/critic_retraining.md), gets 2 of 9.
    """

    faces_per_step: int = 0
    negatives: int = 4
    variants: tuple[str, ...] = field(default=TRAIN_VARIANTS)
    weight: float = 1.0
    negative_weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.variants = tuple(self.variants)
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"TopologyConfig.variants: unknown {unknown}; known: {sorted(VARIANTS)}")
        if self.negative_weights is not None:
            known = geometry_negative_names()
            unknown = [name for name in self.negative_weights if name not in known]
            if unknown:
                raise ValueError(f"TopologyConfig.negative_weights: unknown types {unknown}; known: {known}")
            weights = [float(w) for w in self.negative_weights.values()]
            if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
                raise ValueError(f"TopologyConfig.negative_weights: need weights >= 0 with a positive sum, "
                                 f"got {dict(self.negative_weights)}")

    def draw_negative_types(self, count: int, generator: torch.Generator) -> list[str]:
        """``count`` negative type names drawn with replacement by ``negative_weights``."""
        names = geometry_negative_names()
        if self.negative_weights is None:  # uniform, drawn as before the weights existed (same random stream)
            picks = torch.randint(len(names), (count,), generator=generator)
        else:
            weights = torch.tensor([float(self.negative_weights.get(name, 0.0)) for name in names])
            picks = torch.multinomial(weights, count, replacement=True, generator=generator)
        return [names[p] for p in picks.tolist()]


def truth_landmarks(face_model, params: FaceParams, vertices: Tensor, image_size: int):
    """(2-D landmarks (B, 68, 2) px, 68 3-D landmarks, 7 NoW landmarks) of true heads incl. displacement."""
    with torch.no_grad():
        mesh = face_model(params)
        displacement = vertices - mesh.vertices
        landmarks = displace_landmarks(mesh.landmarks3d, mesh.vertices, displacement)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, displacement)
        points = project_weak_perspective(landmarks, params.camera, image_size)[..., :2]
    return points, landmarks, now


class OperatingPointGroup:
    """Fits for every face of a pool, computed once (``cached_fits``), and candidates for a batch."""

    def __init__(self, config: OperatingPointConfig) -> None:
        self.config = config
        self.fits: OperatingFits | None = None
        self.row_of_seed: dict[int, int] = {}
        self.predictions: FaceParams | None = None

    def prepare(self, face_model, images: Tensor, vertices: Tensor, params: FaceParams, seeds: Tensor) -> None:
        if self.fits is not None:
            return
        cfg = self.config
        landmarks, _, _ = truth_landmarks(face_model, params, vertices, images.shape[-1])
        valid = torch.ones(landmarks.shape[:2])
        self.fits = cached_fits(face_model, images, landmarks, valid, seeds, cfg.fit_cache, cfg.landmark_noise_px,
                                cfg.fit_steps_scale, config_path=cfg.fit_config, fit_size=cfg.fit_image_size)
        self.row_of_seed = {int(s): i for i, s in enumerate(seeds)}
        if cfg.regressor_checkpoint:
            from regressor.inference import Reconstructor

            with torch.no_grad():
                self.predictions = Reconstructor.from_checkpoint(cfg.regressor_checkpoint).predict(images).params.to("cpu")

    def candidates(self, face_model, batch: dict, generator: torch.Generator, critic=None, render=None):
        device = batch["image"].device
        n = min(self.config.faces_per_step, batch["image"].shape[0])
        rows = torch.tensor([self.row_of_seed[int(s)] for s in batch["index"][:n]])
        fits = self.fits.select(rows)
        fits = OperatingFits(fits.landmarks.to(device), fits.stages, [p.to(device) for p in fits.params])
        params = FaceParams.from_dict({k: v[:n] for k, v in batch["params"].items()})
        truth = batch["vertices"][:n]
        _, _, now = truth_landmarks(face_model, params, truth, batch["image"].shape[-1])
        predictions = self.predictions[rows].to(device) if self.predictions is not None else None
        return operating_candidates(face_model, truth, face_region(truth, now), fits, self.config, generator,
                                    predictions, critic, render, batch["image"][:n]), n


def topology_group(face_model, batch: dict, config: TopologyConfig, generator: torch.Generator, render_one):
    """(shaded (n, C, 1, H, W), mask, error_mm (n, C)) of one random training variant per face.

    ``render_one(vertices (C, V, 3), faces, camera (3,), face) -> Renders`` draws one face's candidates.
    """
    n = min(config.faces_per_step, batch["image"].shape[0])
    params = FaceParams.from_dict({k: v[:n] for k, v in batch["params"].items()})
    truth = batch["vertices"][:n]
    _, landmarks, now = truth_landmarks(face_model, params, truth, batch["image"].shape[-1])
    shaded, mask, error = [], [], []
    for i in range(n):
        kind = config.variants[int(torch.randint(len(config.variants), (1,), generator=generator))]
        types = config.draw_negative_types(config.negatives, generator)
        severity = (0.1 + 0.9 * torch.rand(config.negatives, generator=generator)) ** 1.5
        with torch.no_grad():
            surface = build_variant(kind, truth[i], face_model.faces, now[i], landmarks[i])
            built = surface_candidates(surface, now[i], landmarks[i], types, severity, generator)
            renders = render_one(built.vertices, built.faces, params.camera[i], i)
        shaded.append(renders.shaded)
        mask.append(renders.mask)
        error.append(built.error_mm.to(truth))
    return torch.stack(shaded), torch.stack(mask), torch.stack(error)


def geometry_negative_names() -> list[str]:
    return list(geometry_negatives.geometry_negative_types())


def outside_gradient_fraction(critic, image: Tensor, shaded: Tensor, mask: Tensor, erode_px: int = 2) -> Tensor:
    """Mean share of |d score / d shaded| outside the eroded mask; differentiable in the critic's weights.

    image (N, 3, H, W), shaded (N, K, H, W) (K light channels), mask (N, 1, H, W).
    """
    shaded = shaded.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(image, shaded).sum(), shaded, create_graph=True)
    magnitude = gradient.abs().sum(1).flatten(1)  # summed over the light channels
    outside = (magnitude * (1 - eroded(mask.float(), erode_px)).flatten(1)).sum(1)
    return (outside / magnitude.sum(1).clamp(min=1e-12)).mean()


def validation_figures(critic, face_model, renderer, batch: dict, op_faces: int, topology_faces: int,
                       fit_cache: str | None, fit_steps_scale: float = 0.5,
                       fit_config: str | None = None, fit_size: int | None = None) -> dict[str, float]:
    """``operating_point.*``, ``interior_sensitivity_fraction`` and ``topology.*`` on the first faces of ``batch``."""
    from regressor.critic.operating_point import vertex_renderer
    from regressor.critic.topology_metrics import topology_figures

    params = FaceParams.from_dict(batch["params"])
    vertices, image, seeds = batch["vertices"], batch["image"], batch["index"]
    points, landmarks, now = truth_landmarks(face_model, params, vertices, image.shape[-1])
    out: dict[str, float] = {}
    if op_faces:
        n = min(op_faces, image.shape[0])
        valid = torch.ones(n, 68)
        fits = cached_fits(face_model, image[:n].cpu(), points[:n].cpu(), valid, seeds[:n].cpu(), fit_cache,
                           steps_scale=fit_steps_scale, config_path=fit_config, fit_size=fit_size)
        fitted = fits.final.to(image.device)
        out.update(operating_point_figures(critic, face_model, vertex_renderer(renderer, face_model.faces), image[:n],
                                           vertices[:n], params[:n], fitted, fits.landmarks.to(image.device),
                                           valid.to(image.device), face_region(vertices[:n], now[:n])))
    if topology_faces:
        n = min(topology_faces, image.shape[0])
        figures = topology_figures(critic, renderer, image[:n], vertices[:n], face_model.faces, now[:n], landmarks[:n],
                                   params.camera[:n])
        beaten_by = figures.pop("topology.beaten_by")
        out.update(figures, **{f"topology.beaten_by.{name}": share for name, share in beaten_by.items()})
    return {k: v for k, v in out.items() if isinstance(v, float)}
