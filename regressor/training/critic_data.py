"""Data for critic training: an in-memory pool of synthetic faces with ground-truth geometry.

Why a pool: the critic's negatives are rendered on the fly (fresh types, severities and lights
every step), so the expensive part to reuse is the synthetic *image* generation. The pool is
generated once, in batches, with ``SyntheticFaceGenerator`` from the seeds
``SPLIT_SEEDS["critic_train"] + seed_offset + i`` (validation: ``"critic_val"``), and each
sample yields the standard sample dict (``image``, ``vertices``, ``params``, ``index``, ...).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from regressor.face_model.protocol import FaceModelProtocol
from regressor.synthetic.splits import SPLIT_SEEDS


def synthetic_config(synthetic: dict[str, Any] | str | None):
    """``SyntheticConfig`` of a data module's ``synthetic`` argument: overrides, a preset name, or None (defaults)."""
    from regressor.synthetic.config import SyntheticConfig

    if isinstance(synthetic, str):
        return SyntheticConfig.preset(synthetic)
    return SyntheticConfig.from_dict(synthetic or {})


class SyntheticPool(Dataset):
    """``num_samples`` synthetic faces of one split, generated once and kept in memory.

    Args:
        face_model: the FaceModel the generator uses.
        num_samples, image_size, split, seed_offset: which seeds (see module docstring).
        synthetic: ``SyntheticConfig`` keyword overrides (None = its defaults) or a preset name
            (``SyntheticConfig.preset``: ``model_only``, ``default-ambient_occlusion``, ...).
        chunk: how many faces ``generate`` renders per call.
        cache_dir: if given, the pool is saved there (keyed by seeds, size and config) and
            reloaded by later runs instead of being generated again.
    """

    def __init__(self, face_model, num_samples: int, image_size: int = 64, split: str = "critic_train",
                 seed_offset: int = 0, synthetic: dict[str, Any] | str | None = None, chunk: int = 32,
                 cache_dir: str | None = None) -> None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {split!r}; known: {sorted(SPLIT_SEEDS)}")
        config = synthetic_config(synthetic)  # a misspelled key or preset fails before any generation
        self.seeds = [SPLIT_SEEDS[split] + seed_offset + i for i in range(num_samples)]
        # keyed by the resolved config: a preset and its spelled-out overrides share one pool
        key = json.dumps([split, seed_offset, num_samples, image_size, config.to_dict(), _fingerprint(face_model)],
                         sort_keys=True)
        path = Path(cache_dir) / f"pool_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt" if cache_dir else None
        if path is not None and path.is_file():
            stored = torch.load(path, weights_only=True)
            self.images, self.vertices, self.params = stored["images"], stored["vertices"], stored["params"]
            return
        self._generate(face_model, image_size, config, chunk)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"images": self.images, "vertices": self.vertices, "params": self.params, "key": key}, tmp)
            os.replace(tmp, path)

    def _generate(self, face_model, image_size: int, config, chunk: int) -> None:
        from regressor.synthetic.generator import SyntheticFaceGenerator

        num_samples = len(self.seeds)
        generator = SyntheticFaceGenerator(face_model, image_size, config)
        images, vertices, params = [], [], []
        with torch.no_grad():
            for i in range(0, num_samples, chunk):
                batch = generator.generate(self.seeds[i:i + chunk])
                images.append(batch.image.float().cpu())
                vertices.append(batch.vertices.float().cpu())
                params.append(batch.params.detach().to("cpu"))
        self.images = torch.cat(images)
        self.vertices = torch.cat(vertices)
        p0 = params[0]
        self.params = {f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields(p0)}

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index],
            "vertices": self.vertices[index],
            "params": {k: v[index] for k, v in self.params.items()},
            "index": torch.tensor(self.seeds[index]),
        }


def _fingerprint(face_model) -> str:
    """Hash of the face model's geometry and of the synthetic-data sources: a cached pool is reused
    only while both are unchanged (a changed model would make its ground truth wrong)."""
    digest = hashlib.sha1()
    for name in ("v_template", "shapedirs", "faces"):
        digest.update(getattr(face_model, name).detach().cpu().contiguous().numpy().tobytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        if not source.name.startswith("critic_"):
            digest.update(source.read_bytes())
    return digest.hexdigest()


class CriticDataModule(pl.LightningDataModule):
    """Train/val pools of synthetic faces for ``CriticModule``.

    Args:
        train_samples / val_samples: pool sizes (seeds from ``critic_train`` / ``critic_val``).
        image_size: synthetic image size (px); the critic resizes to its own size.
        batch_size: faces per step (each brings 1 + num_negatives candidates).
        val_batch_size: faces per validation batch (None = ``batch_size``); the critic's per-validation figures
            (``val_gate_faces``, ``val_gradient_faces``) are computed on the first batch.
        synthetic: ``SyntheticConfig`` overrides, e.g. ``{extra_geometry: true}``, or a preset name
            (``SyntheticConfig.preset``), e.g. ``model_only``.
        face_model: the face model of the synthetic faces (default: the built-in stand-in); the CLI
            links the config's top-level ``face_model`` here and into the critic module.
        cache_dir: where generated pools are kept between runs (None = regenerate every run).
        fresh_faces: train on a new face at every sample instead of a pool (``train_samples`` is then
            ignored): faces are rendered on the fly in order from the ``critic_train`` seed range, starting
            after the ones earlier steps used, so a resumed run never sees a face twice. Why: a critic
            trained for its gradient memorises a pool of a few hundred faces within minutes.
    """

    def __init__(self, train_samples: int = 2048, val_samples: int = 128, image_size: int = 64,
                 batch_size: int = 16, seed_offset: int = 0, synthetic: dict[str, Any] | str | None = None,
                 face_model: Optional[FaceModelProtocol] = None, num_workers: int = 0,
                 cache_dir: str | None = "outputs/critic_pool_cache", fresh_faces: bool = False,
                 val_batch_size: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["face_model"])
        self.face_model = face_model
        self.train_pool: SyntheticPool | None = None
        self.val_pool: SyntheticPool | None = None

    def setup(self, stage: str | None = None) -> None:
        from regressor.face_model import build_face_model

        hp = self.hparams
        if self.train_pool is not None:
            return
        face_model = self.face_model if self.face_model is not None else build_face_model()
        common = dict(image_size=hp.image_size, seed_offset=hp.seed_offset, synthetic=hp.synthetic,
                      cache_dir=hp.cache_dir)
        if stage in (None, "fit"):
            if hp.fresh_faces:
                from regressor.synthetic.generator import SyntheticFaceDataset
                from regressor.synthetic.splits import SPLIT_STRIDE

                self.train_pool = SyntheticFaceDataset(SPLIT_STRIDE - hp.seed_offset, hp.image_size, "critic_train",
                                                       hp.seed_offset, synthetic_config(hp.synthetic), face_model)
            else:
                self.train_pool = SyntheticPool(face_model, hp.train_samples, split="critic_train", **common)
        self.val_pool = SyntheticPool(face_model, hp.val_samples, split="critic_val", **common)

    def train_dataloader(self) -> DataLoader:
        if self.hparams.fresh_faces:  # in order, from the first face no earlier step used (resumed runs too)
            trainer = getattr(self, "trainer", None)
            first = (trainer.global_step if trainer is not None else 0) * self.hparams.batch_size
            return DataLoader(self.train_pool, batch_size=self.hparams.batch_size, drop_last=True,
                              sampler=range(first, len(self.train_pool)), num_workers=self.hparams.num_workers)
        return DataLoader(self.train_pool, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_pool, batch_size=self.hparams.val_batch_size or self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers)
