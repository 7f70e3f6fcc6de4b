"""``pool``: a pre-rendered, memory-mapped ``FacePool`` (``regressor synth --pool``), training only."""
from __future__ import annotations

from regressor.synthetic.pool import FacePool
from regressor.training.sources import DataSource, register_data_source


@register_data_source("pool")
class PoolSource(DataSource):
    stages = ("train",)

    def check(self, data, stage: str) -> None:
        if not data.hparams.pool_dir:
            raise ValueError("FaceDataModule: train_source pool needs pool_dir (a pool folder, regressor synth --pool), "
                             "got none")

    def build(self, data, stage: str) -> FacePool:
        folder = data.hparams.pool_dir
        pool = FacePool(folder)
        if pool.image_size != data.image_size:
            raise ValueError(f"FaceDataModule: pool {folder} holds {pool.image_size} px images but image_size is "
                             f"{data.image_size}; render a pool at that size or change image_size")
        rendered_with = pool.manifest.get("face_model", "builtin")
        configured = getattr(data.face_model, "init_args", {}).get("model_path") if data.face_model is not None else None
        if str(configured or "builtin") != str(rendered_with):
            raise ValueError(f"FaceDataModule: pool {folder} was rendered with face model {rendered_with!r} but the "
                             f"config's face model is {configured or 'builtin'!r}; render the pool with "
                             "`regressor synth --pool --face-model ...` or use train_source: synthetic")
        return pool
