"""``synthetic``: on-the-fly faces of the configured face model, seeds of the stage's split."""
from __future__ import annotations

from regressor.synthetic.generator import SyntheticFaceDataset
from regressor.training.sources import DataSource, register_data_source


@register_data_source("synthetic")
class SyntheticSource(DataSource):
    def build(self, data, stage: str) -> SyntheticFaceDataset:
        h = data.hparams
        offset = h.synthetic_seed_offset if stage == "train" else 0
        return SyntheticFaceDataset(h[f"synthetic_{stage}_samples"], data.image_size, split=stage, seed_offset=offset,
                                    config=h.synthetic_config, face_model=data.face_model)
