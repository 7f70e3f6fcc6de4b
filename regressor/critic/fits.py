"""Fits without the critic at the operating point, computed once and cached on disk.

The critic is used as a loss where a landmark fit has already placed the face, so it
must be trained and measured there. ``fit_operating_points`` runs the project's own no-critic fitter
(``regressor.fitting.fit_images`` with ``configs/fitting/no_critic.yaml``, steps scaled) on images
whose 68 landmarks carry Gaussian noise (σ 1.5 px by default, about what a detector adds), and keeps
the parameters at the end of every stage after the first: early, middle and late fits.

Fitting is expensive (seconds per face on a CPU), so ``cached_fits`` writes the result once, keyed by
the seeds, the schedule, the noise and the face model, and later runs (training, validation, the
benchmark) read it back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from regressor.types import FaceParams

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_CRITIC_CONFIG = REPO_ROOT / "configs" / "fitting" / "no_critic.yaml"
LANDMARK_NOISE_PX = 1.5


@dataclass
class OperatingFits:
    """No-critic fits of B faces.

    Attributes:
        landmarks: (B, 68, 2) px, the noisy landmarks the fits used.
        stages: stage names whose end states are kept (first = earliest).
        params: one ``FaceParams`` (batch B) per kept stage, same order; the last is the final fit.
    """

    landmarks: Tensor
    stages: list[str]
    params: list[FaceParams]

    @property
    def final(self) -> FaceParams:
        return self.params[-1]

    def select(self, index: Tensor) -> "OperatingFits":
        return OperatingFits(self.landmarks[index], list(self.stages), [p[index] for p in self.params])

    def to_dict(self) -> dict:
        return {"landmarks": self.landmarks, "stages": list(self.stages),
                "params": [{f.name: getattr(p, f.name) for f in fields(p)} for p in self.params]}

    @classmethod
    def from_dict(cls, stored: dict) -> "OperatingFits":
        return cls(stored["landmarks"], list(stored["stages"]), [FaceParams(**p) for p in stored["params"]])


def noisy_landmarks(landmarks: Tensor, sigma_px: float, seeds: Tensor) -> Tensor:
    """(B, 68, 2) landmarks + N(0, sigma²) px noise, drawn per face from its seed (reproducible)."""
    noise = torch.stack([torch.randn(68, 2, generator=torch.Generator().manual_seed(int(s) + 7_919))
                         for s in seeds])
    return landmarks + sigma_px * noise.to(landmarks)


def fit_operating_points(face_model, images: Tensor, landmarks: Tensor, landmarks_valid: Tensor,
                         steps_scale: float = 0.5, config_path: str | os.PathLike = NO_CRITIC_CONFIG,
                         batch: int = 8, progress: bool = False) -> OperatingFits:
    """Fit every image with the no-critic schedule and keep the end state of every stage after the first.

    Each stage runs as its own ``fit_images`` call started from the previous stage's parameters
    (the first from the closed-form landmark camera), so intermediate fits come for free.
    """
    from regressor.fitting import fit_images, stages_from_config
    from regressor.fitting_config import load_config
    from regressor.losses import LossStack
    from regressor.render import Renderer

    config = load_config(config_path)
    if any(spec["name"] == "perceptual_shape" for spec in config["losses"]):
        raise ValueError(f"{config_path}: operating-point fits must not use the critic (perceptual_shape found)")
    stack = LossStack(config["losses"])
    renderer = Renderer(image_size=images.shape[-1], **config.get("renderer", {}))
    stages = stages_from_config(config["stages"])
    for stage in stages:
        stage.steps = max(1, round(stage.steps * steps_scale))
    kept: list[list[FaceParams]] = [[] for _ in stages[1:]]
    for first in range(0, images.shape[0], batch):
        part = slice(first, first + batch)
        state = None
        for i, stage in enumerate(stages):
            result = fit_images(images[part], landmarks[part], stack, face_model, renderer, init=state, stages=[stage],
                                landmarks_valid=landmarks_valid[part], learning_rates=config.get("learning_rates"),
                                progress=progress)
            state = result.params.detach()
            if i > 0:
                kept[i - 1].append(state)
    return OperatingFits(landmarks, [s.name for s in stages[1:]], [FaceParams.cat(p) for p in kept])


def cached_fits(face_model, images: Tensor, landmarks: Tensor, landmarks_valid: Tensor, seeds: Tensor,
                cache_dir: str | os.PathLike | None, sigma_px: float = LANDMARK_NOISE_PX, steps_scale: float = 0.5,
                config_path: str | os.PathLike | None = None, progress: bool = False,
                fit_size: int | None = None) -> OperatingFits:
    """``fit_operating_points`` on noisy landmarks, read from / written to ``cache_dir`` (None = no cache);
    ``config_path`` None = ``configs/fitting/no_critic.yaml``.

    ``fit_size``: fit at this resolution (images area-resampled, landmarks scaled; None = the images' own).
    The fitted parameters do not depend on the resolution (the camera is in NDC), so a 128 px critic can
    be trained on fits made at 64 px (of its resampled images); the returned ``landmarks`` are at the images' own
    resolution, as given.
    """
    config_path = NO_CRITIC_CONFIG if config_path is None else config_path
    if fit_size is not None and fit_size != images.shape[-1]:
        ratio = fit_size / images.shape[-1]
        fits = cached_fits(face_model, torch.nn.functional.interpolate(images, size=(fit_size, fit_size), mode="area"),
                           landmarks * ratio, landmarks_valid, seeds, cache_dir, sigma_px, steps_scale, config_path,
                           progress)
        return OperatingFits(fits.landmarks / ratio, fits.stages, fits.params)
    noisy = noisy_landmarks(landmarks, sigma_px, seeds)
    path = None
    if cache_dir is not None:
        key = json.dumps({"seeds": [int(s) for s in seeds], "sigma": sigma_px, "scale": steps_scale,
                          "config": Path(config_path).read_text(), "model": _model_digest(face_model),
                          "size": int(images.shape[-1]), "inputs": _input_digest(images, landmarks)}, sort_keys=True)
        path = Path(cache_dir) / f"fits_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            return OperatingFits.from_dict(torch.load(path, map_location="cpu", weights_only=True))
    fits = fit_operating_points(face_model, images, noisy, landmarks_valid, steps_scale, config_path, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(fits.to_dict(), tmp)
        os.replace(tmp, path)
    return fits


def _input_digest(images: Tensor, landmarks: Tensor) -> str:
    """Digest of what the fits see, rounded (0.01 px, 0.001 of mean intensity) so float noise does not miss the
    cache: the same seeds rendered with another synthetic config (e.g. ``shape_scale_range``) must not reuse fits."""
    digest = hashlib.sha1()
    digest.update((landmarks.detach().cpu().double() * 100).round().long().numpy().tobytes())
    digest.update((images.detach().cpu().double().mean(dim=(-1, -2)) * 1000).round().long().numpy().tobytes())
    return digest.hexdigest()[:16]


def _model_digest(face_model) -> str:
    digest = hashlib.sha1()
    for name in ("v_template", "shapedirs", "faces"):
        digest.update(getattr(face_model, name).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
