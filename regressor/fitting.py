"""Optimisation-based fitting: Adam on ``FaceParams`` per image, against the regressor's ``LossStack``.

This is the paper's first use of the critic and the cleanest way to see what it adds: the same
images, the same steps and the same other terms, with the ``perceptual_shape`` weight on or off.

Fitting runs in coarse-to-fine **stages** (``FitStage``). Each stage names the parameter groups
it optimises and multiplies the stack's configured weights (a term missing from a stage's
``weights`` is off in that stage, and is not evaluated). The default schedule (``default_stages``:
``configs/fitting/default.yaml``, the one place its numbers are written; ``regressor.fitting_config``) is

1. ``rigid``: global pose and camera from the landmarks (camera initialised in closed form);
2. ``shape``: + shape, expression, jaw, neck;
3. ``appearance``: + albedo and light, photometric term on;
4. ``perceptual``: the perceptual term switched on (if the stack has one), with global pose and
   camera **frozen** (the critic's pull on the rigid pose only misaligns the face,
   which NoW's alignment removes anyway); list them in the stage's ``optimize`` to free them.

Stages whose active terms never read pixels (``landmarks``, ``regularizers``) skip the
rasterizer: the landmarks are projected directly, which is the same value and gradient at a
fraction of the cost. Landmarks with ``landmarks_valid == 0`` may hold NaN (an invisible point);
they are zeroed and never reach a loss.

Samples in a batch never talk to each other: the loss is evaluated per sample and summed, so
sample i's gradient depends on sample i only, and Adam's update is element-wise. Batched fitting
therefore equals fitting each image alone, up to floating-point noise.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from regressor.fitting_config import DEFAULT_FITTING_CONFIG, PARAM_GROUPS, FitStage, load_fitting_config
from regressor.losses import LossStack
from regressor.pipeline import render_params
from regressor.render.camera import project_weak_perspective
from regressor.types import FaceBatch, FaceMesh, FaceParams, LossInputs, Renders

DEFAULT_LEARNING_RATES = {
    "shape": 0.05, "expression": 0.05, "global_pose": 0.01, "neck_pose": 0.01, "jaw_pose": 0.01,
    "eye_pose": 0.01, "camera": 0.003, "albedo": 0.05, "light": 0.02,
}
#: loss terms that read only landmarks and parameters, never pixels (see ``_needs_pixels``)
GEOMETRY_ONLY_TERMS = frozenset({"landmarks", "regularizers"})
#: fewer valid landmarks than this cannot place a face (the camera alone has 3 unknowns)
MIN_VALID_LANDMARKS = 6


RIGID_GROUPS = ("global_pose", "camera")


def default_stages(steps: Optional[int] = None, perceptual_weight: float = 1.0,
                   freeze_rigid_in_perceptual: bool = True) -> list[FitStage]:
    """The default schedule: the stages of ``configs/fitting/default.yaml`` (the one place it is
    written, ``regressor.fitting_config``), rescaled to ``steps`` in total when given.

    ``perceptual_weight``: the ``perceptual_shape`` multiplier of the stages that use it.
    ``freeze_rigid_in_perceptual``: the perceptual stage leaves global pose and camera where the
    landmark stages put them (the default); ``False`` adds them to its ``optimize``.
    """
    stages = load_fitting_config(DEFAULT_FITTING_CONFIG).stages
    if steps is not None:
        total, done = sum(s.steps for s in stages), 0
        for index, stage in enumerate(stages):
            stage.steps = steps - done if index == len(stages) - 1 else round(steps * stage.steps / total)
            done += stage.steps
    for stage in stages:
        if "perceptual_shape" in stage.weights:
            stage.weights["perceptual_shape"] = perceptual_weight
            if not freeze_rigid_in_perceptual:
                stage.optimize += [g for g in RIGID_GROUPS if g not in stage.optimize]
    return stages


@dataclass
class FitResult:
    """Fitted parameters, their mesh and renders, and the loss history.

    Attributes:
        params, mesh, renders: the final state, detached.
        history: loss label (incl. "total") -> per-step value, averaged over the batch.
        stage_starts: stage name -> first step index in ``history``.
    """

    params: FaceParams
    mesh: FaceMesh
    renders: Renders
    history: dict[str, list[float]] = field(default_factory=dict)
    stage_starts: dict[str, int] = field(default_factory=dict)


def camera_from_landmarks(model_landmarks: Tensor, landmarks: Tensor, valid: Tensor, image_size: int) -> Tensor:
    """Closed-form weak-perspective camera (B,3) fitting model landmarks (B,68,3) to 2D targets (B,68,2 px).

    Least squares of ``ndc = s * X + s * t`` with one scale shared by x and y.
    """
    ndc = torch.stack([2 * landmarks[..., 0] / image_size - 1, 1 - 2 * landmarks[..., 1] / image_size], dim=-1)
    xy = model_landmarks[..., :2]
    w = valid[..., None].to(xy.dtype)
    count = w.sum(1).clamp_min(1)
    xy_mean, ndc_mean = (xy * w).sum(1) / count, (ndc * w).sum(1) / count
    xy_c, ndc_c = (xy - xy_mean[:, None]) * w, (ndc - ndc_mean[:, None]) * w
    scale = (xy_c * ndc_c).sum((1, 2)) / (xy_c ** 2).sum((1, 2)).clamp_min(1e-12)
    translation = ndc_mean / scale[:, None] - xy_mean
    return torch.cat([scale[:, None], translation], dim=-1)


class _Variables:
    """The optimised tensors; the camera scale is optimised in log space so it stays positive."""

    def __init__(self, init: FaceParams) -> None:
        self.tensors: dict[str, Tensor] = {}
        for name in PARAM_GROUPS:
            value = getattr(init, name).detach().clone()
            if name == "camera":
                value = torch.cat([value[:, :1].clamp_min(1e-6).log(), value[:, 1:]], dim=-1)
            self.tensors[name] = value.requires_grad_(True)

    def params(self) -> FaceParams:
        values = dict(self.tensors)
        camera = values["camera"]
        values["camera"] = torch.cat([camera[:, :1].exp(), camera[:, 1:]], dim=-1)
        return FaceParams(**values)


def _select(inputs: LossInputs, index: int) -> LossInputs:
    """The single-sample slice ``index`` of every batched field (faces stay shared)."""
    part = slice(index, index + 1)
    batch = inputs.batch._map(lambda t: t[part])
    return LossInputs(batch=batch, params=inputs.params[index], mesh=inputs.mesh[index],
                      renders=inputs.renders._map(lambda t: t[part]), step=inputs.step)


def fit_images(
    images: Tensor,
    landmarks: Tensor,
    loss_stack: LossStack,
    face_model: torch.nn.Module,
    renderer: torch.nn.Module,
    init: Optional[FaceParams] = None,
    stages: Optional[Sequence[FitStage]] = None,
    landmarks_valid: Optional[Tensor] = None,
    learning_rates: Optional[dict[str, float]] = None,
    progress: bool = True,
) -> FitResult:
    """Fit ``FaceParams`` to a batch of images.

    Args:
        images: (B, 3, S, S) in [0, 1], square, at the renderer's size.
        landmarks: (B, 68, 2) target landmarks, pixels of ``images``.
        loss_stack: the stack (its configured weights are multiplied by each stage's).
        face_model, renderer: the model and renderer to fit through.
        init: starting parameters (e.g. a regressor's prediction); default the mean face with a
            camera solved from the landmarks.
        stages: the schedule; default ``default_stages()``.
        landmarks_valid: (B, 68) 1 = use the point, 0 = invisible/unknown (its coordinates may be
            NaN and are ignored); default: every point whose coordinates are finite.
        learning_rates: per-group Adam learning rates, overriding ``DEFAULT_LEARNING_RATES``.
    """
    landmarks, landmarks_valid = _check_inputs(images, landmarks, landmarks_valid)
    loss_stack.check_renderer(renderer)
    batch_size, image_size = images.shape[0], images.shape[-1]
    batch = FaceBatch(image=images, landmarks=landmarks, landmarks_valid=landmarks_valid.to(images.dtype))
    stages = list(default_stages() if stages is None else stages)
    rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
    if init is None:
        init = face_model.zero_params(batch_size, device=images.device)
        with torch.no_grad():
            init.camera = camera_from_landmarks(face_model(init).landmarks3d, landmarks, landmarks_valid, image_size)
    variables = _Variables(init.to(images.device))
    base_weights = dict(loss_stack.weights)
    history: dict[str, list[float]] = {}
    stage_starts: dict[str, int] = {}
    step = 0
    bar = tqdm(total=sum(s.steps for s in stages), desc="fitting", disable=not progress, leave=False)
    try:
        for stage in stages:
            stage_starts[stage.name] = step
            loss_stack.weights.update({k: base_weights[k] * stage.weights.get(k, 0.0) for k in base_weights})
            optimizer = torch.optim.Adam(
                [{"params": [variables.tensors[n]], "lr": rates[n] * stage.lr_scale} for n in stage.optimize]
            )
            pixels = _needs_pixels(stage, base_weights)
            for _ in range(stage.steps):
                optimizer.zero_grad(set_to_none=True)
                inputs = _forward(variables.params(), batch, face_model, renderer, step, pixels)
                per_sample = [loss_stack(_select(inputs, i)) for i in range(batch_size)]
                total = torch.stack([values["total"] for values in per_sample]).sum()
                total.backward()
                optimizer.step()
                for label in per_sample[0]:
                    history.setdefault(label, []).append(float(sum(v[label].detach() for v in per_sample)) / batch_size)
                bar.set_postfix(stage=stage.name, loss=f"{history['total'][-1]:.4f}")
                bar.update()
                step += 1
    finally:
        loss_stack.weights.update(base_weights)
        bar.close()
    with torch.no_grad():
        final = _forward(variables.params(), batch, face_model, renderer, step)
    return FitResult(final.params.detach(), final.mesh.detach(), final.renders.detach(), history, stage_starts)


def _needs_pixels(stage: FitStage, base_weights: dict[str, float]) -> bool:
    """Whether any term active in ``stage`` may read the rendered images."""
    active = {k for k, w in stage.weights.items() if w != 0.0 and base_weights.get(k, 0.0) != 0.0}
    return not active <= GEOMETRY_ONLY_TERMS


def _forward(params: FaceParams, batch: FaceBatch, face_model, renderer, step: int, pixels: bool = True) -> LossInputs:
    if pixels:
        mesh, renders = render_params(face_model, renderer, params)
    else:
        mesh = face_model(params)
        renders = _landmarks_only_renders(mesh, params.camera, renderer.image_size)
    return LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=step)


def _landmarks_only_renders(mesh: FaceMesh, camera: Tensor, image_size) -> Renders:
    """``Renders`` with the projected landmarks and empty (0-pixel) images: a term that reads
    pixels in a geometry-only stage fails loudly instead of seeing a blank render."""
    batch = mesh.vertices.shape[0]
    empty = mesh.vertices.new_zeros(batch, 1, 0, 0)
    return Renders(
        shaded=empty, albedo_shaded=empty.expand(-1, 3, -1, -1), mask=empty, normals=empty.expand(-1, 3, -1, -1),
        depth=empty, landmarks2d=project_weak_perspective(mesh.landmarks3d, camera, image_size)[..., :2],
        now_landmarks2d=project_weak_perspective(mesh.now_landmarks3d, camera, image_size)[..., :2],
    )


def _check_inputs(images: Tensor, landmarks: Tensor, valid: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Validate shapes and values; returns (landmarks with invalid points zeroed, valid (B,68) bool)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"fit_images: images must be (B, 3, S, S), got {tuple(images.shape)}")
    if landmarks.shape != (images.shape[0], 68, 2):
        raise ValueError(f"fit_images: landmarks must be ({images.shape[0]}, 68, 2), got {tuple(landmarks.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("fit_images: images contain NaN or Inf")
    finite = torch.isfinite(landmarks).all(dim=-1)
    if valid is None:
        if not finite.all():
            raise ValueError("fit_images: landmarks contain NaN or Inf; pass landmarks_valid = 0 for invisible points")
        valid = finite
    else:
        if valid.shape != landmarks.shape[:2]:
            raise ValueError(f"fit_images: landmarks_valid must be {tuple(landmarks.shape[:2])}, got {tuple(valid.shape)}")
        valid = valid > 0
        if (valid & ~finite).any():
            raise ValueError("fit_images: landmarks contain NaN or Inf at points marked valid")
    counts = valid.sum(dim=1)
    if (counts < MIN_VALID_LANDMARKS).any():
        bad = int(torch.nonzero(counts < MIN_VALID_LANDMARKS)[0, 0])
        raise ValueError(f"fit_images: sample {bad} has {int(counts[bad])} valid landmarks, "
                         f"at least {MIN_VALID_LANDMARKS} are needed")
    landmarks = torch.where(valid[..., None], landmarks, torch.zeros_like(landmarks))
    return landmarks, valid


def stages_from_config(config: Sequence[dict[str, Any] | FitStage]) -> list[FitStage]:
    """``FitStage`` list (fresh copies) from yaml dicts (``{name, steps, optimize, weights, lr_scale}``) or stages."""
    return [FitStage(**(asdict(stage) if isinstance(stage, FitStage) else copy.deepcopy(dict(stage))))
            for stage in config]
