"""A critic run's learning curve from its TensorBoard log: validation figures against distinct faces seen.

``python -m benchmarks.learning_curve lightning_logs/critic_gradient/version_0 [--batch-size 8] [--json PATH]``

With fresh faces (``CriticDataModule(fresh_faces=True)``) every training sample is a new face, so the
faces seen are ``step x batch size``. For each validation point the table gives the ``val/`` gate figures
and the mean training cosine over the steps since the previous one (train against val: with fresh faces the
two agree unless the critic is memorising). Several log folders (a run and its resumptions) are merged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.output import write_json

VAL_TAGS = ("val/gradient_cosine", "val/gradient_cosine_other_image", "val/truth_beats_other_truth",
            "val/climb.error_start_mm", "val/climb.error_end_mm", "val/climb.improved_fraction")
TRAIN_TAG = "train/gradient.cosine"


def read_scalars(folders: list[str]) -> dict[str, dict[int, float]]:
    """``tag -> {step: value}`` over every events file under ``folders`` (later files win on equal steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    files = sorted(path for folder in folders for path in Path(folder).rglob("events.out.tfevents*"))
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            out.setdefault(tag, {}).update({event.step: event.value for event in events.Scalars(tag)})
    return out


def learning_curve(scalars: dict[str, dict[int, float]], batch_size: int) -> list[dict[str, float]]:
    val_steps = sorted(scalars.get(VAL_TAGS[0], {}))
    train = scalars.get(TRAIN_TAG, {})
    rows, previous = [], -1
    for step in val_steps:
        window = [value for s, value in train.items() if previous < s <= step]
        row = {"step": step, "faces_seen": (step + 1) * batch_size,
               "train_cosine": sum(window) / len(window) if window else float("nan")}
        row.update({tag.removeprefix("val/"): scalars[tag][step] for tag in VAL_TAGS if step in scalars.get(tag, {})})
        rows.append(row)
        previous = step
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="TensorBoard log folders of one run (and its resumptions)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = learning_curve(read_scalars(args.folders), args.batch_size)
    print(f"{'step':>6} {'faces':>7} {'train cos':>9} {'val cos':>8} {'other img':>9} {'truth>other':>11} "
          f"{'climb mm':>15} {'improved':>8}")
    for row in rows:
        print(f"{row['step']:>6} {row['faces_seen']:>7} {row['train_cosine']:>9.3f} "
              f"{row.get('gradient_cosine', float('nan')):>8.3f} {row.get('gradient_cosine_other_image', float('nan')):>9.3f} "
              f"{row.get('truth_beats_other_truth', float('nan')):>11.2f} "
              f"{row.get('climb.error_start_mm', float('nan')):>7.3f}->{row.get('climb.error_end_mm', float('nan')):<7.3f} "
              f"{row.get('climb.improved_fraction', float('nan')):>8.2f}")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
