"""Callbacks: atomic checkpoint writes, TensorBoard image grids, the prediction writer."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from callbacks.atomic_checkpoint import AtomicCheckpointIO, atomic_torch_save
from callbacks.image_grid import PANELS_PER_SAMPLE, ImageGridLogger
from callbacks.prediction_writer import MeshPredictionWriter
from regressor.io.reconstruction import write_reconstruction
from regressor.training.regression import RegressorModule
from tests.regression_helpers import TINY_SIZE, loader, random_batch, tiny_module_kwargs


def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temp file may be left behind"
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert torch.load(target, weights_only=True) == {"step": 3}


def test_image_grid_has_five_panels_per_sample_and_reaches_tensorboard(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs())
    grid_logger = ImageGridLogger(every_n_steps=1, max_images=2, save_dir=str(tmp_path / "png"))
    grid = grid_logger.grid(module, random_batch(3))
    padding = 2
    assert grid.shape == (3, 2 * (TINY_SIZE + padding) + padding, PANELS_PER_SAMPLE * (TINY_SIZE + padding) + padding)
    assert module.training, "the grid must restore the module's train mode"

    tb = pl.loggers.TensorBoardLogger(tmp_path / "tb", name="run")
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=tb, callbacks=[grid_logger], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, loader(random_batch(4)), loader(random_batch(2, seed=1)))
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    accumulator.Reload()
    assert {"train/reconstruction", "val/reconstruction"} <= set(accumulator.Tags()["images"])
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert "train_reconstruction_step0000001.png" in pngs and "val_reconstruction_step0000002.png" in pngs


def test_prediction_writer_writes_obj_npz_and_overlay_per_input(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs()).eval()
    batch = random_batch(2)
    batch["name"] = ["faces/alice.jpg", "bob smith.png"]
    result = module.predict_step(batch, 0)
    write_reconstruction(result, tmp_path)
    for stem in ("alice", "bob_smith"):
        obj = (tmp_path / f"{stem}.obj").read_text()
        assert obj.count("\nv ") + obj.startswith("v ") == result.mesh.vertices.shape[1]
        assert obj.count("\nf ") == result.mesh.faces.shape[0]
        params = np.load(tmp_path / f"{stem}.npz")
        assert params["shape"].shape == (10,) and params["light"].shape == (9, 3)
        assert Image.open(tmp_path / f"{stem}_render.png").size == (TINY_SIZE, TINY_SIZE)

    writer = MeshPredictionWriter(output_dir=str(tmp_path / "trainer"))
    trainer = pl.Trainer(accelerator="cpu", callbacks=[writer], logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, loader(random_batch(3)), return_predictions=False)
    written = sorted(p.name for p in (tmp_path / "trainer").iterdir())
    assert len([n for n in written if n.endswith(".obj")]) == 3
    assert len([n for n in written if n.endswith("_render.png")]) == 3
