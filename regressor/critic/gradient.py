"""Supervise the critic's slope, not its ranking: its gradient must point from a fit towards the truth.

Why: a critic used as a loss acts through ``d score / d params`` at the current estimate. Ranking
objectives constrain a few score *differences* per face and leave that slope free; every ranking-trained
critic gave gradients nearly orthogonal to the way to the truth (cosine ~0.02), so climbing its score
raised the error. This objective asks for the slope directly:

    g = d score(image, render(start)) / d (shape, expression) at a start point   (double backprop:
        the loss is differentiated again through the critic, the torch rasteriser and the face model)
    loss = mean(1 - cos_M(g, truth - start)) + ranking_weight * softplus(score(start) - score(truth))
           [+ magnitude_weight * (log |g| - log target_norm)^2]                    (magnitude "constant")
           [+ magnitude_weight * (u |g|_M / |d|_M - max(cos_M, 0))^2]              (magnitude "informed",
                                                                         u fitted per batch)
           [+ climb_ranking_weight * softplus(+-(score(climbed) - score(before its climb)))]  (climbed starts)

``cos_M`` measures the direction in a metric (``metric``): ``parameter`` (coefficients as they are, in
units of their prior std, as the fitter's Adam steps see them) or ``geometric`` (each coefficient
weighted by the mean face-region displacement, in mm, that one unit of it causes). The starts are
where the loss acts: fit-like starts from the fitter's error model (``regressor.critic.fit_error``),
points on the segment from such a start to the truth, the truth plus noise, and fit-like starts moved
along the critic's own ascent (``climbed``): a critic whose first step is right can still climb past the
truth, and only starts where its own climb goes show it where the slope must turn back.

The ``informed`` magnitude asks the gradient's length to be proportional to the part of the way to the
truth it knows, |d|_M cos_M (the length that regressing g onto a multiple of d would give). Why: fitting
climbs with Adam, which takes full steps along any consistent gradient, so a score that keeps rising at the
same slope after the image's information is used up walks past the truth. A gradient that shrinks there
(cos_M -> 0) shrinks Adam's steps, whose scale remembers the earlier, larger gradients. The proportion is
fitted per batch (the score's scale is free): a fixed one made a pilot collapse its gradient within 25 steps.

The climb ranking compares each ``climbed`` start with where its climb began: the score must have fallen
where the climb moved away from the truth (in the metric) and risen where it moved towards it. Why: the
cosine at a climbed point asks the slope to turn back there, one point at a time; the ranking asks the
score itself to stop rising along the very path the gate's (and the fitter's) Adam climb takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.critic.ascent import climb
from regressor.critic.fit_error import FitErrorModel
from regressor.types import FaceParams, replace

CLIMBED_FIELDS = ("shape", "expression")
METRICS = ("parameter", "geometric")
MAGNITUDES = ("constant", "informed")
START_KINDS = ("operating", "segment", "truth_noise", "climbed")


@dataclass
class GradientConfig:
    """The gradient group of critic training (``faces_per_step = 0`` switches it off).

    Attributes:
        faces_per_step: fresh faces per step that get a start and a gradient target.
        weight: weight of the group's loss in the total.
        ranking_weight: weight of the truth-above-start ranking term (same pose and camera).
        magnitude_weight / target_norm / magnitude: an optional magnitude term (``magnitude_weight`` 0 = off):
            ``constant`` pulls log |g| towards log ``target_norm``; ``informed`` pulls |g|_M / |d|_M towards a
            multiple of max(cos_M, 0), the multiple fitted per batch (see the module docstring).
        metric: ``parameter`` or ``geometric`` (see the module docstring).
        start_mix: draw probabilities of the start kinds ``operating``, ``segment``, ``truth_noise``, ``climbed``
            (three values: no climbed starts, as in configs written before that kind existed).
        start_scale: an operating start is ``truth + s * (model_fit - truth)``, s ~ U(start_scale).
        fitted_pose_probability: share of starts that take the modelled fit's pose and camera (else the truth's).
        truth_noise: std (coefficient units) of the ``truth_noise`` starts' shape and expression noise.
        climb_steps: a ``climbed`` start is an operating start after n ~ U{climb_steps} Adam steps (``climb_lr``)
            that maximise the current critic's score (the gate's climb is 20 steps at 0.02).
        climb_ranking_weight: weight of the climb ranking term on ``climbed`` starts (0 = off; see the module
            docstring).
        fit_error_model: path of the ``FitErrorModel`` (``python -m regressor.critic.fit_error_estimate``).
        validation_fits: a cache folder: the validation figures then start from the no-critic fitter's own fits
            of the validation faces (what ``benchmarks.critic_climb`` gates on; made once, about 2 s a face,
            then read from the folder). ``None``: from one fixed draw of the modelled fit (free, but a critic
            can score better there than at real fits).
    """

    faces_per_step: int = 0
    weight: float = 1.0
    ranking_weight: float = 0.1
    magnitude_weight: float = 0.0
    target_norm: float = 1.0
    magnitude: str = "constant"
    metric: str = "parameter"
    start_mix: tuple[float, float, float] = (0.6, 0.2, 0.2)
    start_scale: tuple[float, float] = (0.5, 1.5)
    fitted_pose_probability: float = 0.8
    truth_noise: float = 0.3
    climb_steps: tuple[int, int] = (5, 20)
    climb_lr: float = 0.02
    climb_ranking_weight: float = 0.0
    fit_error_model: str = "outputs/fit_error_model.pt"
    validation_fits: Optional[str] = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"GradientConfig.metric must be one of {METRICS}, got {self.metric!r}")
        if self.magnitude not in MAGNITUDES or self.target_norm <= 0:
            raise ValueError(f"GradientConfig: magnitude must be one of {MAGNITUDES} and target_norm > 0, got "
                             f"{self.magnitude!r} and {self.target_norm}")
        self.start_mix = tuple(float(p) for p in self.start_mix)
        if len(self.start_mix) == len(START_KINDS) - 1:
            self.start_mix = (*self.start_mix, 0.0)
        if len(self.start_mix) != len(START_KINDS) or min(self.start_mix) < 0 or sum(self.start_mix) <= 0:
            raise ValueError(f"GradientConfig.start_mix: {len(START_KINDS)} probabilities >= 0 with a positive sum "
                             f"for {START_KINDS}, got {self.start_mix}")
        self.start_scale = tuple(float(s) for s in self.start_scale)
        self.climb_steps = tuple(int(n) for n in self.climb_steps)
        if len(self.climb_steps) != 2 or not 1 <= self.climb_steps[0] <= self.climb_steps[1]:
            raise ValueError(f"GradientConfig.climb_steps: (low, high) with 1 <= low <= high, got {self.climb_steps}")
        if self.faces_per_step < 0:
            raise ValueError("GradientConfig.faces_per_step must be >= 0")
        if self.climb_ranking_weight and not self.start_mix[START_KINDS.index("climbed")]:
            raise ValueError("GradientConfig.climb_ranking_weight needs climbed starts (a fourth start_mix value > 0)")


def sample_starts(truth: FaceParams, model: FitErrorModel, config: GradientConfig,
                  generator: torch.Generator) -> tuple[FaceParams, Tensor]:
    """Start points for ``truth`` (B faces) and the kind index of each (into ``START_KINDS``).

    Every start takes a modelled fit's pose and camera with ``fitted_pose_probability`` (the truth's
    otherwise); its shape and expression are ``truth + s (fit - truth)`` with s ~ U(start_scale)
    (operating, and climbed before its climb: ``climbed_starts``), s ~ U(0, 1) (segment), or the truth
    plus Gaussian noise (truth_noise).
    """
    b = truth.batch_size
    fit = model.sample(truth, generator)
    kind = torch.multinomial(torch.tensor(config.start_mix), b, replacement=True, generator=generator)
    low, high = config.start_scale
    operating_scale = low + (high - low) * torch.rand(b, generator=generator)
    operating = (kind == START_KINDS.index("operating")) | (kind == START_KINDS.index("climbed"))
    scale = torch.where(operating, operating_scale, torch.rand(b, generator=generator))[:, None].to(truth.shape)
    fields = {}
    for name in CLIMBED_FIELDS:
        value, fitted = getattr(truth, name), getattr(fit, name)
        noisy = value + config.truth_noise * torch.randn(value.shape, generator=generator).to(value)
        moved = value + scale * (fitted - value)
        fields[name] = torch.where((kind == 2)[:, None].to(value.device), noisy, moved)
    fitted_pose = (torch.rand(b, generator=generator) < config.fitted_pose_probability)[:, None].to(truth.shape.device)
    for name in ("global_pose", "neck_pose", "jaw_pose", "eye_pose", "camera"):
        fields[name] = torch.where(fitted_pose, getattr(fit, name), getattr(truth, name))
    return replace(truth, **fields), kind


def climbed_starts(critic, face_model, render, image: Tensor, start: FaceParams, kind: Tensor,
                   config: GradientConfig, generator: torch.Generator) -> FaceParams:
    """``start`` with its ``climbed`` faces moved along the critic's own ascent (shape and expression, at the
    start's pose and camera, Adam as the gate and the fitter climb) for n ~ U{climb_steps} steps."""
    chosen = (kind == START_KINDS.index("climbed")).nonzero().squeeze(1).to(start.shape.device)
    if chosen.numel() == 0:
        return start
    low, high = config.climb_steps
    steps = int(torch.randint(low, high + 1, (1,), generator=generator))
    sub = start[chosen]
    displacement = sub.shape.new_zeros(len(chosen), face_model.shapedirs.shape[0], 3)
    end = climb(critic, face_model, render, image[chosen], sub, {n: getattr(sub, n) for n in CLIMBED_FIELDS},
                displacement, steps, config.climb_lr, optimizer="adam")
    fields = {}
    for name in CLIMBED_FIELDS:
        value = getattr(start, name).clone()
        value[chosen] = end[name]
        fields[name] = value
    return replace(start, **fields)


def climb_ranking(critic, face_model, render, image: Tensor, truth: FaceParams, before: FaceParams,
                  after: FaceParams, climbed: Tensor, weights: Tensor) -> Tensor:
    """mean over the ``climbed`` faces (B,) bool of softplus(s (score(after) - score(before))), s = +1 where
    the climb moved away from the truth in the metric diag(``weights``), -1 where it moved towards it (0 when
    no face climbed). Differentiable in the critic's weights; the critic scores in eval mode, as in the loss."""
    chosen = climbed.nonzero().squeeze(1).to(truth.shape.device)
    if chosen.numel() == 0:
        return truth.shape.new_zeros(())
    truth, before, after, image = truth[chosen], before[chosen], after[chosen], image[chosen]
    root = weights.to(truth.shape).sqrt()
    distance = [(direction_to_truth(p, truth) * root).norm(dim=1) for p in (before, after)]
    away = torch.where(distance[1] > distance[0], 1.0, -1.0)
    was_training = critic.training
    critic.eval()
    try:
        scores = [critic(image, render(face_model(p).vertices, p.camera).shaded) for p in (before, after)]
    finally:
        critic.train(was_training)
    return F.softplus(away * (scores[1] - scores[0])).mean()


def metric_weights(face_model, metric: str) -> Tensor:
    """(D,) weight of each climbed coefficient in the direction metric (``cos_M`` uses sqrt of it)."""
    size = face_model.n_shape + face_model.n_expression
    if metric == "parameter":
        return torch.ones(size)
    # geometric: mean squared displacement (mm^2) per unit coefficient over the face region of the mean face
    from regressor.critic.target import face_region

    with torch.no_grad():
        mesh = face_model(face_model.zero_params(1))
        region = face_region(mesh.vertices, mesh.now_landmarks3d)[0]
    dirs = face_model.shapedirs[region][..., :size] * 1000.0
    return dirs.pow(2).sum(1).mean(0).cpu()


def score_gradient(critic, face_model, render, image: Tensor, start: FaceParams,
                   create_graph: bool) -> tuple[Tensor, Tensor]:
    """(scores (B,), g (B, D)): the critic's score of ``start``'s grey render and its gradient with respect to
    the start's shape and expression (concatenated). ``create_graph`` keeps it differentiable in the weights."""
    climbed = [getattr(start, name).detach().clone().requires_grad_(True) for name in CLIMBED_FIELDS]
    with torch.enable_grad():
        vertices = face_model(replace(start, **dict(zip(CLIMBED_FIELDS, climbed)))).vertices
        scores = critic(image, render(vertices, start.camera).shaded)
        gradients = torch.autograd.grad(scores.sum(), climbed, create_graph=create_graph)
    return scores, torch.cat(gradients, dim=1)


def direction_to_truth(start: FaceParams, truth: FaceParams) -> Tensor:
    """(B, D) truth - start over the climbed coefficients."""
    return torch.cat([getattr(truth, n) - getattr(start, n) for n in CLIMBED_FIELDS], dim=1)


def metric_cosine(gradient: Tensor, direction: Tensor, weights: Tensor) -> Tensor:
    """(B,) cosine between the ascent direction of ``gradient`` and ``direction`` in the metric diag(weights):
    the gradient (a covector) is divided by sqrt(w), the direction multiplied by it."""
    root = weights.to(gradient).sqrt()
    return F.cosine_similarity(gradient / root, direction * root, dim=1, eps=1e-12)


def gradient_losses(critic, face_model, render, image: Tensor, truth: FaceParams, start: FaceParams,
                    config: GradientConfig, weights: Tensor) -> dict[str, Tensor]:
    """The group's loss terms on B faces (``total`` is differentiable in the critic's weights).

    The critic runs in eval mode here (normalisation layers use their running statistics, its weights still
    learn): the gradient is trained as the loss will compute it, and in train mode batch statistics would
    couple the faces' input gradients.
    """
    was_training = critic.training
    critic.eval()
    try:
        scores, gradient = score_gradient(critic, face_model, render, image, start, create_graph=True)
        direction = direction_to_truth(start, truth)
        cosine = metric_cosine(gradient, direction, weights)
        losses = {"cosine": cosine.mean().detach(), "total": (1 - cosine).mean()}
        if config.ranking_weight:
            at_start_pose = replace(start, shape=truth.shape, expression=truth.expression)
            truth_scores = critic(image, render(face_model(at_start_pose).vertices, start.camera).shaded)
            ranking = F.softplus(scores - truth_scores).mean()
            losses["ranking"] = ranking.detach()
            losses["total"] = losses["total"] + config.ranking_weight * ranking
    finally:
        critic.train(was_training)
    norm = gradient.norm(dim=1)
    losses["gradient_norm"] = norm.mean().detach()
    if config.magnitude_weight:
        if config.magnitude == "informed":
            magnitude = informed_magnitude_error(gradient, direction, weights, cosine)
        else:
            magnitude = (norm.clamp(min=1e-12).log() - float(torch.tensor(config.target_norm).log())).pow(2).mean()
        losses["magnitude"] = magnitude.detach()
        losses["total"] = losses["total"] + config.magnitude_weight * magnitude
    return losses


def informed_magnitude_error(gradient: Tensor, direction: Tensor, weights: Tensor, cosine: Tensor) -> Tensor:
    """mean (u |g|_M / |d|_M - max(cos_M, 0))^2 over the batch, the cosine held fixed and u the least-squares
    proportion (held fixed too): the gradient's length follows the share of the way to the truth it points
    along, whatever the score's overall scale, and vanishes where it knows none of it."""
    root = weights.to(gradient).sqrt()
    ratio = (gradient / root).norm(dim=1) / (direction * root).norm(dim=1).clamp(min=1e-12)
    known = cosine.detach().clamp(min=0)
    proportion = ((ratio * known).sum() / ratio.pow(2).sum().clamp(min=1e-12)).detach()
    return (proportion * ratio - known).pow(2).mean()
