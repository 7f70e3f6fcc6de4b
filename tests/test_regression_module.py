"""RegressorModule: logging, metrics, non-finite losses, the frozen critic."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from regressor.losses import NonFiniteLossError
from regressor.evaluation.metrics import vertex_errors_mm
from regressor.training.regression import RegressorModule
from regressor.types import FaceBatch
from tests.regression_helpers import critic_checkpoint, loader, random_batch, tiny_module_kwargs


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def _encoder_state(module: RegressorModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.pipeline.encoder.state_dict().items()}


def test_training_logs_every_loss_term_and_the_total(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs())
    trainer = _trainer(tmp_path)
    trainer.fit(module, loader(random_batch(4)))
    logged = set(trainer.callback_metrics)
    assert {"loss/photometric", "loss/landmarks", "loss/regularizers", "loss/total"} <= logged
    terms = sum(float(trainer.callback_metrics[f"loss/{n}"]) for n in ("photometric", "landmarks", "regularizers"))
    assert float(trainer.callback_metrics["loss/total"]) == pytest.approx(terms, rel=1e-5)


def test_vertex_error_is_zero_for_the_truth_and_alignment_removes_a_shift():
    torch.manual_seed(0)
    truth = torch.randn(2, 50, 3) * 0.05
    raw, aligned = vertex_errors_mm(truth, truth)
    assert raw.abs().max() < 1e-4 and aligned.abs().max() < 1e-2
    shifted = truth + torch.tensor([0.001, 0.0, 0.0])  # 1 mm along x
    raw, aligned = vertex_errors_mm(shifted, truth)
    assert raw == pytest.approx(torch.ones(2), abs=1e-4)
    assert aligned.max() < 1e-2


def test_validation_reports_vertex_and_landmark_errors_against_ground_truth(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs()).eval()
    batch = random_batch(2)
    with torch.no_grad():
        predicted = module.reconstruct(batch["image"])
    # Ground truth = the model's own prediction, landmarks = its own projection: errors must be ~0.
    batch["vertices"] = predicted.mesh.vertices.clone()
    batch["landmarks"] = predicted.renders.landmarks2d.clone()
    metrics = module.evaluation_metrics(FaceBatch.from_dict(batch), predicted)
    assert metrics["vertex_error_mm"].max() < 1e-3
    assert metrics["landmark_error_px"].max() < 1e-3
    # One millimetre of offset shows up unaligned only.
    batch["vertices"] = predicted.mesh.vertices + torch.tensor([0.0, 0.001, 0.0])
    metrics = module.evaluation_metrics(FaceBatch.from_dict(batch), predicted)
    assert metrics["vertex_error_mm"] == pytest.approx(torch.ones(2), abs=1e-3)
    assert metrics["vertex_error_aligned_mm"].max() < 0.05

    trainer = _trainer(tmp_path)
    trainer.validate(module, loader(batch))
    assert float(trainer.callback_metrics["val/vertex_error_mm"]) == pytest.approx(1.0, abs=1e-3)
    assert "val/landmark_error_px" in trainer.callback_metrics and "val/loss/total" in trainer.callback_metrics


def test_non_finite_loss_skips_the_step_and_names_the_term(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs(nan_policy="skip"))
    batch = random_batch(2)
    batch["image"][0, :, 3, 3] = float("nan")
    before = _encoder_state(module)
    trainer = _trainer(tmp_path, max_steps=2, limit_train_batches=1, max_epochs=2)
    with pytest.warns(RuntimeWarning, match="loss term 'photometric' is nan"):
        trainer.fit(module, loader(batch))
    assert module.skipped_steps == 2
    after = module.pipeline.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step must not update the weights"


def test_non_finite_loss_stops_training_when_configured(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs(nan_policy="stop"))
    batch = random_batch(2)
    batch["landmarks"][1, 5, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="loss term 'landmarks' is"):
        _trainer(tmp_path).fit(module, loader(batch))


def test_critic_is_frozen_out_of_the_optimizer_and_out_of_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    critic_path = critic_checkpoint(tmp_path)
    losses = [
        {"name": "photometric", "weight": 1.0},
        {"name": "perceptual_shape", "weight": 1.0, "checkpoint": str(critic_path), "warmup_steps": 1},
    ]
    module = RegressorModule(**tiny_module_kwargs(losses=losses))
    critic = module.loss_stack.terms["perceptual_shape"].critic
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    encoder_before = _encoder_state(module)
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(module, loader(random_batch(2)), loader(random_batch(2, seed=1)))

    assert not critic.training
    assert all(torch.equal(critic_before[k], v) for k, v in critic.state_dict().items())
    assert any(not torch.equal(encoder_before[k], v) for k, v in module.pipeline.encoder.state_dict().items())
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in critic.parameters())
    assert not any("critic" in key for key in module.state_dict())
    assert float(trainer.callback_metrics["loss/perceptual_shape"]) != 0.0  # active after warm-up
    assert "val/critic_score" in trainer.callback_metrics


def test_predict_step_returns_params_mesh_and_renders_with_names():
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs()).eval()
    batch = random_batch(2)
    batch["name"] = ["a.png", "b.png"]
    result = module.predict_step(batch, 0)
    assert result.params.shape.shape == (2, 10)
    assert result.mesh.vertices.shape[0] == 2 and result.renders.shaded.shape == (2, 1, 32, 32)
    assert result.names == ["a.png", "b.png"]


def test_wrong_image_size_is_a_clear_error():
    module = RegressorModule(**tiny_module_kwargs())
    with pytest.raises(ValueError, match="expected 32x32 images"):
        module.reconstruct(torch.rand(1, 3, 48, 48))


def test_ground_truth_of_another_topology_skips_vertex_metrics_with_a_warning():
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs()).eval()
    batch = random_batch(2)
    with torch.no_grad():
        predicted = module.reconstruct(batch["image"])
    batch["vertices"] = torch.zeros(2, 10, 3)
    with pytest.warns(RuntimeWarning, match="need the same topology"):
        metrics = module.evaluation_metrics(FaceBatch.from_dict(batch), predicted)
    assert "vertex_error_mm" not in metrics and "landmark_error_px" in metrics


def test_geometry_warmup_holds_shape_expression_and_jaw_at_the_mean_face_then_releases_them(tmp_path):
    """The first ``geometry_warmup_steps`` train pose/camera/appearance only; then the geometry heads learn."""
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs(geometry_warmup_steps=2, lr=1e-2))
    heads = module.pipeline.encoder.heads
    geometry = ("shape", "expression", "jaw_pose")
    start = {name: [p.detach().clone() for p in heads[name].parameters()] for name in (*geometry, "camera")}
    _trainer(tmp_path, max_steps=2).fit(module, loader(random_batch(4)))
    for name in geometry:  # in the warm-up: the output layer is untouched (zero), so the prediction is the mean face
        assert torch.equal(heads[name][-1].weight, start[name][-2]) and torch.equal(heads[name][-1].bias, start[name][-1]), name
    with torch.no_grad():
        params = module.eval().reconstruct(random_batch(2)["image"]).params
    assert params.shape.abs().max() == 0 and params.expression.abs().max() == 0 and params.jaw_pose.abs().max() == 0
    assert not all(torch.equal(p, q) for p, q in zip(heads["camera"].parameters(), start["camera"]))
    assert module.pipeline.encoder.muted_heads == frozenset()  # a finished fit predicts with every head

    module = RegressorModule(**tiny_module_kwargs(geometry_warmup_steps=2, lr=1e-2))
    heads = module.pipeline.encoder.heads
    before = [p.detach().clone() for p in heads["shape"].parameters()]
    _trainer(tmp_path, max_steps=4).fit(module, loader(random_batch(4)))
    assert not all(torch.equal(p, q) for p, q in zip(heads["shape"].parameters(), before))


def test_mute_heads_rejects_unknown_names():
    module = RegressorModule(**tiny_module_kwargs())
    with pytest.raises(ValueError, match="unknown heads"):
        module.pipeline.encoder.mute_heads({"nose"})
