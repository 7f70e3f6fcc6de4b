"""The render-matching head of ``ShapeCritic``: the critic predicts how the grey render must change.

Why: a scalar head must learn a function whose *input gradient* points from a start to the truth, a
second-order target that it learns slowly (the gradient objective's cosine plateaus near 0.06). This head
makes that gradient explicit. From the image and the (detached) render it predicts a correction field
``delta`` (K, S/r, S/r): the change of the render, average-pooled by r, that would bring the geometry to the
truth. The score is ``-mean(delta^2)`` (the predicted squared distance to the truth; 0 = nothing to change),
and its gradient with respect to the render is ``2 delta / N`` by construction: climbing the score moves the
render along the predicted correction, a Gauss-Newton step towards the predicted true shading. It is
trained densely and to first order (``GradientConfig.objective = "render_target"``: ``delta`` regresses the
pooled render of the true shape placed at the start minus the start's), which needs no double backprop.

A small hand-written decoder (one skip from stride r, the deepest features upsampled onto it): timm has
encoders but no decoder, and this one is 2 layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = ("score", "render_match")


class RenderMatchHead(nn.Module):
    """Features (fine at stride r, coarse at a deeper stride) -> correction field (B, K, S/r, S/r)."""

    def __init__(self, fine_channels: int, coarse_channels: int, out_channels: int, width: int = 32) -> None:
        super().__init__()
        self.mix = nn.Conv2d(fine_channels + coarse_channels, width, 3, padding=1)
        self.out = nn.Conv2d(width, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts at "nothing to change": score 0, gradient 0

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(F.silu(self.mix(torch.cat([fine, coarse], dim=1))))


def render_match_score(pooled_render: Tensor, correction: Tensor) -> Tensor:
    """(B,) ``-mean(delta^2)`` whose gradient with respect to ``pooled_render`` is ``2 delta / N``.

    ``pooled_render - pooled_render.detach()`` is zero in value and the identity in gradient: the value
    depends on the render only through ``correction`` (computed from the detached render), the gradient
    only through this term.
    """
    moved = pooled_render - pooled_render.detach() - correction
    return -moved.pow(2).flatten(1).mean(1)
