"""Candidate groups of ``CriticModule`` beyond the hand-made negatives, as plain objects.

* ``GradientGroup``: the gradient objective (``regressor.critic.gradient``) on a batch's faces, with
  fit-like starts drawn from the no-critic fitter's error model, and the gate's figures
  (``regressor.critic.gradient_figures``) on fixed validation starts.
* ``truth_landmarks``: 2-D, 3-D and NoW landmarks of true heads, displacement included.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.critic.fit_error import FitErrorModel
from regressor.critic.gradient import (
    START_KINDS, GradientConfig, climb_ranking, climbed_starts, gradient_losses, metric_weights, sample_starts,
)
from regressor.critic.gradient_figures import gate_figures
from regressor.critic.operating_point import vertex_renderer
from regressor.critic.target import face_region
from regressor.render import project_weak_perspective
from regressor.synthetic.displacement import displace_landmarks
from regressor.types import FaceParams

VALIDATION_START_SEED = 20_231


def truth_landmarks(face_model, params: FaceParams, vertices: Tensor, image_size: int):
    """(2-D landmarks (B, 68, 2) px, 68 3-D landmarks, 7 NoW landmarks) of true heads incl. displacement."""
    with torch.no_grad():
        mesh = face_model(params)
        displacement = vertices - mesh.vertices
        landmarks = displace_landmarks(mesh.landmarks3d, mesh.vertices, displacement)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, displacement)
        points = project_weak_perspective(landmarks, params.camera, image_size)[..., :2]
    return points, landmarks, now


class GradientGroup:
    """The gradient objective on the first ``faces_per_step`` faces of each batch.

    The fit-error model and the direction metric are loaded once, on first use (a config whose group is
    off never needs the model's file). Renders use the loss-time renderer: the gradient is trained where,
    and as, the loss will use it (default light and background).
    """

    def __init__(self, config: GradientConfig) -> None:
        self.config = config
        self._fit_errors: FitErrorModel | None = None
        self._weights: Tensor | None = None

    def fit_errors(self) -> FitErrorModel:
        if self._fit_errors is None:
            self._fit_errors = FitErrorModel.load(self.config.fit_error_model)
        return self._fit_errors

    def weights(self, face_model) -> Tensor:
        if self._weights is None:
            self._weights = metric_weights(face_model, self.config.metric)
        return self._weights

    def losses(self, critic, face_model, renderer, batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        n = min(self.config.faces_per_step, batch["image"].shape[0])
        truth = FaceParams.from_dict({k: v[:n] for k, v in batch["params"].items()})
        start, kind = sample_starts(truth, self.fit_errors(), self.config, generator)
        render = vertex_renderer(renderer, face_model.faces)
        image, weights = batch["image"][:n], self.weights(face_model).to(truth.shape)
        climbed = climbed_starts(critic, face_model, render, image, start, kind, self.config, generator)
        losses = gradient_losses(critic, face_model, render, image, truth, climbed, self.config, weights)
        if self.config.climb_ranking_weight:
            was_climbed = kind == START_KINDS.index("climbed")
            ranking = climb_ranking(critic, face_model, render, image, truth, start, climbed, was_climbed, weights)
            losses["climb_ranking"] = ranking.detach()
            losses["total"] = losses["total"] + self.config.climb_ranking_weight * ranking
        return losses

    def validation_starts(self, face_model, truth: FaceParams, batch: dict) -> FaceParams:
        """Fixed fit-like starts, the same every validation: the no-critic fitter's fits of these faces
        (``validation_fits``: noisy true landmarks, as the gate's fits) or one fixed draw of the modelled fit."""
        if self.config.validation_fits:
            from regressor.critic.fits import cached_fits

            image = batch["image"]
            points, _, _ = truth_landmarks(face_model, truth, batch["vertices"], image.shape[-1])
            valid = torch.ones(points.shape[:2], device=points.device)
            return cached_fits(face_model, image, points, valid, batch["index"], self.config.validation_fits).final
        generator = torch.Generator().manual_seed(VALIDATION_START_SEED)
        return self.fit_errors().sample(truth, generator)

    def validation_figures(self, critic, face_model, renderer, batch: dict) -> dict[str, float]:
        truth = FaceParams.from_dict(batch["params"])
        vertices = batch["vertices"]
        _, _, now = truth_landmarks(face_model, truth, vertices, batch["image"].shape[-1])
        return gate_figures(critic, face_model, vertex_renderer(renderer, face_model.faces), batch["image"], truth,
                            vertices, face_region(vertices, now), self.validation_starts(face_model, truth, batch),
                            {self.config.metric: self.weights(face_model).to(vertices)})
