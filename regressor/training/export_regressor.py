"""Export a ``regressor fit`` checkpoint as a shippable regressor file plus its json record.

    python -m regressor.training.export_regressor CKPT OUT.ckpt --config CONFIG --command "..." [--benchmark JSON]

The file is ``regressor.io.regressor_file``'s int8 format (weights-only loadable, < 20 MB for a
resnet18); the json beside it records what a reader needs to trust and reproduce it: the
training command and config, the commit, the seed, the step, the wall time and the validation
curve read from the run's TensorBoard log, and (optionally) the benchmark figures.
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
from pathlib import Path

import torch
import yaml


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def validation_curve(log_dir: Path) -> dict[str, list[list[float]]]:
    """``{tag: [[step, value], ...]}`` of every ``val/*`` scalar and the wall time, from TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[list[float]]] = {}
    first, last = None, None
    for path in sorted(glob.glob(str(log_dir / "**" / "events*"), recursive=True)):
        events = EventAccumulator(path)
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars = events.Scalars(tag)
            if tag.startswith("val/") and not tag.startswith("val/loss"):
                curves.setdefault(tag, []).extend([[e.step, round(e.value, 4)] for e in scalars])
            for event in scalars:
                first = event.wall_time if first is None else min(first, event.wall_time)
                last = event.wall_time if last is None else max(last, event.wall_time)
    if first is not None:
        curves["wall_time_minutes"] = [[0, round((last - first) / 60, 1)]]
    return curves


def main(argv: list[str] | None = None) -> int:
    from regressor.inference import export_training_checkpoint, load_checkpoint_file

    p = argparse.ArgumentParser(prog="python -m regressor.training.export_regressor", description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--config", type=Path, required=True, help="the training config")
    p.add_argument("--command", required=True, help="the exact training command(s)")
    p.add_argument("--log-dir", type=Path, default=None, help="TensorBoard dir of the run (for the curves)")
    p.add_argument("--benchmark", type=Path, default=None, help="benchmarks.regression json to record")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    checkpoint = load_checkpoint_file(args.ckpt)
    config = yaml.safe_load(args.config.read_text())
    record = {
        "command": args.command, "config_path": str(args.config), "config": config, "commit": _commit(),
        "seed": config.get("seed_everything"), "global_step": checkpoint.get("global_step"),
        "source_checkpoint": str(args.ckpt), "note": args.note,
    }
    if args.log_dir is not None:
        record["validation"] = validation_curve(args.log_dir)
    if args.benchmark is not None:
        record["benchmark"] = json.loads(args.benchmark.read_text())
    path = export_training_checkpoint(args.ckpt, args.out, {k: record[k] for k in ("command", "commit", "seed", "global_step")})
    record["size_mb"] = round(path.stat().st_size / 1e6, 2)
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path} ({record['size_mb']} MB) and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
