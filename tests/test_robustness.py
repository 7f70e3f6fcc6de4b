"""Robustness under faults: kill -9 and resume, extreme numbers, untrusted files, determinism.

Covered elsewhere (not repeated here): atomic checkpoint writes interrupted by an exception
(``test_callbacks``), data folders with 10% bad files (``test_data_folder``, ``test_datamodule``),
a NaN loss named and skipped or stopping the run (``test_regression_module``), malicious
critic / FLAME / embedding pickles (``test_critic_checkpoint``, ``test_flame_files``).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from benchmarks.kill_resume import (
    fit_and_kill, optimizer_steps, tiny_fit_config, unreadable_checkpoints,
)
from tests.face_folder_fixtures import make_face_folder
from tests.regression_helpers import TINY_SIZE, tiny_critic_checkpoint, tiny_module_kwargs


# ----------------------------------------------------------------------------- kill and resume
@pytest.mark.slow
def test_fit_killed_with_sigkill_resumes_from_last_to_the_same_number_of_optimizer_steps(tmp_path):
    from regressor.cli import main

    max_steps = 10
    make_face_folder(tmp_path / "faces", count=12, height=64, width=64)
    config = tiny_fit_config(tmp_path, max_steps=max_steps, train_dir=tmp_path / "faces")
    checkpoints = tmp_path / "checkpoints"
    killed_at = fit_and_kill(config, checkpoints, kill_after_step=4)
    assert 4 <= killed_at < max_steps
    assert unreadable_checkpoints(checkpoints) == [], "a kill -9 left a checkpoint that does not load"

    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 0
    assert unreadable_checkpoints(checkpoints) == []
    final = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    skipped = int(final.get("skipped_steps", 0))
    # An uninterrupted run makes exactly max_steps optimizer steps (minus NaN-skipped ones).
    assert final["global_step"] == max_steps
    assert optimizer_steps(final) == [max_steps - skipped]
    # The resumed run kept writing the periodic checkpoints where the killed one left off.
    assert (checkpoints / f"regressor-step={max_steps}.ckpt").is_file()


# ----------------------------------------------------------------------------- numerical faults
@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from regressor.face_model import build_face_model
    from regressor.losses import LossStack
    from regressor.render import Renderer

    critic = tiny_critic_checkpoint(tmp_path_factory.mktemp("critic") / "critic.pt")
    model = build_face_model(n_shape=10, n_expression=5, n_albedo=4)
    renderer = Renderer(image_size=TINY_SIZE, backend="torch")
    stack = LossStack([
        {"name": "photometric", "weight": 1.0}, {"name": "landmarks", "weight": 1.0},
        {"name": "regularizers", "weight": 1.0}, {"name": "vertices", "weight": 1.0},
        {"name": "perceptual_shape", "weight": 1.0, "checkpoint": str(critic), "warmup_steps": 0},
    ])
    return model, renderer, stack


def _extreme(params, case: str):
    p = {name: value.clone() for name, value in params.items()}
    if case == "huge_coefficients":
        p["shape"].fill_(1e4), p["expression"].fill_(-1e4), p["albedo"].fill_(1e4)
    elif case == "huge_rotations":
        p["global_pose"].fill_(1e3), p["jaw_pose"].fill_(-1e3), p["neck_pose"].fill_(1e3)
    elif case == "zero_scale_camera":  # every vertex projects onto one point: only degenerate triangles
        p["camera"][:, 0] = 0.0
    elif case == "tiny_face":
        p["camera"][:, 0] = 1e-6
    elif case == "face_fills_far_more_than_the_image":
        p["camera"][:, 0] = 1e4
    elif case == "face_off_screen":  # empty render: no pixel covered
        p["camera"][:, 1:] = 1e3
    elif case == "mirrored_camera":
        p["camera"][:, 0] = -8.0
    elif case == "black_light":
        p["light"].zero_()
    elif case == "huge_light":
        p["light"].fill_(1e6)
    return type(params)(**p)


@pytest.mark.parametrize("case", [
    "huge_coefficients", "huge_rotations", "zero_scale_camera", "tiny_face", "face_fills_far_more_than_the_image",
    "face_off_screen", "mirrored_camera", "black_light", "huge_light",
])
def test_extreme_parameters_and_degenerate_renders_give_finite_losses_and_gradients(scene, case):
    from regressor.types import FaceBatch, LossInputs

    model, renderer, stack = scene
    torch.manual_seed(0)
    base = model.zero_params(2)
    params = _extreme({name: value for name, value in base.items()}, case)
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in params.items()}
    params = type(base)(**leaves)
    mesh = model(params)
    renders = renderer(mesh, params.camera, albedo=model.albedo(params.albedo), light=params.light)
    batch = FaceBatch(
        image=torch.rand(2, 3, TINY_SIZE, TINY_SIZE), landmarks=torch.rand(2, 68, 2) * TINY_SIZE,
        landmarks_valid=torch.ones(2, 68), mask=torch.ones(2, 1, TINY_SIZE, TINY_SIZE),
        vertices=model(model.zero_params(2)).vertices.detach(),
    )
    losses = stack(LossInputs(batch=batch, params=params, mesh=mesh, renders=renders, step=100))
    for name, value in losses.items():
        assert torch.isfinite(value), f"{case}: loss term {name} is {value}"
    losses["total"].backward()
    for name, leaf in leaves.items():
        assert leaf.grad is None or torch.isfinite(leaf.grad).all(), f"{case}: gradient of {name} is not finite"


# ----------------------------------------------------------------------------- untrusted files
class _RunsCode:
    """Pickles into a call of ``pathlib.Path.touch(marker)``: proof that unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _poisoned_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hyper_parameters": {}, "payload": _RunsCode(marker)}, path)
    return path


def test_reconstructor_refuses_a_checkpoint_that_would_run_code(tmp_path):
    from regressor.inference import CheckpointKindError, Reconstructor

    marker = tmp_path / "pwned"
    path = _poisoned_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointKindError, match="evil.ckpt"):
        Reconstructor.from_checkpoint(path)
    assert not marker.exists()


def test_resuming_training_refuses_a_checkpoint_that_would_run_code(tmp_path):
    """Lightning reads ``--ckpt_path`` through the checkpoint IO plugin of our configs."""
    from callbacks.atomic_checkpoint import AtomicCheckpointIO

    marker = tmp_path / "pwned"
    path = _poisoned_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_encoder_weights_that_would_run_code_are_refused(tmp_path):
    from regressor.models.encoder import EncoderWeightsError, FaceEncoder

    marker = tmp_path / "pwned"
    path = tmp_path / "backbone.pt"
    torch.save({"weights": _RunsCode(marker)}, path)
    with pytest.raises(EncoderWeightsError, match="backbone.pt"):
        FaceEncoder(backbone="mobilenetv3_small_050", n_shape=4, n_expression=2, n_albedo=2, weights_path=str(path))
    assert not marker.exists()


def test_a_landmark_npy_holding_a_pickle_is_refused(tmp_path):
    from regressor.data.landmarks_io import LandmarkFileError, load_landmarks

    marker = tmp_path / "pwned"
    path = tmp_path / "face.npy"
    np.save(path, np.array([_RunsCode(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(LandmarkFileError, match="face.npy"):
        load_landmarks(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- determinism
class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]) if outputs is not None else float("nan"))


def _first_losses(steps: int, seed: int, folder: Path) -> list[float]:
    from regressor.training.datamodule import FaceDataModule
    from regressor.training.regression import RegressorModule

    pl.seed_everything(seed, verbose=False)
    module = RegressorModule(**tiny_module_kwargs(scheduler="cosine"))
    # A face folder (random crops, jitter and augmentation, seeded): cheaper than synthetic
    # rendering, whose per-seed determinism tests/test_synthetic_data.py covers.
    data = FaceDataModule(image_size=TINY_SIZE, batch_size=2, num_workers=0, train_source="folder",
                          train_dir=str(folder), val_source="none", test_source="none")
    recorder = _LossRecorder()
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )
    trainer.fit(module, datamodule=data)
    return recorder.losses


@pytest.mark.slow
def test_same_seed_and_config_give_identical_losses_for_the_first_20_steps_on_cpu(tmp_path):
    make_face_folder(tmp_path, count=12, height=64, width=64)
    first, second = _first_losses(20, 0, tmp_path), _first_losses(20, 0, tmp_path)
    assert len(first) == 20
    assert first == second
    assert _first_losses(2, 1, tmp_path) != first[:2], "a different seed must change the run"
