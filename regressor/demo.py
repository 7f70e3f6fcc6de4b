"""``make demo``: the whole product end to end on 2 CPU cores, in about 10 minutes.

1. build the built-in face model and export example meshes;
2. render a small synthetic *training* set (split ``train``) to disk with ``regressor synth``
   (rendering is the costly part on a CPU, so the demo renders a few hundred faces once and
   trains on them for several epochs instead of rendering new ones every step);
3. ``regressor fit --config configs/regressor/quickstart.yaml`` on that folder, with the
   shipped critic in the loss stack (after its warm-up);
4. ``regressor validate`` on held-out synthetic seeds (split ``val``);
5. render held-out *test* faces (split ``test``) and ``regressor predict`` on that folder,
   writing a mesh, parameters and an overlay per image; compare the meshes to the truth;
6. say where the TensorBoard logs and image grids are.

``python -m regressor.demo --help`` lists the sizes; the defaults are the ``make demo`` run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

QUICKSTART = "configs/regressor/quickstart.yaml"
QUICKSTART_OUT = Path("outputs/quickstart")
DEFAULT_CRITIC = Path("checkpoints/critic.pt")


def _header(step: int, total: int, text: str) -> None:
    print(f"\n=== [{step}/{total}] {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regressor.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="demo data and predictions")
    p.add_argument("--train-images", type=int, default=512, help="synthetic training faces rendered once")
    p.add_argument("--test-images", type=int, default=8, help="held-out faces to predict")
    p.add_argument("--max-steps", type=int, default=None, help="override the quickstart's trainer.max_steps")
    p.add_argument("--size", type=int, default=64, help="image size (the quickstart's)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more LightningCLI overrides for fit")
    return p


def render_split(split: str, num: int, size: int, out: Path) -> Path:
    """``regressor synth`` into ``out`` unless an identical set is already there."""
    from regressor.synthetic.synth_cli import main as synth

    manifest = out / "manifest.json"
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        if (done.get("split"), done.get("num"), done.get("image_size")) == (split, num, size):
            print(f"reusing {num} {split} faces in {out}")
            return out
        shutil.rmtree(out)
    synth(["--out", str(out), "--num", str(num), "--size", str(size), "--split", split, "--batch-size", "16"])
    return out


def newest_checkpoint(folder: Path) -> Path:
    """The checkpoint with the highest global step: ``last.ckpt`` is written every N steps, the
    best one at every validation, so after a ``max_time`` stop the best may be the newer."""
    import torch

    found = sorted(folder.glob("*.ckpt"))
    if not found:
        raise SystemExit(f"demo: training wrote no checkpoint into {folder}")
    steps = {path: torch.load(path, map_location="cpu", weights_only=True).get("global_step", -1) for path in found}
    return max(found, key=lambda path: (steps[path], path.name == "last.ckpt"))


def held_out_errors(checkpoint: Path, test_dir: Path) -> dict[str, float]:
    """Mean vertex errors (mm) of the regressor and of the mean face on the held-out folder."""
    import numpy as np
    import torch

    from regressor.inference import Reconstructor
    from regressor.evaluation.metrics import vertex_errors_mm

    reconstructor = Reconstructor.from_checkpoint(checkpoint)
    images = sorted((test_dir / "images").glob("*.png"))
    truth = torch.stack([torch.from_numpy(np.load(test_dir / "annotations" / f"{p.stem}.npz")["vertices"]) for p in images])
    result = reconstructor.predict(images)
    mean_face = reconstructor.pipeline.face_model.v_template.expand_as(truth)
    raw, aligned = vertex_errors_mm(result.mesh.vertices, truth.float())
    _, mean_aligned = vertex_errors_mm(mean_face.float(), truth.float())
    return {"regressor_mm": float(raw.mean()), "regressor_aligned_mm": float(aligned.mean()),
            "mean_face_aligned_mm": float(mean_aligned.mean())}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.argv = sys.argv[:1]  # the demo's own flags are not LightningCLI arguments
    from regressor.face_model import FaceModel
    from regressor.face_model.cli import export_obj
    from regressor.training.cli import run_lightning_cli

    start = time.perf_counter()
    total = 6
    _header(1, total, "face model")
    model = FaceModel.builtin()
    print(model.summary())
    for path in export_obj(model, args.out / "model"):
        print(f"wrote {path}")

    _header(2, total, f"render {args.train_images} synthetic training faces (split 'train')")
    train_dir = render_split("train", args.train_images, args.size, args.out / "train_faces")

    _header(3, total, f"train: regressor fit --config {QUICKSTART}")
    fit_args = ["--config", QUICKSTART, "--data.init_args.train_source", "folder",
                "--data.init_args.train_dir", str(train_dir), "--data.init_args.image_size", str(args.size)]
    if not DEFAULT_CRITIC.is_file():
        print(f"WARNING: {DEFAULT_CRITIC} is missing: training WITHOUT the perceptual shape loss", file=sys.stderr)
        fit_args += ["--model.init_args.losses", json.dumps([
            {"name": "photometric", "weight": 1.0}, {"name": "landmarks", "weight": 1.0},
            {"name": "regularizers", "weight": 0.001}])]
    if args.max_steps is not None:
        fit_args += ["--trainer.max_steps", str(args.max_steps)]
    fit_args += list(args.extra)
    stale = QUICKSTART_OUT / "checkpoints"
    if stale.exists():
        print(f"removing the previous demo run's checkpoints in {stale}")
        shutil.rmtree(stale)
    run_lightning_cli(["fit", *fit_args])
    checkpoint = newest_checkpoint(stale)
    print(f"using {checkpoint}")

    _header(4, total, "validate on held-out synthetic seeds (split 'val')")
    run_lightning_cli(["validate", *fit_args, "--ckpt_path", str(checkpoint)])

    _header(5, total, f"predict on {args.test_images} held-out faces (split 'test')")
    test_dir = render_split("test", args.test_images, args.size, args.out / "test_faces")
    predictions = args.out / "predictions"
    run_lightning_cli(["predict", *fit_args, "--ckpt_path", str(checkpoint),
                       "--data.init_args.predict_dir", str(test_dir / "images"),
                       "--prediction_writer.output_dir", str(predictions)])
    errors = held_out_errors(checkpoint, test_dir)
    print(f"held-out test faces: vertex error {errors['regressor_mm']:.2f} mm (no alignment), "
          f"{errors['regressor_aligned_mm']:.2f} mm after similarity alignment; "
          f"the mean face scores {errors['mean_face_aligned_mm']:.2f} mm aligned")

    _header(6, total, "where things are")
    logs = QUICKSTART_OUT / "tensorboard"
    print(f"meshes, parameters, overlays: {predictions.resolve()}")
    print(f"checkpoints:                  {stale.resolve()}")
    print(f"TensorBoard logs:             {logs.resolve()}   (tensorboard --logdir {logs})")
    print(f"image grids (png):            {(QUICKSTART_OUT / 'grids').resolve()}")
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
