"""Training candidates at the operating point: geometries where the loss is actually used.

For each face with a no-critic fit (``regressor.critic.fits``: noisy landmarks, several stages), all
candidates are rendered through the *fitted* camera, each with its own small pose and camera jitter:

* column 0, the positive: the true geometry moved to the fitted pose (``target.place_like``);
* the fitted shapes of every kept stage (early, middle, final);
* points on the line final fit -> placed truth (``line_points``, e.g. 0.5) and beyond it (1.4), so the
  score must rise towards the truth and fall past it;
* the regressor's prediction for the face, when predictions are given (optional);
* another face's true shape placed at the same pose, and points on the line truth -> it
  (``other_truths``): negatives with a true shape's statistics, so that the image, not how
  "fit-like" a shape looks, must tell them from the positive (``configs/experiments/focused.yaml``: a critic trained without
  them ranked the truth above the fit as well with a grey image as with the face's own);
* lateral candidates (``lateral``): the final fit, the placed truth and the halfway point, each moved
  along random shape and expression directions, so the critic learns the error landscape *around* the
  fit and the truth and not only along the one line between them (docs/results/critic_retraining.md: every critic before them,
  climbed from the fit, found directions the training line never showed, and the error grew);
* ascent negatives that start from the final fit (``ascent_steps`` > 0): the current critic's score
  climbed on shape and expression, as fitting would follow it.

Every error is the aligned face-region error (``target.aligned_face_error_mm``), which pose and camera
jitter do not change, so the critic is asked to judge shape regardless of small misplacement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pytorch3d.transforms import axis_angle_to_matrix
from torch import Tensor

from regressor.critic.ascent import climb
from regressor.critic.fits import OperatingFits
from regressor.critic.target import aligned_face_error_mm, place_like
from regressor.types import FaceParams, replace

OPERATING_TYPE_INDEX = -3  # type_index of operating-point candidates (positive -1, ascent -2, hand-made >= 0)


@dataclass
class OperatingPointConfig:
    """Operating-point candidates in critic training (``faces_per_step = 0`` switches them off).

    Attributes:
        faces_per_step: faces of each training batch that get operating-point candidates.
        fit_cache: directory of the cached no-critic fits (written once, then read).
        fit_steps_scale: multiplies the steps of the fitting config (``fit_config``) for those fits.
        fit_config: the no-critic fitting config the fits use (None = ``configs/fitting/no_critic.yaml``);
            a run pins it so that a later recalibration of the fitter does not change its candidates
            (or invalidate its fit cache) mid-training.
        fit_image_size: resolution the fits are made at (None = the training images'); a 128 px critic
            is so measured at fits of the same quality as a 64 px one (fitted parameters do not depend on
            the resolution, the fitter's cost does).
        landmark_noise_px: std of the noise on the landmarks the fits use.
        line_points: positions on the line final fit (0) -> placed truth (1) added as candidates.
        other_truths: positions on the line placed truth (0) -> another face's placed true shape (1)
            added as candidates (the batch's next face; () = none; needs >= 2 faces per step).
        pose_jitter: std (rad) of a random rotation of every candidate about its centroid.
        camera_jitter: std of the camera's image-plane shift (model units) and relative scale.
        ascent_steps / ascent_learning_rate: climb of the current critic from the final fit (0 = none).
        regressor_checkpoint: a RegressorModule checkpoint whose predictions join the candidates.
        weight: weight of this group's ranking loss, added to the objective's total.
        lateral: random directions per anchor (final fit, placed truth, halfway point): each anchor moved by
            the posed change of ``shape += lateral_std[0] * n``, ``expression += lateral_std[1] * n'`` at the
            fit (0 = none).
        lateral_std: per-coefficient std (basis-std units) of the shape and expression draws; each draw is
            scaled by a uniform factor in (0.2, 1] so the lateral errors are graded.
        image_shuffle_weight: weight of the spread (variance) of one face's candidate scores when they are
            paired with *another* face's image (0 = off). A score that depends on the render alone, a shape
            prior, varies there; one that compares render and image has nothing to prefer. Without it
            ``configs/experiments/focused.yaml`` judged how "fit-like" a shape looks, with any image.
    """

    faces_per_step: int = 0
    fit_cache: str = "outputs/critic_fit_cache"
    fit_steps_scale: float = 0.5
    fit_config: str | None = None
    fit_image_size: int | None = None
    landmark_noise_px: float = 1.5
    line_points: tuple[float, ...] = field(default=(0.5, 1.4))
    other_truths: tuple[float, ...] = ()
    pose_jitter: float = 0.03
    camera_jitter: float = 0.01
    ascent_steps: int = 0
    ascent_learning_rate: float = 0.05
    regressor_checkpoint: str | None = None
    weight: float = 1.0
    image_shuffle_weight: float = 0.0
    lateral: int = 0
    lateral_std: tuple[float, float] = (0.3, 0.3)

    def __post_init__(self) -> None:
        self.lateral_std = tuple(float(t) for t in self.lateral_std)
        self.line_points = tuple(float(t) for t in self.line_points)
        self.other_truths = tuple(float(t) for t in self.other_truths)
        if self.faces_per_step < 0 or self.ascent_steps < 0 or self.lateral < 0:
            raise ValueError("OperatingPointConfig: faces_per_step, ascent_steps and lateral must be >= 0")
        if len(self.lateral_std) != 2 or min(self.lateral_std) < 0:
            raise ValueError(f"OperatingPointConfig: lateral_std must be two stds >= 0, got {self.lateral_std}")


@dataclass
class OperatingCandidates:
    """vertices (B, C, V, 3); camera (B, C, 3); error_mm (B, C); type_index (B, C) (-1 = positive)."""

    vertices: Tensor
    camera: Tensor
    error_mm: Tensor
    type_index: Tensor


def jitter(vertices: Tensor, camera: Tensor, pose_std: float, camera_std: float,
           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Small random rotation about each geometry's centroid and camera shift/scale: (N, V, 3), (N, 3)."""
    n = vertices.shape[0]
    rotation = axis_angle_to_matrix(pose_std * torch.randn(n, 3, generator=generator)).to(vertices)
    centre = vertices.mean(dim=1, keepdim=True)
    vertices = (vertices - centre) @ rotation.transpose(1, 2) + centre
    noise = (camera_std * torch.randn(n, 3, generator=generator)).to(camera)
    camera = torch.cat([camera[:, :1] * (1 + noise[:, :1]), camera[:, 1:] + noise[:, 1:]], dim=1)
    return vertices, camera


def lateral_offsets(face_model, fit, base: Tensor, config: OperatingPointConfig,
                    generator: torch.Generator) -> list[Tensor]:
    """``config.lateral`` posed vertex offsets (B, V, 3) of random shape/expression moves at the fit
    (``base``: the fit's own vertices)."""
    offsets = []
    for _ in range(config.lateral):
        scale = 0.2 + 0.8 * torch.rand(fit.shape.shape[0], 1, generator=generator)
        shape = config.lateral_std[0] * scale * torch.randn(fit.shape.shape, generator=generator)
        expression = config.lateral_std[1] * scale * torch.randn(fit.expression.shape, generator=generator)
        moved = replace(fit, shape=fit.shape + shape.to(fit.shape), expression=fit.expression + expression.to(fit.shape))
        offsets.append(face_model(moved).vertices - base)
    return offsets


def operating_candidates(face_model, truth: Tensor, region: Tensor, fits: OperatingFits, config: OperatingPointConfig,
                         generator: torch.Generator, predictions: FaceParams | None = None, critic=None,
                         render=None, image: Tensor | None = None) -> OperatingCandidates:
    """The module docstring's candidates for B faces (truth (B, V, 3), region (B, V), their ``fits``).

    ``critic``, ``render`` (``render(vertices, camera) -> Renders``) and ``image`` are needed only for
    ascent negatives (``config.ascent_steps > 0``).
    """
    final = fits.final
    with torch.no_grad():
        fitted = [face_model(p).vertices for p in fits.params]
        placed = place_like(truth, fitted[-1], region)
        columns = [placed, *fitted]
        columns += [fitted[-1] + t * (placed - fitted[-1]) for t in config.line_points]
        if config.other_truths:
            other = place_like(torch.roll(truth, 1, dims=0), fitted[-1], region)
            columns += [placed + t * (other - placed) for t in config.other_truths]
        if predictions is not None:
            columns.append(place_like(face_model(predictions).vertices, fitted[-1], region))
        if config.lateral:
            offsets = lateral_offsets(face_model, final, fitted[-1], config, generator)
            columns += [anchor + offset for anchor in (fitted[-1], placed, 0.5 * (fitted[-1] + placed))
                        for offset in offsets]
    if config.ascent_steps and critic is not None:
        start = {"shape": final.shape, "expression": final.expression}
        end = climb(critic, face_model, render, image, final, start, torch.zeros_like(truth), config.ascent_steps,
                    config.ascent_learning_rate)
        with torch.no_grad():
            columns.append(face_model(replace(final, **end)).vertices)
    with torch.no_grad():
        vertices = torch.stack(columns, dim=1)  # (B, C, V, 3)
        b, c = vertices.shape[:2]
        camera = final.camera[:, None].expand(b, c, 3).reshape(b * c, 3)
        moved, camera = jitter(vertices.flatten(0, 1), camera, config.pose_jitter, config.camera_jitter, generator)
        error = aligned_face_error_mm(vertices, truth, region)  # rigid jitter does not change it
        error[:, 0] = 0.0
    type_index = torch.full((b, c), OPERATING_TYPE_INDEX, dtype=torch.long, device=truth.device)
    type_index[:, 0] = -1
    return OperatingCandidates(moved.reshape(b, c, *truth.shape[1:]), camera.reshape(b, c, 3), error, type_index)
