"""Run by tests/test_ddp.py in a subprocess: 2-process CPU DDP (gloo) for a few steps.

Writes ``rank<k>.json`` into the output directory with what each rank saw: the critic's
checksum before and after, the encoder's checksum after, its own (unsynchronised) validation
landmark error and the logged (synchronised) one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from regressor.training.regression import RegressorModule  # noqa: E402
from tests.regression_helpers import loader, random_batch, tiny_module_kwargs  # noqa: E402


def checksum(module: torch.nn.Module) -> float:
    return float(sum(t.double().sum() * (i + 1) for i, t in enumerate(module.state_dict().values())))


class RecordingRegressor(RegressorModule):
    """Keeps this rank's own per-batch validation landmark errors."""

    local_landmark_errors: list[float]

    def evaluation_metrics(self, batch, result):
        metrics = super().evaluation_metrics(batch, result)
        self.local_landmark_errors.append(float(metrics["landmark_error_px"].mean()))
        return metrics


def main(out_dir: str, critic_path: str) -> None:
    pl.seed_everything(0)
    losses = [
        {"name": "photometric", "weight": 1.0},
        {"name": "landmarks", "weight": 1.0},
        {"name": "perceptual_shape", "weight": 1.0, "checkpoint": critic_path, "warmup_steps": 0},
    ]
    module = RecordingRegressor(**tiny_module_kwargs(losses=losses))
    module.local_landmark_errors = []
    critic = module.loss_stack.terms["perceptual_shape"].critic
    critic_before = checksum(critic)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, limit_val_batches=1, val_check_interval=3,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    # 12 training samples (2 per rank per step, 3 steps), 4 validation samples: rank k validates samples k, k+2.
    trainer.fit(module, loader(random_batch(12, seed=1)), loader(random_batch(4, seed=2)))
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "critic_before": critic_before,
        "critic_after": checksum(critic),
        "critic_training": critic.training,
        "critic_requires_grad": any(p.requires_grad for p in critic.parameters()),
        "encoder_after": checksum(module.pipeline.encoder),
        "local_landmark_error": module.local_landmark_errors,
        "synced_landmark_error": float(trainer.callback_metrics["val/landmark_error_px"]),
    }
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
