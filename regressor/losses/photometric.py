"""Photometric term: the albedo × SH-lit render should reproduce the input image on the face."""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.losses import LossTerm, register_loss
from regressor.types import LossInputs


def pixel_error(image: Tensor, render: Tensor, norm: str = "l1") -> Tensor:
    """(B, 1, H, W) per-pixel L1 (or squared) error between ``image`` and ``render``, averaged over channels."""
    difference = image - render
    return (difference.abs() if norm == "l1" else difference.square()).mean(dim=1, keepdim=True)


@register_loss("photometric")
class PhotometricLoss(LossTerm):
    """Masked L1 or L2 between ``batch.image`` and ``renders.albedo_shaded``.

    The mask is the rendered face (``renders.mask``), intersected with ``batch.mask`` when the
    dataset provides one (e.g. to skip hair and occluders). The per-pixel error is averaged over
    RGB and then over the masked pixels of the whole batch, so the value does not depend on
    image size or on how much of the image the face covers.

    Args:
        norm: ``"l1"`` (absolute error) or ``"l2"`` (squared error).
        use_batch_mask: intersect with ``batch.mask`` when present.
        trim: fraction of each image's worst masked pixels left out (0 = none). Photos hold what
            albedo x SH light cannot explain (specular highlights, cast shadows, hair, hands); a
            trimmed error keeps those pixels from bending the shape, as robust photometric terms in
            face fitting do. The threshold is taken without gradient, per image.
    """

    def __init__(self, norm: str = "l1", use_batch_mask: bool = True, trim: float = 0.0) -> None:
        super().__init__()
        if norm not in ("l1", "l2"):
            raise ValueError(f"photometric: norm must be 'l1' or 'l2', got '{norm}'")
        if not 0.0 <= trim < 1.0:
            raise ValueError(f"photometric: trim must be in [0, 1), got {trim}")
        self.norm = norm
        self.use_batch_mask = use_batch_mask
        self.trim = trim

    def forward(self, inputs: LossInputs) -> Tensor:
        image = inputs.batch.image
        render = inputs.renders.albedo_shaded
        if image.shape != render.shape:
            raise ValueError(
                f"photometric: image {tuple(image.shape)} and render {tuple(render.shape)} differ in shape"
            )
        mask = inputs.renders.mask
        if self.use_batch_mask and inputs.batch.mask is not None:
            mask = mask * inputs.batch.mask.to(mask.dtype)
        error = pixel_error(image, render, self.norm)
        if self.trim > 0:
            mask = mask * self._inlier_mask(error.detach(), mask)
        return (error * mask).sum() / mask.sum().clamp_min(1.0)

    def _inlier_mask(self, error: Tensor, mask: Tensor) -> Tensor:
        """(B, 1, H, W) 1 where a pixel's error is within its image's (1 - trim) quantile."""
        keep = torch.ones_like(error)
        for i in range(error.shape[0]):
            values = error[i][mask[i] > 0.5]
            if values.numel() > 1:
                threshold = torch.quantile(values.float(), 1.0 - self.trim)
                keep[i] = (error[i] <= threshold).to(error.dtype)
        return keep
