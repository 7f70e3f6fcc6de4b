"""Perceptual shape loss (Otto et al. 2023): a frozen critic judges the grey-shaded geometry.

The critic scores how well a grey Lambertian render of the predicted geometry explains the
input image (higher = better). It never sees albedo or lighting, so its gradient can only
reach the geometry, through ``renders.shaded``. The critic itself never learns here:

* its parameters have ``requires_grad=False``;
* it is stored outside ``_modules`` (see ``_apply``), so it is not in ``parameters()`` (and so
  never in an optimizer), not in ``state_dict()`` (so not in Lightning checkpoints; it is
  re-read from its own file) and not switched to train mode by a parent's ``.train()``;
* it always runs in eval mode (BatchNorm statistics and dropout are fixed).

**Resolution.** The critic works at its own resolution (``critic.image_size``, stated in its
checkpoint). Fitting and training may render larger (fitting: 128 or 224 px), so the image and
the shaded render are resampled to the critic's size first (``resample_to_critic``: area
averaging when shrinking, so every full-resolution pixel gets its share of the gradient;
bilinear when enlarging). The other terms keep the full resolution.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from regressor.assets import resolve_shipped
from regressor.losses import LossTerm, register_loss
from regressor.types import LossInputs, Renders

DEFAULT_CRITIC_CHECKPOINT = "checkpoints/critic.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` as given if it exists (relative to the cwd), else the shipped critic it names
    (``checkpoints/critic.pt``: package data, ``regressor.assets``)."""
    candidate = resolve_shipped(path)
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"perceptual_shape: critic checkpoint '{path}' not found (looked in {Path.cwd()} and among the shipped "
        "checkpoints); train one with the critic config or pass `checkpoint:` in the loss config"
    )


def resample_to_critic(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size): area average when shrinking, bilinear when enlarging."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if x.shape[-2] >= size and x.shape[-1] >= size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@register_loss("perceptual_shape")
class PerceptualShapeLoss(LossTerm):
    """``-score`` (or ``softplus(-score)``) of a frozen ``ShapeCritic`` on ``(image, shaded)``.

    Args:
        checkpoint: critic checkpoint (``ShapeCritic.from_checkpoint``); relative paths are tried
            in the working directory, then among the shipped checkpoints (``checkpoints/critic.pt``).
        warmup_steps: the term is 0 (and the critic is not run) while ``step < warmup_steps``,
            so the geometry first settles under the photometric and landmark terms.
        transform: ``"negate"`` (``-score``; a ranking critic is calibrated so that
            ``score ~ -log(1 + err / 1 mm)``, a non-saturating error proxy >= 0; the shipped critic is trained for
            its gradient, so only the slope of ``-score`` carries meaning, not its value) or
            ``"softplus"`` (``softplus(-score)``: bounded below and saturating for very good
            scores, for critics trained as real/fake logits).
        critic: an already built critic (tests, fitting); overrides ``checkpoint``.
    """

    def __init__(
        self,
        checkpoint: str = DEFAULT_CRITIC_CHECKPOINT,
        warmup_steps: int = 0,
        transform: str = "negate",
        critic: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if transform not in ("softplus", "negate"):
            raise ValueError(f"perceptual_shape: transform must be 'softplus' or 'negate', got '{transform}'")
        if warmup_steps < 0:
            raise ValueError(f"perceptual_shape: warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.transform = transform
        if critic is None:
            from regressor.models.critic import ShapeCritic  # lazy: only this term needs the critic

            self.checkpoint = str(resolve_checkpoint(checkpoint))
            critic = ShapeCritic.from_checkpoint(self.checkpoint)
        else:
            self.checkpoint = None
        critic.requires_grad_(False)
        critic.eval()
        # Deliberately not a registered submodule (see the module docstring).
        object.__setattr__(self, "critic", critic)

    def _apply(self, fn, recurse=True):
        """Follow ``.to()`` / ``.cuda()`` / ``.double()`` of the parent for the hidden critic."""
        super()._apply(fn, recurse)
        self.critic._apply(fn)
        return self

    def train(self, mode: bool = True) -> "PerceptualShapeLoss":
        super().train(mode)
        self.critic.eval()  # frozen: BatchNorm statistics and dropout never change
        return self

    def is_active(self, step: int) -> bool:
        return step >= self.warmup_steps

    def check_renderer(self, renderer: nn.Module) -> None:
        """Refuse a renderer whose grey render differs from the critic's (``CriticRenderSettings.check``).

        The render size is applied, not refused: the critic resizes renders to its input size.
        """
        settings = getattr(self.critic, "render_settings", None)
        if settings is not None:
            settings.check(renderer)

    def score(self, image: Tensor, shaded: Tensor) -> Tensor:
        """(B,) critic scores, higher = the geometry explains the image better (inputs of any
        size; both are resampled to the critic's resolution, see the module doc)."""
        self.critic.eval()
        size = int(self.critic.image_size)
        return self.critic(resample_to_critic(image.detach(), size), resample_to_critic(shaded, size))

    def score_renders(self, image: Tensor, renders: Renders) -> Tensor:
        """``score`` of a renderer's output: a critic with extra lights gets its channels from the normals."""
        return self.score(image, self.critic.render_settings.complete(renders.shaded, renders.normals, renders.mask))

    def score_mesh(self, image: Tensor, vertices: Tensor, faces: Tensor, camera: Tensor,
                   renderer: nn.Module | None = None) -> Tensor:
        """Score any triangle mesh against its photo: no face model, any topology or coverage.

        Args:
            image: (B, 3, H, W) in [0, 1], square; the face where ``camera`` puts the mesh.
            vertices: (B, V, 3) in model axes (+Y up, +Z towards the camera), the units the camera expects.
            faces: (F, 3) long, shared by the batch: a scan, a face-only mask, another model's mesh.
            camera: (B, 3) weak perspective ``(scale, tx, ty)`` (``regressor.render.project_weak_perspective``).
            renderer: default: the critic's own grey render at the image's size
                (``CriticRenderSettings.renderer``).
        Returns:
            (B,) scores, differentiable w.r.t. ``vertices`` and ``camera`` (higher = the shading
            explains the image better).
        """
        from regressor.render import mesh_for_rendering

        if renderer is None:
            renderer = self.critic.render_settings.renderer(image_size=int(image.shape[-1]))
        self.check_renderer(renderer)
        renders = renderer(mesh_for_rendering(vertices, faces.to(vertices.device)), camera)
        return self.score_renders(image, renders)

    def forward(self, inputs: LossInputs) -> Tensor:
        if not self.is_active(inputs.step):
            return inputs.renders.shaded.new_zeros(())
        scores = self.score_renders(inputs.batch.image, inputs.renders)
        if self.transform == "softplus":
            return F.softplus(-scores).mean()
        return (-scores).mean()

    def extra_repr(self) -> str:
        return (f"checkpoint={self.checkpoint!r}, warmup_steps={self.warmup_steps}, "
                f"transform={self.transform!r}, critic={type(self.critic).__name__}")
