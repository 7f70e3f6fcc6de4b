"""``FaceDataModule``: every data source of the project behind one LightningDataModule.

Configured from yaml by LightningCLI (plain typed arguments), e.g.::

    data:
      class_path: regressor.training.datamodule.FaceDataModule
      init_args: {train_source: mixed, train_dir: my_faces/, mix_weights: {synthetic: 0.7, folder: 0.3}}

Each stage's samples come from a registered data source (``regressor/training/sources/``, one
file each; a new dataset is one new file there):

* train: ``synthetic`` (on-the-fly ``SyntheticFaceDataset``, split ``train``), ``pool`` (a
  pre-rendered, memory-mapped ``FacePool`` written by ``regressor synth --pool``), ``folder``
  (``FaceFolderDataset`` with augmentation) or ``mixed`` (both, drawn by ``mix_weights``).
* val / test: synthetic held-out splits (``val`` / ``test`` seed ranges) or a folder; ``none``
  disables the loader.
* predict: a plain image folder (``PredictImageDataset``), no landmarks needed.

Synthetic faces are made with ``face_model``: the config's one face model (linked by the CLI into
the data module, the model and the critic), so a FLAME-configured regressor trains and is
evaluated on FLAME faces.

Skipped files are reported by ``skip_report()``: logged once the datasets are built, and
again (with what the loaders found while decoding) at teardown.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from regressor.data.folder import FaceFolderDataset
from regressor.data.mixing import MixedFaceDataset, weighted_source_sampler
from regressor.data.predict_folder import PredictImageDataset, collate_skipping_unreadable
from regressor.face_model.protocol import FaceModelProtocol
from regressor.synthetic.config import SyntheticConfig
from regressor.training.sources import data_source


class FaceDataModule(pl.LightningDataModule):
    """Data for the regressor (see module doc).

    Args:
        image_size: side of every sample image, pixels (linked to the model's by the CLI).
        batch_size: training batch size; ``eval_batch_size`` (default: the same) for the rest.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seeds the training shuffle / mix draw (augmentation follows ``seed_everything``).
        face_model: the face model of synthetic samples (default: the built-in stand-in); the CLI
            links the config's top-level ``face_model`` here.
        train_source, val_source, test_source: registered data source of each stage (see module doc).
        source_args: per-source settings of sources added by users, ``{source_name: {...}}``.
        synthetic_*_samples: sizes of the synthetic splits; ``synthetic_seed_offset`` shifts
            the training seed range (held-out ranges are never used for training).
        synthetic_config: appearance / pose distributions of the synthetic faces.
        pool_dir: the pool folder for ``train_source: pool``; its image size must equal ``image_size``.
        train_dir, val_dir, test_dir: face folders (``regressor.data.folder_scan`` layout);
            ``val_dir``/``test_dir`` use ``splits/val.txt``/``splits/test.txt`` when present.
        predict_dir: plain images for ``predict``; ``predict_boxes`` an optional JSON of boxes.
        landmarks_dir: extra folder searched first for landmark files.
        strict: stop at the first bad file (naming it) instead of skipping and counting.
        augment: keypoint-aware augmentation of training folder crops.
        crop_scale, crop_shift_y, crop_jitter, crop_scale_jitter: face crop from landmarks; the
            defaults match the synthetic framing (see ``FaceFolderDataset``).
        mix_weights: ``{"synthetic": w, "folder": w}`` for ``train_source: mixed``.
        samples_per_epoch: draws per training epoch (default: size of the training set).
        detect_landmarks: for folder images without landmark files, detect them offline with
            ``regressor.detect`` (needs ``pip install -e .[detect]``; ``None``, the default, detects
            for ``predict`` photos when the detector is installed and warns when it is not, while
            training folders then need landmark files), cached in
            ``landmark_cache_dir`` (default ``<folder>/landmarks_detected``).
    """

    def __init__(
        self,
        image_size: int = 64,
        batch_size: int = 16,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: int = 0,
        face_model: Optional[FaceModelProtocol] = None,
        train_source: str = "synthetic",
        val_source: str = "synthetic",
        test_source: str = "synthetic",
        source_args: Optional[dict[str, dict[str, Any]]] = None,
        synthetic_train_samples: int = 100_000,
        synthetic_val_samples: int = 256,
        synthetic_test_samples: int = 256,
        synthetic_seed_offset: int = 0,
        synthetic_config: Optional[SyntheticConfig] = None,
        pool_dir: Optional[str] = None,
        train_dir: Optional[str] = None,
        val_dir: Optional[str] = None,
        test_dir: Optional[str] = None,
        predict_dir: Optional[str] = None,
        predict_boxes: Optional[str] = None,
        landmarks_dir: Optional[str] = None,
        strict: bool = False,
        augment: bool = True,
        crop_scale: float = 1.6,
        crop_shift_y: float = -0.04,
        crop_jitter: float = 0.04,
        crop_scale_jitter: float = 0.12,
        mix_weights: Optional[dict[str, float]] = None,
        samples_per_epoch: Optional[int] = None,
        detect_landmarks: Optional[bool] = None,
        landmark_cache_dir: Optional[str] = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["face_model"])
        self.face_model = face_model
        self.image_size = int(image_size)
        self._check_config()
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ configuration
    def _check_config(self) -> None:
        h = self.hparams
        for stage in ("train", "val", "test"):
            data_source(h[f"{stage}_source"], stage).check(self, stage)
        for stage in ("val", "test"):
            folder = h[f"{stage}_dir"]
            if h[f"{stage}_source"] == "folder" and h.train_source in ("folder", "mixed") and folder and h.train_dir \
                    and Path(folder).resolve() == Path(h.train_dir).resolve() \
                    and not (Path(folder) / "splits" / f"{stage}.txt").is_file():
                rank_zero_warn(f"FaceDataModule: {stage}_dir is the training folder and it has no splits/{stage}.txt, "
                               f"so {stage} metrics are measured on training images")

    def landmark_provider(self, folder: str, predicting: bool = False):
        """Offline landmark detection for ``folder``'s images without landmark files, or None (see ``detect_landmarks``)."""
        if self.hparams.detect_landmarks is False or (self.hparams.detect_landmarks is None and not predicting):
            return None
        from regressor.detect import detector_available

        if self.hparams.detect_landmarks is None and not detector_available():
            rank_zero_warn("FaceDataModule: the offline landmark detector is not installed (`make detect`), so "
                           f"images in {folder} without landmark files are centre-cropped; set "
                           "detect_landmarks: false to silence this")
            return None
        from regressor.detect.provider import landmarks_for_image

        cache = self.hparams.landmark_cache_dir or str(Path(folder) / "landmarks_detected")
        return functools.partial(landmarks_for_image, cache_dir=cache)

    def _build(self, stage: str) -> Dataset | None:
        h = self.hparams
        if stage in ("train", "val", "test"):
            return data_source(h[f"{stage}_source"], stage).build(self, stage)
        if stage == "predict":
            if not h.predict_dir:
                raise ValueError("FaceDataModule: predict needs predict_dir (a folder of images)")
            provider = self.landmark_provider(h.predict_dir, predicting=True)
            return PredictImageDataset(h.predict_dir, self.image_size, landmarks_dir=h.landmarks_dir,
                                       boxes=h.predict_boxes, crop_scale=h.crop_scale,
                                       crop_shift_y=h.crop_shift_y, landmark_provider=provider)
        raise ValueError(f"unknown stage {stage!r}")

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",),
                  None: ("train", "val", "test")}[stage]
        for name in wanted:
            if name not in self.datasets:
                self.datasets[name] = self._build(name)
        report = self.skip_report()
        if report:
            rank_zero_info(report)

    # ------------------------------------------------------------------ reporting
    def _folder_datasets(self) -> dict[str, Any]:
        found = {}
        for stage, dataset in self.datasets.items():
            if isinstance(dataset, MixedFaceDataset):
                dataset = dataset.sources[dataset.names.index("folder")]
            if isinstance(dataset, (FaceFolderDataset, PredictImageDataset)):
                found[stage] = dataset
        return found

    def skip_counts(self) -> dict[str, dict[str, int]]:
        """Skipped files by stage and reason, including those found by loader workers."""
        counts = {}
        for stage, dataset in self._folder_datasets().items():
            counter = dataset.skipped if isinstance(dataset, FaceFolderDataset) else dataset.total_skipped
            counts[stage] = dict(counter)
        return counts

    def skip_report(self) -> str:
        return "\n".join(dataset.skip_report() for dataset in self._folder_datasets().values())

    def teardown(self, stage: Optional[str] = None) -> None:
        """Report skipped files at the end of a run: a warning, and ``data/skipped/<stage>/<reason>``
        (plus ``.../total``) to the trainer's loggers, so the counts live next to the losses."""
        counts = self.skip_counts()
        if any(sum(c.values()) for c in counts.values()):
            rank_zero_warn(self.skip_report())
        predicting = self.datasets.get("predict")
        if stage in ("predict", None) and isinstance(predicting, PredictImageDataset) and predicting.detection_report():
            rank_zero_warn(predicting.detection_report())  # one line for every image without a detected face
        trainer = getattr(self, "trainer", None)
        if trainer is None or not counts or trainer.global_rank != 0:
            return
        metrics = {}
        for split, by_reason in counts.items():
            metrics[f"data/skipped/{split}/total"] = float(sum(by_reason.values()))
            metrics.update({f"data/skipped/{split}/{reason}": float(n) for reason, n in by_reason.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
        h = self.hparams
        return DataLoader(dataset, batch_size=batch_size, num_workers=h.num_workers, pin_memory=h.pin_memory,
                          persistent_workers=h.persistent_workers and h.num_workers > 0, **kwargs)

    def _dataset(self, name: str) -> Dataset | None:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[name])
        return self.datasets.get(name)

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        dataset = self._dataset("train")
        num_samples = h.samples_per_epoch or len(dataset)
        generator = torch.Generator().manual_seed(h.seed)
        if isinstance(dataset, MixedFaceDataset):
            weights = h.mix_weights or {"synthetic": 0.5, "folder": 0.5}
            sampler = weighted_source_sampler(dataset, dict(weights), num_samples, h.seed)
        else:
            sampler = RandomSampler(dataset, num_samples=num_samples, replacement=h.samples_per_epoch is not None
                                    and h.samples_per_epoch > len(dataset), generator=generator)
        return self._loader(dataset, h.batch_size, sampler=sampler, drop_last=len(dataset) >= h.batch_size)

    def _eval_loader(self, name: str):
        dataset = self._dataset(name)
        if dataset is None:
            return []
        return self._loader(dataset, self.hparams.eval_batch_size or self.hparams.batch_size, shuffle=False)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        dataset = self._dataset("predict")
        return self._loader(dataset, self.hparams.eval_batch_size or self.hparams.batch_size, shuffle=False,
                            collate_fn=collate_skipping_unreadable)
