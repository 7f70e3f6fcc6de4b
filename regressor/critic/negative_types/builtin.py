"""The nine shipped negative types, in their ``type_index`` order.

Params-space types draw their random directions with ``context.draw`` in this order; keep it, or
the shipped critic's training negatives (and the benchmark's) change.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from regressor.critic.negative_registry import NegativeContext, register_negative
from regressor.types import FaceParams


@register_negative("identity", space="params")
def identity(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    flat.shape += sev * context.config.identity * context.draw(flat.shape.shape[1])


@register_negative("expression", space="params")
def expression(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    flat.expression += sev * context.config.expression * context.draw(flat.expression.shape[1])


@register_negative("jaw", space="params")
def jaw(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    """Open (or close, but never past closed) the mouth, with a little sideways motion."""
    amount = context.config.jaw
    draw = context.draw(2)
    opening = torch.where(draw[:, 0] >= 0, torch.full_like(draw[:, 0], amount),
                          -flat.jaw_pose[:, 0].clamp(min=0.0, max=amount))
    direction = torch.stack([opening, draw[:, 1] * amount / 3.0, torch.zeros_like(opening)], dim=1)
    flat.jaw_pose += sev * direction


@register_negative("pose", space="params")
def pose(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    axis = torch.nn.functional.normalize(context.draw(3), dim=1)
    flat.global_pose += sev * context.config.pose * axis


@register_negative("camera", space="params")
def camera(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    cfg = context.config
    draw = context.draw(2)
    angle = draw[:, 0] * math.pi
    shift = torch.stack([angle.cos(), angle.sin()], dim=1) * cfg.camera_shift
    scale = 1.0 + cfg.camera_scale * torch.sign(draw[:, 1])
    moved = flat.camera.clone()
    moved[:, 1:] += sev * shift
    moved[:, 0] *= 1.0 + sev[:, 0] * (scale - 1.0)
    flat.camera = moved


@register_negative("other_identity", space="params")
def other_identity(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    other = context.params.shape.roll(1, dims=0).repeat_interleave(context.k, dim=0)
    flat.shape += sev * (other - flat.shape)


@register_negative("smooth", space="geometry")
def smooth(truth: Tensor, severity: Tensor, context: NegativeContext) -> Tensor:
    smoothed = context.smoother(truth, context.config.smooth_iterations)
    return truth + severity[:, None, None] * (smoothed - truth)


@register_negative("flatten", space="geometry")
def flatten(truth: Tensor, severity: Tensor, context: NegativeContext) -> Tensor:
    v = truth.clone()
    centre = v[..., 2].median(dim=1, keepdim=True).values
    keep = 1.0 - context.config.flatten * severity[:, None]
    v[..., 2] = centre + keep * (v[..., 2] - centre)
    return v


@register_negative("exaggerate", space="params")
def exaggerate(flat: FaceParams, sev: Tensor, context: NegativeContext) -> None:
    push = torch.nn.functional.normalize(context.draw(flat.expression.shape[1]), dim=1) * 4.0
    flat.expression = flat.expression * (1 + sev * context.config.exaggerate) + sev * push
    flat.jaw_pose = flat.jaw_pose * (1 + sev * context.config.exaggerate)
