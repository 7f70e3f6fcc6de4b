"""Training throughput of the self-supervised regressor with and without the perceptual shape term,
and end to end (data + step) for the shipped recipe at 64 and 128 px.

    python -m benchmarks.step_time --json outputs/benchmarks/step_time.json

What is measured: training steps (forward, loss stack, backward, AdamW step; the body of
``RegressorModule.training_step``) of the model in ``configs/regressor/self_supervised.yaml``
(the photos-only mode, where the critic is most useful; the term is added at weight 0.05), on
pre-rendered synthetic batches so that the synthetic renderer does not pollute the step time.
The two variants run in one process and alternate step by step: on a shared machine the
background load drifts over minutes, and timing one variant after the other would charge
that drift to whichever ran second.

* ``images_per_s_with_perceptual`` / ``images_per_s_without_perceptual``: the same stack
  with ``perceptual_shape`` active from step 0 / removed;
* ``critic_share_of_step = 1 - t_without / t_with``: the fraction of a training step that
  the critic costs (goal: <= 0.35); the same from process CPU time as ``critic_share_of_step_cpu``,
  which is steadier when other jobs share the machine;
* ``critic_forward_backward_s``: the critic alone (forward + backward into the render) on one
  batch, as a cross-check;
* ``end_to_end_images_per_s_64`` / ``_128``: ``benchmarks.end_to_end`` (pool loading in a worker
  plus the shipped recipe's step), goals 60 and 25 img/s on 2 idle cores.

``meets_goal`` is true only when every goal is met (``goals_met`` says which is not); the JSON
records the encoder's precision on this CPU and the CPU's capability (``benchmarks.output``).

If ``checkpoints/critic.pt`` is absent, a critic with the architecture of
``configs/critic/default.yaml`` and random weights is timed instead (its cost does not
depend on its weights); the JSON says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.output import with_machine, write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "configs" / "regressor" / "self_supervised.yaml"
CRITIC_CONFIG = REPO_ROOT / "configs" / "critic" / "default.yaml"
SHIPPED_CRITIC = REPO_ROOT / "checkpoints" / "critic.pt"
GOAL_CRITIC_SHARE = 0.35
END_TO_END_GOALS = {"end_to_end_images_per_s_64": 60, "end_to_end_images_per_s_128": 25}


def critic_checkpoint(workdir: Path) -> tuple[Path, str]:
    if SHIPPED_CRITIC.is_file():
        return SHIPPED_CRITIC, "shipped checkpoints/critic.pt"
    from regressor.models.critic import ShapeCritic

    init = yaml.safe_load(CRITIC_CONFIG.read_text())["model"]["init_args"]
    critic = ShapeCritic(backbone=init["backbone"], image_size=init["image_size"], backbone_kwargs=init.get("backbone_kwargs"))
    path = workdir / "random_critic.pt"
    critic.save_checkpoint(path, {"note": "random weights, timing only"})
    return path, f"random weights with the architecture of {CRITIC_CONFIG.relative_to(REPO_ROOT)} (no shipped critic)"


def quickstart_batches(num_batches: int) -> tuple[list[dict], dict]:
    """Pre-rendered training batches (split ``train``) with the quickstart's size and batch size."""
    from torch.utils.data import default_collate

    from regressor.synthetic.generator import SyntheticFaceDataset

    config = yaml.safe_load(QUICKSTART.read_text())
    data = config["data"]["init_args"]
    dataset = SyntheticFaceDataset(num_batches * data["batch_size"], image_size=data["image_size"], split="train")
    batches = []
    for b in range(num_batches):
        indices = list(range(b * data["batch_size"], (b + 1) * data["batch_size"]))
        batches.append(default_collate(dataset.__getitems__(indices)))
    return batches, config


def build_variant(config: dict, losses: list[dict]):
    """A quickstart ``RegressorModule`` with the given loss stack, and its optimizer."""
    from regressor.training.regression import RegressorModule

    init = dict(config["model"]["init_args"], losses=losses, image_size=config["data"]["init_args"]["image_size"])
    init["scheduler"] = "none"  # the schedule needs a Trainer and does not change the step cost
    torch.manual_seed(0)
    module = RegressorModule(**init).train()
    return module, module.configure_optimizers()


def training_step_seconds(module, optimizer, batch: dict, step: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of one training step: forward, loss stack, backward, AdamW.

    The step is ``RegressorModule.training_step`` without Lightning's logging calls, so that
    the variants can be interleaved step by step in one process (see ``interleaved_timings``).
    """
    from regressor.types import FaceBatch, LossInputs

    wall, cpu = time.perf_counter(), time.process_time()
    face_batch = FaceBatch.from_dict(batch)
    result = module.reconstruct(face_batch.image)
    losses = module.loss_stack(LossInputs(face_batch, result.params, result.mesh, result.renders, step=step))
    losses["total"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_timings(variants: dict, batches: list[dict], steps: int, warmup: int) -> dict[str, list[tuple[float, float]]]:
    """Alternate the variants step by step, so that load from other jobs hits them alike."""
    timings = {name: [] for name in variants}
    for step in range(warmup + steps):
        batch = batches[step % len(batches)]
        for name, (module, optimizer) in variants.items():
            seconds = training_step_seconds(module, optimizer, batch, step)
            if step >= warmup:
                timings[name].append(seconds)
    return timings


def time_critic_alone(critic_path: Path, batch: dict, repeats: int) -> float:
    from regressor.models.critic import ShapeCritic

    critic = ShapeCritic.from_checkpoint(critic_path).requires_grad_(False).eval()
    image = batch["image"]
    shaded = batch["image"].mean(1, keepdim=True)
    seconds = []
    for _ in range(repeats + 1):
        render = shaded.clone().requires_grad_(True)
        start = time.perf_counter()
        critic(image, render).sum().backward()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        critic_path, critic_note = critic_checkpoint(Path(workdir))
        print("rendering training batches ...", flush=True)
        batches, config = quickstart_batches(2)
        without_critic = [t for t in config["model"]["init_args"]["losses"] if t["name"] != "perceptual_shape"]
        with_critic = without_critic + [{"name": "perceptual_shape", "weight": 0.05, "warmup_steps": 0,
                                         "checkpoint": str(critic_path)}]
        print("timing training steps with and without the perceptual term (interleaved) ...", flush=True)
        variants = {"with": build_variant(config, with_critic), "without": build_variant(config, without_critic)}
        timings = interleaved_timings(variants, batches, args.steps, args.warmup)
        t_with = [[t[0] for t in timings["with"]], [t[1] for t in timings["with"]]]
        t_without = [[t[0] for t in timings["without"]], [t[1] for t in timings["without"]]]
        critic_alone = time_critic_alone(critic_path, batches[0], repeats=5)
        del variants
        print("timing end to end (pool loading + the shipped recipe's step) ...", flush=True)
        from benchmarks.end_to_end import images_per_second

        end_to_end = {f"end_to_end_images_per_s_{size}": round(images_per_second(size, 32, args.steps, args.warmup, False,
                                                                                 Path(workdir)), 1) for size in (64, 128)}

    batch_size = config["data"]["init_args"]["batch_size"]
    step_with, step_without = statistics.median(t_with[0]), statistics.median(t_without[0])
    cpu_with, cpu_without = statistics.median(t_with[1]), statistics.median(t_without[1])
    share = max(0.0, 1.0 - step_without / step_with)
    goals_met = {"critic_share_of_step": share <= GOAL_CRITIC_SHARE,
                 **{name: end_to_end[name] >= goal for name, goal in END_TO_END_GOALS.items()}}
    figures = {
        "config": str(QUICKSTART.relative_to(REPO_ROOT)),
        "backbone": config["model"]["init_args"]["encoder"]["init_args"]["backbone"],
        "image_size": config["data"]["init_args"]["image_size"],
        "batch_size": batch_size,
        "critic": critic_note,
        "timed_steps": args.steps,
        "step_s_with_perceptual": round(step_with, 4),
        "step_s_without_perceptual": round(step_without, 4),
        "images_per_s_with_perceptual": round(batch_size / step_with, 2),
        "images_per_s_without_perceptual": round(batch_size / step_without, 2),
        "critic_share_of_step": round(share, 3),
        # CPU seconds of this process per step (all threads): less sensitive to other load on the machine.
        "step_cpu_s_with_perceptual": round(cpu_with, 4),
        "step_cpu_s_without_perceptual": round(cpu_without, 4),
        "critic_share_of_step_cpu": round(max(0.0, 1.0 - cpu_without / cpu_with), 3),
        "critic_forward_backward_s": round(critic_alone, 4),
        "critic_alone_share_of_step": round(critic_alone / step_with, 3),
        "goal_critic_share": GOAL_CRITIC_SHARE,
        **end_to_end,
        "goal_end_to_end_images_per_s": {"64": 60, "128": 25},
        "goals_met": goals_met,
        "meets_goal": all(goals_met.values()),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(with_machine(figures), indent=2))
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
