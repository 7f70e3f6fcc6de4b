"""Reconstructor: rebuilt from a Lightning checkpoint alone; clear errors for other files."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from regressor.inference import CheckpointKindError, Reconstructor
from regressor.training.regression import RegressorModule
from tests.regression_helpers import TINY_SIZE, loader, random_batch, tiny_critic_checkpoint, tiny_module_kwargs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A RegressorModule after one training step, and its checkpoint."""
    torch.manual_seed(0)
    tmp_path = tmp_path_factory.mktemp("inference")
    module = RegressorModule(**tiny_module_kwargs())
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, loader(random_batch(2)))
    path = tmp_path / "regressor.ckpt"
    trainer.save_checkpoint(path)
    return module.eval(), path


def test_reconstructor_matches_the_trained_module(trained):
    module, path = trained
    reconstructor = Reconstructor.from_checkpoint(path, device="cpu")
    images = random_batch(3, seed=5)["image"]
    result = reconstructor.predict(images, batch_size=2)
    with torch.no_grad():
        expected = module.reconstruct(images)
    assert torch.allclose(result.mesh.vertices, expected.mesh.vertices, atol=1e-6)
    assert torch.allclose(result.params.camera, expected.params.camera, atol=1e-6)
    assert result.renders.albedo_shaded.shape == (3, 3, TINY_SIZE, TINY_SIZE)
    assert result.mesh.faces.shape[1] == 3


def test_reconstructor_reads_image_files_of_any_size(trained, tmp_path):
    _, path = trained
    paths = []
    for index, size in enumerate([(64, 48), (20, 20)]):
        pixels = (torch.rand(size[1], size[0], 3) * 255).to(torch.uint8).numpy()
        paths.append(tmp_path / f"face_{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    result = Reconstructor.from_checkpoint(path).predict(paths)
    assert result.names == ["face_0", "face_1"]
    assert result.images.shape == (2, 3, TINY_SIZE, TINY_SIZE)
    assert result.params.batch_size == 2


def test_a_critic_checkpoint_is_refused_with_a_hint(tmp_path):
    critic = tiny_critic_checkpoint(tmp_path / "critic.pt")
    with pytest.raises(CheckpointKindError, match="not a RegressorModule.*ShapeCritic"):
        Reconstructor.from_checkpoint(critic)


def test_other_files_are_refused_clearly(tmp_path):
    junk = tmp_path / "notes.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointKindError, match="notes.ckpt is not a PyTorch checkpoint"):
        Reconstructor.from_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        Reconstructor.from_checkpoint(tmp_path / "missing.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, other)
    with pytest.raises(CheckpointKindError, match="not of a RegressorModule"):
        Reconstructor.from_checkpoint(other)


def test_bad_inputs_are_named(trained):
    _, path = trained
    reconstructor = Reconstructor.from_checkpoint(path)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reconstructor.predict(torch.rand(2, 1, TINY_SIZE, TINY_SIZE))
    with pytest.raises(ValueError, match="NaN"):
        reconstructor.predict(torch.full((1, 3, TINY_SIZE, TINY_SIZE), float("nan")))
