"""Self-generated negatives: geometries reached by climbing the critic's own score.

Why: a critic trained only on hand-made perturbations ranks those well but can still be
*exploited*: gradient ascent on its score finds parameter directions that raise the score while
the true vertex error grows (an adversarial example in parameter space). That is exactly what a
loss must not allow, because fitting and regression follow the same gradient. So, during
training, we start from a perturbed copy of a face's true parameters, run a few Adam steps that
maximise the *current* critic score, and add the start and end geometries as extra candidates
with their true mean vertex error. The ranking objective then corrects any step that raised the
score without lowering the error (hard-negative mining along the critic's own gradient, as in
adversarial training; no library provides it for a render-in-the-loop critic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from regressor.critic.render_cache import RenderedCandidates
from regressor.evaluation.metrics import mean_vertex_error_mm
from regressor.types import FaceParams, replace

ASCENT_TYPE_INDEX = -2  # type_index of ascent candidates (positive = -1, hand-made types >= 0)
CLIMB_OPTIMIZERS = ("adam", "normalised")


@dataclass
class AscentConfig:
    """How the self-generated negatives are made (``faces_per_step = 0`` switches them off).

    Attributes:
        faces_per_step: faces of each training batch that get an ascent trajectory.
        max_steps: Adam steps per trajectory; each training step draws a count in [1, max_steps]
            so the critic sees points all along the trajectory.
        learning_rate: Adam learning rate of the ascent (coefficient units, basis std).
        start_noise: std of the starting perturbation of every climbed coefficient, scaled per face
            by a uniform draw in [0.25, 1] so starts range from near-truth to far off.
        variables: which ``FaceParams`` fields are climbed.
        weight: weight of the ascent group's ranking loss, added to the objective's total.
        start_step: global step from which ascent negatives are used (0 = from the start).
    """

    faces_per_step: int = 0
    max_steps: int = 10
    learning_rate: float = 0.1
    start_noise: float = 0.8
    variables: tuple[str, ...] = field(default=("shape", "expression"))
    weight: float = 1.0
    start_step: int = 0

    def __post_init__(self) -> None:
        known = {"shape", "expression", "jaw_pose", "global_pose"}
        unknown = set(self.variables) - known
        if unknown:
            raise ValueError(f"AscentConfig.variables: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        self.variables = tuple(self.variables)
        if self.faces_per_step < 0 or self.max_steps < 1 or self.learning_rate <= 0:
            raise ValueError("AscentConfig: faces_per_step >= 0, max_steps >= 1 and learning_rate > 0 are required")

    def active(self, global_step: int) -> bool:
        return self.faces_per_step > 0 and global_step >= self.start_step


def climb(critic, face_model, render, image: Tensor, params: FaceParams, start: dict[str, Tensor],
          displacement: Tensor, steps: int, learning_rate: float, optimizer: str = "adam",
          on_step: Callable[[int, dict[str, Tensor], Tensor, tuple[Tensor, ...]], None] | None = None
          ) -> dict[str, Tensor]:
    """``steps`` steps from ``start`` (FaceParams fields) that maximise the critic score alone.

    ``optimizer``: ``"adam"`` (Adam with ``learning_rate``, as fitting uses) or ``"normalised"``
    (steepest ascent with a fixed step length ``learning_rate`` per face in the joint space of the
    climbed fields). The critic is used in eval mode (as at loss time) and gets no ``.grad``; its
    mode is restored. Returns the end values of the climbed fields (detached).

    ``on_step(step, values, score, gradients)``, if given, sees each step's point (detached values), its
    scores and the score's gradients before the update: how figures follow a climb without repeating it.
    """
    if optimizer not in CLIMB_OPTIMIZERS:
        raise ValueError(f"climb: optimizer must be one of {CLIMB_OPTIMIZERS}, got {optimizer!r}")
    climbing = {name: value.detach().clone().requires_grad_(True) for name, value in start.items()}
    adam = torch.optim.Adam(list(climbing.values()), lr=learning_rate) if optimizer == "adam" else None
    was_training = critic.training
    critic.eval()
    try:
        with torch.enable_grad():
            for step in range(steps):
                vertices = face_model(replace(params, **climbing)).vertices + displacement
                score = critic(image, render(vertices, params.camera).shaded)
                gradients = torch.autograd.grad(score.sum(), list(climbing.values()))
                if on_step is not None:
                    on_step(step, {name: value.detach() for name, value in climbing.items()}, score.detach(), gradients)
                if adam is None:
                    _normalised_step(list(climbing.values()), gradients, learning_rate)
                    continue
                for value, gradient in zip(climbing.values(), gradients):
                    value.grad = -gradient  # Adam minimises: ascend the score
                adam.step()
    finally:
        critic.train(was_training)
    return {name: value.detach() for name, value in climbing.items()}


@torch.no_grad()
def _normalised_step(values: list[Tensor], gradients: tuple[Tensor, ...], step_length: float) -> None:
    norm = torch.cat([g.flatten(1) for g in gradients], dim=1).norm(dim=1, keepdim=True).clamp(min=1e-12)
    for value, gradient in zip(values, gradients):
        value += step_length * gradient / norm.reshape(-1, *[1] * (gradient.ndim - 1))


def perturbed_start(params: FaceParams, variables: tuple[str, ...], noise: float, generator: torch.Generator,
                    scale: Tensor | None = None) -> dict[str, Tensor]:
    """The climbed fields of ``params`` plus Gaussian noise (std ``noise``, times a per-face ``scale``)."""
    out = {}
    for name in variables:
        value = getattr(params, name)
        std = noise * (scale.to(value) if scale is not None else 1.0)
        out[name] = value + std * torch.randn(value.shape, generator=generator).to(value)
    return out


def ascent_candidates(critic, face_model, render, image: Tensor, params: FaceParams, truth: Tensor,
                      config: AscentConfig, generator: torch.Generator, error_fn=None) -> RenderedCandidates:
    """Climb the critic's score from perturbed parameters; render [truth, start, end] per face.

    Args:
        critic: the ShapeCritic being trained (used in eval mode for the climb, then restored).
        face_model: FaceModel; ``render(vertices, camera) -> Renders`` draws grey renders.
        image: (B, 3, H, W) the faces' images; params / truth: their true parameters and vertices.
        error_fn: ``error_fn(vertices (B, C, V, 3), truth (B, V, 3)) -> (B, C)`` mm, the critic's error
            target (default: mean vertex error, the camera-frame whole-head target).
    Returns:
        RenderedCandidates with C = 3 columns (truth, start, end); errors in mm against ``truth``.
    """
    b = params.batch_size
    with torch.no_grad():
        displacement = truth - face_model(params).vertices  # keep detail beyond the model
    scale = 0.25 + 0.75 * torch.rand(b, 1, generator=generator)
    start = perturbed_start(params, config.variables, config.start_noise, generator, scale)
    steps = int(torch.randint(1, config.max_steps + 1, (1,), generator=generator))
    end = climb(critic, face_model, render, image, params, start, displacement, steps, config.learning_rate)
    with torch.no_grad():
        start_vertices = face_model(replace(params, **start)).vertices + displacement
        end_vertices = face_model(replace(params, **end)).vertices + displacement
        vertices = torch.stack([truth, start_vertices, end_vertices], dim=1)  # (B, 3, V, 3)
        renders = render(vertices.flatten(0, 1), params.camera.repeat_interleave(3, dim=0))
        error = error_fn(vertices, truth) if error_fn is not None else mean_vertex_error_mm(vertices, truth[:, None])
    unflat = lambda x: x.reshape(b, 3, *x.shape[1:])  # noqa: E731
    type_index = torch.full((b, 3), ASCENT_TYPE_INDEX, dtype=torch.long, device=truth.device)
    type_index[:, 0] = -1
    return RenderedCandidates(unflat(renders.shaded), unflat(renders.mask), error, type_index)
