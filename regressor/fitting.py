"""Optimisation-based fitting: Adam on ``FaceParams`` per image, against the regressor's ``LossStack``.

This is the paper's first use of the critic and the cleanest way to see what it adds: the same
images, the same steps and the same other terms, with the ``perceptual_shape`` weight on or off.

Fitting runs in coarse-to-fine **stages** (``FitStage``). Each stage names the parameter groups
it optimises and multiplies the stack's configured weights (a term missing from a stage's
``weights`` is off in that stage, and is not evaluated). The default schedule is

1. ``rigid``: global pose and camera from the landmarks (camera initialised in closed form);
2. ``shape``: + shape, expression, jaw, neck;
3. ``appearance``: + albedo and light, photometric term on;
4. ``perceptual``: everything, with the perceptual term switched on (if the stack has one).

Samples in a batch never talk to each other: the loss is evaluated per sample and summed, so
sample i's gradient depends on sample i only, and Adam's update is element-wise. Batched fitting
therefore equals fitting each image alone, up to floating-point noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from regressor.losses import LossStack
from regressor.pipeline import render_params
from regressor.types import FaceBatch, FaceMesh, FaceParams, LossInputs, Renders

PARAM_GROUPS = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "camera", "albedo", "light")
DEFAULT_LEARNING_RATES = {
    "shape": 0.05, "expression": 0.05, "global_pose": 0.01, "neck_pose": 0.01, "jaw_pose": 0.01,
    "eye_pose": 0.01, "camera": 0.003, "albedo": 0.05, "light": 0.02,
}


@dataclass
class FitStage:
    """One stage of the coarse-to-fine schedule.

    Attributes:
        name: label for logs and plots.
        steps: Adam steps in this stage.
        optimize: ``FaceParams`` field names optimised in this stage (``PARAM_GROUPS``).
        weights: loss label -> multiplier of the stack's configured weight; absent labels are off.
        lr_scale: multiplies every group's learning rate (``DEFAULT_LEARNING_RATES``).
    """

    name: str
    steps: int
    optimize: list[str]
    weights: dict[str, float]
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.optimize) - set(PARAM_GROUPS))
        if unknown:
            raise ValueError(f"fitting stage '{self.name}': unknown parameter groups {unknown}; known: {PARAM_GROUPS}")
        if self.steps < 0:
            raise ValueError(f"fitting stage '{self.name}': steps must be >= 0, got {self.steps}")


def default_stages(steps: int = 200, perceptual_weight: float = 1.0) -> list[FitStage]:
    """The documented default schedule, ``steps`` in total (10% / 35% / 25% / 30%)."""
    rigid, shape, appearance = int(0.1 * steps), int(0.35 * steps), int(0.25 * steps)
    everything = ["shape", "expression", "jaw_pose", "neck_pose", "global_pose", "camera", "albedo", "light"]
    return [
        FitStage("rigid", rigid, ["global_pose", "camera"], {"landmarks": 1.0}, lr_scale=2.0),
        FitStage("shape", shape, ["shape", "expression", "jaw_pose", "neck_pose", "global_pose", "camera"],
                 {"landmarks": 1.0, "regularizers": 1.0}),
        FitStage("appearance", appearance, everything, {"landmarks": 1.0, "regularizers": 1.0, "photometric": 1.0}),
        FitStage("perceptual", steps - rigid - shape - appearance, everything,
                 {"landmarks": 1.0, "regularizers": 1.0, "photometric": 1.0, "perceptual_shape": perceptual_weight}),
    ]


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
        landmarks_valid: (B, 68) visibility, default all ones.
        learning_rates: per-group Adam learning rates, overriding ``DEFAULT_LEARNING_RATES``.
    """
    _check_inputs(images, landmarks)
    loss_stack.check_renderer(renderer)
    batch_size, image_size = images.shape[0], images.shape[-1]
    if landmarks_valid is None:
        landmarks_valid = torch.ones(landmarks.shape[:2], dtype=images.dtype, device=images.device)
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
            for _ in range(stage.steps):
                optimizer.zero_grad(set_to_none=True)
                inputs = _forward(variables.params(), batch, face_model, renderer, step)
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


def _forward(params: FaceParams, batch: FaceBatch, face_model, renderer, step: int) -> LossInputs:
    mesh, renders = render_params(face_model, renderer, params)
    return LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=step)


def _check_inputs(images: Tensor, landmarks: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"fit_images: images must be (B, 3, S, S), got {tuple(images.shape)}")
    if landmarks.shape != (images.shape[0], 68, 2):
        raise ValueError(f"fit_images: landmarks must be ({images.shape[0]}, 68, 2), got {tuple(landmarks.shape)}")
    for name, tensor in (("images", images), ("landmarks", landmarks)):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"fit_images: {name} contain NaN or Inf")


def stages_from_config(config: list[dict[str, Any]]) -> list[FitStage]:
    """``FitStage`` list from yaml dicts (``{name, steps, optimize, weights, lr_scale}``)."""
    return [FitStage(**dict(stage)) for stage in config]
