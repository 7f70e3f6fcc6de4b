"""``mixed``: synthetic faces and a photo folder, drawn by ``mix_weights`` (training only)."""
from __future__ import annotations

from regressor.data.mixing import MixedFaceDataset
from regressor.training.sources import DataSource, register_data_source
from regressor.training.sources.folder import FolderSource
from regressor.training.sources.synthetic import SyntheticSource


@register_data_source("mixed")
class MixedSource(DataSource):
    stages = ("train",)

    def check(self, data, stage: str) -> None:
        FolderSource().check(data, stage)
        weights = data.hparams.mix_weights
        if weights is not None and set(weights) != {"synthetic", "folder"}:
            raise ValueError(f"mix_weights must have keys 'synthetic' and 'folder', got {sorted(weights)}")

    def build(self, data, stage: str) -> MixedFaceDataset:
        return MixedFaceDataset({"synthetic": SyntheticSource().build(data, stage),
                                 "folder": FolderSource().build(data, stage)})
