"""Kill ``regressor fit`` with SIGKILL mid-run, resume with ``--ckpt_path last``, and report.

    python -m benchmarks.kill_resume [--steps 40] [--kills 2] [--json PATH]

What it shows (figures printed, nothing asserted here; ``tests/test_robustness.py`` asserts
the same on a smaller run):

* the resumed run ends at ``max_steps`` optimizer steps, exactly like an uninterrupted run
  (Lightning's ``global_step`` and AdamW's own per-parameter ``step`` counters);
* every ``*.ckpt`` left on disk after each ``kill -9`` loads with ``torch.load(weights_only=True)``
  (checkpoints are written atomically by ``callbacks.atomic_checkpoint.AtomicCheckpointIO``);
* how far the resumed weights are from those of an uninterrupted run with the same seed
  (synthetic samples are seeded by index, so the difference comes from the data order
  after a restart, not from lost state).

The run is tiny (32 px, a small MobileNet, no critic, a checkpoint every step) so that kills
land often inside a checkpoint write.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from benchmarks.output import write_json

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_fit_config(out_dir: Path, max_steps: int, seed: int = 0, train_dir: Optional[Path] = None) -> Path:
    """A small but complete LightningCLI config: checkpoints every step (last.ckpt) and every 5.

    Trains on synthetic faces, or on the face folder ``train_dir`` when given (cheaper to load).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = str(out_dir / "checkpoints")
    config: dict[str, Any] = {
        "seed_everything": seed,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "limit_val_batches": 0,
            "num_sanity_val_steps": 0, "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": str(out_dir),
            "plugins": [{"class_path": "callbacks.atomic_checkpoint.AtomicCheckpointIO"}],
            "callbacks": [
                {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": checkpoints, "save_top_k": 0, "save_last": True, "every_n_train_steps": 1}},
                {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": checkpoints, "filename": "regressor-{step}", "save_top_k": -1,
                               "every_n_train_steps": 5}},
            ],
        },
        "face_model": {"class_path": "regressor.face_model.FaceModel",
                       "init_args": {"n_shape": 10, "n_expression": 5, "n_albedo": 4}},
        "model": {
            "class_path": "regressor.training.regression.RegressorModule",
            "init_args": {
                "encoder": {"class_path": "regressor.models.encoder.FaceEncoder",
                            "init_args": {"backbone": "mobilenetv3_small_050"}},
                "renderer": {"class_path": "regressor.render.Renderer", "init_args": {"backend": "torch"}},
                "losses": [{"name": "photometric", "weight": 1.0}, {"name": "landmarks", "weight": 1.0},
                           {"name": "regularizers", "weight": 0.001}],
                "lr": 1e-3, "scheduler": "cosine", "nan_policy": "skip",
            },
        },
        "data": {
            "class_path": "regressor.training.datamodule.FaceDataModule",
            "init_args": {"image_size": 32, "batch_size": 2, "num_workers": 0, "synthetic_train_samples": 1000,
                          "synthetic_val_samples": 2, "synthetic_test_samples": 2},
        },
    }
    if train_dir is not None:
        config["data"]["init_args"].update(train_source="folder", train_dir=str(train_dir), val_source="none",
                                           test_source="none")
    path = out_dir / "tiny_fit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fit_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "regressor.cli", "fit", "--config", str(config), *extra]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def checkpoint_step(path: Path) -> Optional[int]:
    """``global_step`` stored in ``path``, or None when it does not exist (yet)."""
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def fit_and_kill(config: Path, checkpoint_dir: Path, kill_after_step: int, timeout_s: float = 600.0,
                 resume: bool = False) -> int:
    """Start ``regressor fit``, SIGKILL it once ``last.ckpt`` reaches ``kill_after_step``; returns that step."""
    last = checkpoint_dir / "last.ckpt"
    extra = ("--ckpt_path", "last") if resume else ()
    # stderr goes to a file, not a pipe: a pipe nobody reads would block the run once full.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(fit_command(config, *extra), cwd=REPO_ROOT, env=_environment(),
                               stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            step = checkpoint_step(last)
            if step is not None and step >= kill_after_step:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return step
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"fit ended (rc {process.returncode}) before step {kill_after_step}:\n"
                                   f"{log.read().decode(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"fit did not reach step {kill_after_step} within {timeout_s:.0f} s")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def unreadable_checkpoints(checkpoint_dir: Path) -> list[str]:
    """Every ``*.ckpt`` that ``torch.load(weights_only=True)`` cannot read, with the reason."""
    bad = []
    for path in sorted(checkpoint_dir.glob("*.ckpt")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any failure is a corrupt checkpoint here
            bad.append(f"{path.name}: {type(error).__name__}: {error}")
    return bad


def optimizer_steps(checkpoint: dict[str, Any]) -> list[int]:
    """AdamW's per-parameter step counters (one value per trained tensor)."""
    state = checkpoint["optimizer_states"][0]["state"]
    return sorted({int(entry["step"]) for entry in state.values()})


def summarise(path: Path) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {"global_step": int(checkpoint["global_step"]), "optimizer_steps": optimizer_steps(checkpoint),
            "skipped_steps": int(checkpoint.get("skipped_steps", 0)), "state_dict": checkpoint["state_dict"]}


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="max_steps of each run")
    parser.add_argument("--kills", type=int, default=2, help="how many times the run is killed before it may finish")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/kill_resume"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {"steps": args.steps, "kills": []}
    reference_dir, killed_dir = args.out / "uninterrupted", args.out / "killed"
    for directory in (reference_dir, killed_dir):
        for stale in directory.glob("checkpoints/*"):
            stale.unlink()

    started = time.monotonic()
    subprocess.run(fit_command(tiny_fit_config(reference_dir, args.steps)), cwd=REPO_ROOT, env=_environment(),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    figures["uninterrupted_s"] = round(time.monotonic() - started, 1)
    reference = summarise(reference_dir / "checkpoints" / "last.ckpt")

    config = tiny_fit_config(killed_dir, args.steps)
    checkpoints = killed_dir / "checkpoints"
    for kill in range(args.kills):
        target = (kill + 1) * args.steps // (args.kills + 1)
        step = fit_and_kill(config, checkpoints, target, resume=kill > 0)
        figures["kills"].append({"killed_at_step": step, "corrupt_checkpoints": unreadable_checkpoints(checkpoints),
                                 "leftover_temp_files": len(list(checkpoints.glob(".*.tmp")))})
    subprocess.run(fit_command(config, "--ckpt_path", "last"), cwd=REPO_ROOT, env=_environment(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = summarise(checkpoints / "last.ckpt")
    figures["corrupt_checkpoints_at_end"] = unreadable_checkpoints(checkpoints)
    for name, run in (("uninterrupted", reference), ("killed_and_resumed", resumed)):
        figures[name] = {k: v for k, v in run.items() if k != "state_dict"}
    figures["max_abs_weight_difference"] = max_weight_difference(reference["state_dict"], resumed["state_dict"])

    print(f"uninterrupted run: global_step {reference['global_step']}, AdamW steps {reference['optimizer_steps']}, "
          f"skipped {reference['skipped_steps']} ({figures['uninterrupted_s']} s)")
    for kill in figures["kills"]:
        print(f"kill -9 at step {kill['killed_at_step']}: corrupt checkpoints {len(kill['corrupt_checkpoints'])}, "
              f"leftover temp files {kill['leftover_temp_files']}")
    print(f"resumed run:       global_step {resumed['global_step']}, AdamW steps {resumed['optimizer_steps']}, "
          f"skipped {resumed['skipped_steps']}")
    print(f"max |weight difference| resumed vs uninterrupted: {figures['max_abs_weight_difference']:.3g}")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
