"""Critic figures at the operating point: where a no-critic fit has placed the face.

One implementation, used by ``benchmarks.critic`` (the published ``operating_point.*`` and
``interior_sensitivity_fraction`` figures) and by critic training's validation (``val/op_*``).
Every figure starts from a fit of the project's own fitter on noisy landmarks
(``regressor.critic.fits``), i.e. at the pose and camera where the perceptual term acts:

* ``truth_wins_fraction``: the true shape, moved to the fitted pose and camera
  (``target.place_like``: the similarity that maps its face region onto the fit's), outscores the
  fitted shape. Goal >= 0.9.
* ``truth_wins_other_image``: the same comparison with every render paired with *another* face's
  image (the next one of the batch). A critic that reads the image falls towards 0.5 here; one that
  only judges how "fit-like" a shape looks (a prior, no image agreement) keeps its ``truth_wins_fraction``
  (``configs/experiments/focused.yaml``, trained only on fits, scored 0.94 with the face's own image and 0.91 with another's).
  Report it beside ``truth_wins_fraction``: the gap between them is the part the image explains.
* ``monotone_fraction``: the score rises at every point of the straight vertex line fit -> placed
  truth (``line_points`` points); ``line_spearman`` is the mean Spearman(t, score) along it.
* ``gradient_cosine_critic`` / ``gradient_cosine_landmarks``: cosine between the gradient of the
  critic score (resp. of minus the landmark loss on the fit's own noisy landmarks) with respect to
  (shape, expression), at the fit, and the direction to the true (shape, expression). Goal: the
  critic's exceeds the landmarks'.
* ``interior_sensitivity_fraction``: the share of |d score / d shaded pixel| that lies on the face
  render's interior (mask eroded by ``erode_px`` = 2 px). The hard rasterizer cannot pass a
  background or silhouette gradient back to the geometry, so what is not interior is wasted.
  Goal >= 0.8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.critic.objective import spearman
from regressor.critic.target import place_like
from regressor.render.renderer import mesh_for_rendering
from regressor.types import FaceBatch, FaceParams, LossInputs, replace

GOALS = {"operating_point.truth_wins_fraction": ">= 0.9 (read beside truth_wins_other_image)",
         "operating_point.gradient_cosine_critic": "> operating_point.gradient_cosine_landmarks",
         "interior_sensitivity_fraction": ">= 0.8"}


def vertex_renderer(renderer, faces: Tensor):
    """``render(vertices (N, V, 3), camera (N, 3)) -> Renders`` with ``renderer``'s own light and background."""
    def render(vertices: Tensor, camera: Tensor):
        return renderer(mesh_for_rendering(vertices, faces), camera)
    return render


def eroded(mask: Tensor, pixels: int) -> Tensor:
    """(B, 1, H, W) 0/1 mask shrunk by ``pixels`` px (a pixel stays only if its (2p+1)² square is inside)."""
    if pixels <= 0:
        return mask
    return 1.0 - F.max_pool2d(1.0 - mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def interior_sensitivity(critic, image: Tensor, shaded: Tensor, mask: Tensor, erode_px: int = 2) -> Tensor:
    """(B,) share of the critic's input sensitivity |d score / d shaded| on interior face pixels.

    image (B, 3, H, W), shaded (B, K, H, W) (K light channels) and mask (B, 1, H, W) at the render size.
    The critic runs in eval mode and gets no ``.grad``.
    """
    shaded = shaded.detach().clone().requires_grad_(True)
    was_training = critic.training
    critic.eval()
    try:
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(critic(image, shaded).sum(), shaded)
    finally:
        critic.train(was_training)
    magnitude = gradient.abs().sum(1, keepdim=True)  # summed over the light channels
    inside = (magnitude * eroded(mask, erode_px)).flatten(1).sum(1)
    return inside / magnitude.flatten(1).sum(1).clamp(min=1e-20)


@torch.no_grad()
def line_scores(critic, render, image: Tensor, start: Tensor, end: Tensor, camera: Tensor, points: int = 5) -> Tensor:
    """(B, points) critic scores along the vertex line start -> end (B, V, 3), all seen through ``camera``."""
    t = torch.linspace(0, 1, points, device=start.device)
    vertices = start[:, None] + t[None, :, None, None] * (end - start)[:, None]
    b = start.shape[0]
    shaded = render(vertices.flatten(0, 1), camera.repeat_interleave(points, dim=0)).shaded
    return critic(image.repeat_interleave(points, dim=0), shaded).reshape(b, points)


def gradient_cosines(critic, face_model, render, image: Tensor, fitted: FaceParams, truth: FaceParams,
                     landmarks: Tensor, landmarks_valid: Tensor) -> dict[str, Tensor]:
    """(B,) cosines of the critic's and the landmark term's ascent directions with the way to the truth.

    Gradients are taken with respect to the concatenated (shape, expression) at ``fitted``; the
    landmark term is the project's ``landmarks`` loss on the fit's own (noisy) landmarks.
    """
    from regressor.losses import LossStack

    direction = torch.cat([truth.shape - fitted.shape, truth.expression - fitted.expression], dim=1)
    variables = {name: getattr(fitted, name).detach().clone().requires_grad_(True) for name in ("shape", "expression")}
    params = replace(fitted._map(lambda t: t.detach()), **variables)
    was_training = critic.training
    critic.eval()
    try:
        with torch.enable_grad():
            mesh = face_model(params)
            renders = render(mesh.vertices, params.camera)
            score = critic(image, renders.shaded).sum()
            critic_gradient = torch.cat(torch.autograd.grad(score, list(variables.values()), retain_graph=True), dim=1)
            renders = replace(renders, landmarks2d=_project_landmarks(mesh.landmarks3d, params.camera, image.shape[-1]))
            batch = FaceBatch(image=image, landmarks=landmarks, landmarks_valid=landmarks_valid.to(image.dtype))
            stack = LossStack([{"name": "landmarks", "weight": 1.0}])
            per_sample = [stack(LossInputs(batch=batch._map(lambda t, i=i: t[i:i + 1]), params=params[i],
                                           mesh=mesh[i], renders=renders._map(lambda t, i=i: t[i:i + 1]), step=0))["total"]
                          for i in range(image.shape[0])]
            landmark_gradient = -torch.cat(torch.autograd.grad(torch.stack(per_sample).sum(), list(variables.values())), dim=1)
    finally:
        critic.train(was_training)
    return {"critic": F.cosine_similarity(critic_gradient, direction, dim=1),
            "landmarks": F.cosine_similarity(landmark_gradient, direction, dim=1)}


def _project_landmarks(landmarks3d: Tensor, camera: Tensor, image_size: int) -> Tensor:
    from regressor.render import project_weak_perspective

    return project_weak_perspective(landmarks3d, camera, image_size)[..., :2]


def operating_point_figures(critic, face_model, render, image: Tensor, truth_vertices: Tensor, truth: FaceParams,
                            fitted: FaceParams, landmarks: Tensor, landmarks_valid: Tensor, region: Tensor,
                            line_points: int = 5, erode_px: int = 2) -> dict[str, float]:
    """The module docstring's figures for B faces (``fitted``: their no-critic fits, ``region``: (B, V) face region).

    ``render`` must draw the critic's loss-time grey render (``vertex_renderer``).
    """
    was_training = critic.training
    critic.eval()
    try:
        with torch.no_grad():
            fitted_vertices = face_model(fitted).vertices
            placed = place_like(truth_vertices, fitted_vertices, region)
            scores = line_scores(critic, render, image, fitted_vertices, placed, fitted.camera, line_points)
            fitted_render = render(fitted_vertices, fitted.camera)
            placed_render = render(placed, fitted.camera)
            other_image = torch.roll(image, 1, dims=0)
            wins_other = critic(other_image, placed_render.shaded) > critic(other_image, fitted_render.shaded)
        rises = (scores[:, 1:] > scores[:, :-1]).all(dim=1)
        t = torch.linspace(0, 1, line_points)
        cosines = gradient_cosines(critic, face_model, render, image, fitted, truth, landmarks, landmarks_valid)
        interior = interior_sensitivity(critic, image, fitted_render.shaded, fitted_render.mask, erode_px)
    finally:
        critic.train(was_training)
    return {
        "operating_point.truth_wins_fraction": float((scores[:, -1] > scores[:, 0]).float().mean()),
        "operating_point.truth_wins_other_image": float(wins_other.float().mean()),
        "operating_point.monotone_fraction": float(rises.float().mean()),
        "operating_point.line_spearman": float(torch.tensor([spearman(t, s) for s in scores.cpu()]).nanmean()),
        "operating_point.score_gain": float((scores[:, -1] - scores[:, 0]).mean()),
        "operating_point.gradient_cosine_critic": float(cosines["critic"].mean()),
        "operating_point.gradient_cosine_landmarks": float(cosines["landmarks"].mean()),
        "operating_point.gradient_sign_agreement_critic": float((cosines["critic"] > 0).float().mean()),
        "interior_sensitivity_fraction": float(interior.mean()),
        "operating_point.num_faces": int(image.shape[0]),
    }
