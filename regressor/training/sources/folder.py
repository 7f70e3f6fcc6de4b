"""``folder``: photos with landmark files (``FaceFolderDataset``), augmented for training."""
from __future__ import annotations

from regressor.data.folder import FaceFolderDataset
from regressor.data.transforms import build_train_transform
from regressor.training.sources import DataSource, register_data_source


@register_data_source("folder")
class FolderSource(DataSource):
    def check(self, data, stage: str) -> None:
        if not data.hparams[f"{stage}_dir"]:
            raise ValueError(f"FaceDataModule: {stage}_source folder needs {stage}_dir (a face folder), got none")

    def build(self, data, stage: str) -> FaceFolderDataset:
        h = data.hparams
        root = h[f"{stage}_dir"]
        return FaceFolderDataset(
            root, image_size=data.image_size, split=stage, landmarks_dir=h.landmarks_dir, strict=h.strict,
            augment=build_train_transform(data.image_size) if (stage == "train" and h.augment) else None,
            crop_scale=h.crop_scale, crop_shift_y=h.crop_shift_y, crop_jitter=h.crop_jitter,
            crop_scale_jitter=h.crop_scale_jitter, landmark_provider=data.landmark_provider(root),
        )
