"""Synthetic faces with ground truth: random parameters -> mesh (+ displacement) -> photo-like image.

``SyntheticFaceGenerator.generate(seeds)`` renders a batch; each sample is a function of its
seed only (per-sample, per-stage generators), so a batch equals the same seeds one by one and
DataLoader workers never repeat a sample. ``SyntheticFaceDataset`` serves a named split
(``regressor.synthetic.splits``) on the fly.

Landmark visibility (``landmarks_valid``) is a depth test of each projected landmark against
the z-buffer of the ground-truth mesh (3x3 neighbourhood, 8 mm tolerance); landmarks on the
silhouette count as visible.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from regressor.synthetic.appearance import FeatureAtlas, sample_feature_style
from regressor.synthetic.displacement import (
    displace, displace_landmarks, face_region_weights, sample_displacement_amplitudes,
)
from regressor.synthetic.sampling import JAW_OPEN_SIGN, crop_camera, fit_sh_light, sample_face_params, sample_lighting
from regressor.synthetic.splits import sample_seed
from regressor.synthetic.config import SyntheticConfig
from regressor.synthetic.shading import SceneGeometry, finish_image, shade_faces
from regressor.render import project_weak_perspective, rasterize
from regressor.types import FaceParams, TensorDataclass

VISIBILITY_TOLERANCE_M = 0.008


@dataclass
class SyntheticBatch(TensorDataclass):
    """A rendered batch with ground truth.

    Attributes:
        image: (B, 3, H, W) in [0, 1].
        landmarks: (B, 68, 2) pixels, projected from the ground-truth mesh (incl. displacement).
        landmarks_valid: (B, 68) 1 = visible (not hidden by the head itself), else 0.
        now_landmarks: (B, 7, 2) pixels.
        mask: (B, 1, H, W) 0/1 coverage of the ground-truth head (geometry; occluders not removed).
        params: ground-truth FaceParams (light = SH fit of the scene's diffuse lighting).
        vertices: (B, V, 3) ground-truth vertices, metres (model output + displacement).
        displacement: (B, V, 3) the part of ``vertices`` outside the model.
        seeds: (B,) long.
    """

    image: Tensor
    landmarks: Tensor
    landmarks_valid: Tensor
    now_landmarks: Tensor
    mask: Tensor
    params: FaceParams
    vertices: Tensor
    displacement: Tensor
    seeds: Tensor


class SyntheticFaceGenerator:
    """Random faces rendered with effects the albedo x SH model cannot explain (see ``SyntheticConfig``).

    Args:
        face_model: a ``regressor.face_model.FaceModel`` (its device is used).
        image_size: output side in pixels.
        config: distributions and effect switches (default: everything on).
        backend: rasterizer backend ("torch" is deterministic on CPU and fast).
    """

    def __init__(self, face_model, image_size: int = 64, config: SyntheticConfig | None = None, backend: str = "torch"):
        self.face_model = face_model
        self.image_size = int(image_size)
        self.config = config or SyntheticConfig()
        self.backend = backend
        self.faces = face_model.faces.long()
        with torch.no_grad():
            neutral = face_model(face_model.zero_params(1))
            opened = face_model.zero_params(1)
            opened.jaw_pose[:, 0] = JAW_OPEN_SIGN * math.radians(25.0)
            open_mesh = face_model(opened)
        self.template = face_model.v_template.detach().float()
        self.template_landmarks = neutral.landmarks3d[0].detach().float()
        self.face_region = face_region_weights(self.template, self.template_landmarks)
        self.atlas = FeatureAtlas.for_landmarks(self.template_landmarks)
        jaw_motion = (open_mesh.vertices[0] - neutral.vertices[0]).norm(dim=-1)
        self.jaw_weight = (jaw_motion / jaw_motion.max().clamp(min=1e-12)).detach()
        self.mouth_faces = _stretched_faces(neutral.vertices[0], open_mesh.vertices[0], self.faces)

    def with_config(self, config: SyntheticConfig, image_size: int | None = None) -> "SyntheticFaceGenerator":
        """A generator sharing this one's model and precomputed maps, with another config (and size)."""
        other = copy.copy(self)
        other.config = config
        other.image_size = self.image_size if image_size is None else int(image_size)
        return other

    @property
    def device(self) -> torch.device:
        return self.template.device

    @torch.no_grad()
    def generate(self, seeds: list[int] | Tensor) -> SyntheticBatch:
        """Render one sample per seed (batched; same result as one call per seed)."""
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        if not seeds:
            raise ValueError("SyntheticFaceGenerator.generate: seeds is empty")
        cfg, model, device = self.config, self.face_model, self.device
        params = sample_face_params(seeds, cfg, model.n_shape, model.n_expression, model.n_albedo).to(device)
        lighting = sample_lighting(seeds, cfg)  # random draws and the SH fit stay on the CPU
        params.light = fit_sh_light(lighting).to(device)
        lighting = lighting.to(device)
        mesh = model(params)
        if cfg.extra_geometry:
            amplitudes = sample_displacement_amplitudes(seeds, self.template.cpu(), self.face_region.cpu(),
                                                        cfg.displacement_mm, cfg.displacement_bumps)
            displacement = displace(mesh.vertices, self.faces, amplitudes.to(device))
        else:
            displacement = torch.zeros_like(mesh.vertices)
        vertices = mesh.vertices + displacement
        landmarks3d = displace_landmarks(mesh.landmarks3d, mesh.vertices, displacement)
        now3d = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, displacement)
        params.camera = crop_camera(seeds, landmarks3d, cfg)

        size = self.image_size
        screen = project_weak_perspective(vertices, params.camera, size)
        fragments = rasterize(screen, self.faces, size, backend=self.backend, cull_backfaces=not cfg.mouth_interior)
        # nominal scale: the 68-landmark box (~0.15 m) spans the middle of face_fraction
        pixels_per_metre = sum(cfg.face_fraction) / 2 * size / 0.15
        scene = SceneGeometry(vertices, self.faces, fragments, self.template.to(device),
                              self.atlas, self.mouth_faces, self.jaw_weight.to(device),
                              pixels_per_metre)
        style = sample_feature_style(seeds).to(device)
        face, covered = shade_faces(scene, model.albedo(params.albedo), params.light, lighting, style, cfg)
        image = finish_image(face, covered, seeds, cfg, style.hair_colour)

        landmarks = project_weak_perspective(landmarks3d, params.camera, size)
        now = project_weak_perspective(now3d, params.camera, size)[..., :2]
        valid = _visible(landmarks, fragments.zbuf[..., 0])
        return SyntheticBatch(
            image=image, landmarks=landmarks[..., :2], landmarks_valid=valid, now_landmarks=now, mask=covered,
            params=params, vertices=vertices, displacement=displacement,
            seeds=torch.tensor(seeds, dtype=torch.long, device=device),
        )


def _stretched_faces(closed: Tensor, opened: Tensor, faces: Tensor, ratio: float = 3.0) -> Tensor:
    """(F,) bool: faces whose area grows ``ratio``-fold when the jaw opens (the skin spanning the lips)."""
    def area(v: Tensor) -> Tensor:
        c = v[faces]
        return torch.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0], dim=-1).norm(dim=-1)

    return area(opened) > ratio * area(closed).clamp(min=1e-12)


def _visible(landmarks: Tensor, zbuf: Tensor) -> Tensor:
    """(B, K) 1 where the landmark (B, K, 3 screen) is not behind the nearest surface (zbuf (B, H, W))."""
    b, h, w = zbuf.shape
    depth_map = torch.where(zbuf > 0, zbuf, torch.full_like(zbuf, float("inf")))  # background never hides
    nearest_farthest = F.max_pool2d(depth_map[:, None], 3, stride=1, padding=1)[:, 0]
    col = landmarks[..., 0].floor().long().clamp(0, w - 1)
    row = landmarks[..., 1].floor().long().clamp(0, h - 1)
    surface = nearest_farthest[torch.arange(b, device=zbuf.device)[:, None], row, col]
    return (landmarks[..., 2] <= surface + VISIBILITY_TOLERANCE_M).to(landmarks.dtype)


class SyntheticFaceDataset(Dataset):
    """On-the-fly synthetic samples of a named split: sample i has seed ``SPLIT_SEEDS[split] + seed_offset + i``.

    Yields the project's sample dict: image, landmarks, landmarks_valid, mask, index, name,
    vertices, params (FaceParams fields without batch dim), plus now_landmarks and seed.
    The face model is built lazily (in each worker) when none is given.
    """

    def __init__(self, num_samples: int, image_size: int = 64, split: str = "train", seed_offset: int = 0,
                 config: SyntheticConfig | None = None, face_model=None, backend: str = "torch"):
        if num_samples < 1:
            raise ValueError(f"SyntheticFaceDataset: num_samples must be >= 1, got {num_samples}")
        self.num_samples, self.image_size, self.split = int(num_samples), int(image_size), split
        self.seed_offset = int(seed_offset)
        sample_seed(split, self.num_samples - 1, self.seed_offset)  # validates split name and range now
        self.config = config or SyntheticConfig()
        self.backend = backend
        self._face_model = face_model
        self._generator: SyntheticFaceGenerator | None = None

    def __len__(self) -> int:
        return self.num_samples

    @property
    def generator(self) -> SyntheticFaceGenerator:
        if self._generator is None:
            model = self._face_model
            if model is None:
                from regressor.face_model import build_face_model

                model = build_face_model()
            self._generator = SyntheticFaceGenerator(model, self.image_size, self.config, self.backend)
        return self._generator

    def seed_of(self, index: int) -> int:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"SyntheticFaceDataset index {index} out of range [0, {self.num_samples})")
        return sample_seed(self.split, index, self.seed_offset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """Batched fetch (torch's DataLoader calls this with a whole batch of indices)."""
        batch = self.generator.generate([self.seed_of(int(i)) for i in indices])
        return [self._sample(batch, k, int(i)) for k, i in enumerate(indices)]

    def _sample(self, batch: SyntheticBatch, k: int, index: int) -> dict[str, Any]:
        params = {name: value[k].cpu() for name, value in batch.params.items()}
        return {
            "image": batch.image[k].cpu(), "landmarks": batch.landmarks[k].cpu(),
            "landmarks_valid": batch.landmarks_valid[k].cpu(), "mask": batch.mask[k].cpu(),
            "index": torch.tensor(index, dtype=torch.long), "name": f"{self.split}_{index:07d}",
            "vertices": batch.vertices[k].cpu(), "params": params,
            "now_landmarks": batch.now_landmarks[k].cpu(), "seed": batch.seeds[k].cpu(),
        }
