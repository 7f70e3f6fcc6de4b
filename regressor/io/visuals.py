"""Pictures of a reconstruction, shared by the TensorBoard grid and the prediction writer.

All functions take and return float images ``(B, C, H, W)`` in ``[0, 1]``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import draw_keypoints

PREDICTED_COLOR = (255, 60, 60)  # red
TARGET_COLOR = (60, 220, 60)  # green


def grey_to_rgb(image: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 3, H, W)."""
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image


def overlay(image: Tensor, shaded: Tensor, mask: Tensor, alpha: float = 0.7) -> Tensor:
    """Grey shaded render blended over the input where the face is rendered.

    image: (B, 3, H, W); shaded: (B, 1, H, W); mask: (B, 1, H, W) in [0, 1].
    """
    weight = alpha * mask.clamp(0, 1)
    return (image * (1 - weight) + grey_to_rgb(shaded) * weight).clamp(0, 1)


def draw_landmarks(image: Tensor, predicted: Tensor, target: Tensor | None = None, radius: int = 1) -> Tensor:
    """Input image with predicted (red) and, if given, target (green) landmarks.

    image: (B, 3, H, W); predicted, target: (B, K, 2) pixels (x right, y down).
    """
    drawn = []
    for b in range(image.shape[0]):
        canvas = (image[b].detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        if target is not None:
            canvas = draw_keypoints(canvas, target[b : b + 1].detach().float().cpu(), colors=TARGET_COLOR, radius=radius)
        canvas = draw_keypoints(canvas, predicted[b : b + 1].detach().float().cpu(), colors=PREDICTED_COLOR, radius=radius)
        drawn.append(canvas.float() / 255)
    return torch.stack(drawn).to(image.device)


def reconstruction_panels(image: Tensor, renders, target_landmarks: Tensor | None = None) -> Tensor:
    """Rows of ``input | albedo render | grey shaded | overlay | landmarks`` as one batch.

    Returns (B * 5, 3, H, W), sample-major, ready for ``torchvision.utils.make_grid(nrow=5)``.
    """
    image = image.detach().float().clamp(0, 1)
    if renders.shaded.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"render size {tuple(renders.shaded.shape[-2:])} differs from the image size {tuple(image.shape[-2:])}"
        )
    panels = [
        image,
        renders.albedo_shaded.detach().float().clamp(0, 1),
        grey_to_rgb(renders.shaded.detach().float().clamp(0, 1)),
        overlay(image, renders.shaded.detach().float(), renders.mask.detach().float()),
        draw_landmarks(image, renders.landmarks2d, target_landmarks),
    ]
    return torch.stack(panels, dim=1).flatten(0, 1)
