"""Export a trained CriticModule (training checkpoint, ``.ckpt``) to the small, standalone critic file.

``python -m regressor.critic.export --ckpt <run dir>/checkpoints/last.ckpt --out checkpoints/critic.pt
--config configs/critic/default.yaml [--metrics bench.json] [--extra key=value ...]``

Writes ``critic.pt`` (``ShapeCritic.save_checkpoint``: weights + architecture + metadata) and a
sibling ``critic.json`` with the same metadata: the training command and config, the git commit,
the data seeds, and the benchmark metrics when given.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from regressor.models.critic import ShapeCritic
from regressor.synthetic.splits import SPLIT_SEEDS


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


RANKED_SCORE = "higher = geometry explains the image better; calibrated to about -log(1 + mean vertex error / 1 mm)"
SLOPE_SCORE = ("higher = geometry explains the image better; trained for its slope (d score / d shape and expression "
               "points towards the true shape), so its value is not an error estimate")


def score_meaning(config: dict[str, Any]) -> str:
    """What the score means: a critic trained only for its gradient has no calibrated value."""
    model = (config.get("model") or {}).get("init_args", {})
    gradient_only = (model.get("gradient") or {}).get("faces_per_step", 0) > 0 and model.get("hand_made_weight") == 0
    return SLOPE_SCORE if gradient_only else RANKED_SCORE


def build_metadata(config_path: str, ckpt: str, metrics: dict[str, Any] | None, extra: dict[str, str]) -> dict[str, Any]:
    config = yaml.safe_load(Path(config_path).read_text())
    data = (config.get("data") or {}).get("init_args", {})
    offset = int(data.get("seed_offset", 0))
    return {
        "command": f"regressor fit --config {config_path}",
        "config_path": config_path,
        "config": config,
        "git_commit": git_commit(),
        "training_checkpoint": ckpt,
        "data_seeds": {
            "train": f"SPLIT_SEEDS['critic_train'] + {offset} + i, i < {data.get('train_samples')}"
                     f" (= {SPLIT_SEEDS['critic_train'] + offset}..)",
            "val": f"SPLIT_SEEDS['critic_val'] + {offset} + i, i < {data.get('val_samples')}",
            "benchmark": "SPLIT_SEEDS['test'] + i (benchmarks.critic)",
        },
        "score": score_meaning(config),
        "metrics": metrics or {},
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="CriticModule training checkpoint (.ckpt)")
    parser.add_argument("--out", default="checkpoints/critic.pt")
    parser.add_argument("--config", default="configs/critic/default.yaml")
    parser.add_argument("--metrics", default=None, help="benchmarks.critic --json output to record")
    parser.add_argument("--extra", nargs="*", default=[], help="key=value pairs to record (e.g. wall_time_min=62)")
    args = parser.parse_args(argv)
    critic = ShapeCritic.from_checkpoint(args.ckpt)
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    extra = dict(item.split("=", 1) for item in args.extra)
    metadata = build_metadata(args.config, args.ckpt, metrics, extra)
    critic.save_checkpoint(args.out, metadata)
    json_path = Path(args.out).with_suffix(".json")
    json_path.write_text(json.dumps({"architecture": critic.config, **metadata}, indent=2) + "\n")
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.2f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
