"""``make demo``: the whole product end to end on 2 CPU cores, in about 10 minutes.

1. build the built-in face model and export example meshes;
2. render a small memory-mapped training pool (split ``train``; ``regressor synth --pool``);
3. ``regressor fit --config configs/regressor/quickstart.yaml``: fine-tune the shipped regressor
   (``checkpoints/regressor.ckpt``) on that pool with the hybrid recipe it was trained with;
4. ``regressor validate`` on held-out synthetic seeds (split ``val``);
5. render held-out *test* faces (split ``test``); ``regressor predict`` on them with the shipped
   regressor (no config: photos in, meshes out) and with the demo's own checkpoint;
6. print the held-out error of the mean face, the demo's regressor and the shipped one side by
   side, and say where the TensorBoard logs and image grids are.

``python -m regressor.demo --help`` lists the sizes; the defaults are the ``make demo`` run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

#: as written in the repository; outside it (an installed wheel) the shipped copy (``regressor.assets``)
QUICKSTART_NAME = "configs/regressor/quickstart.yaml"
QUICKSTART_OUT = Path("outputs/quickstart")


def _header(step: int, total: int, text: str) -> None:
    print(f"\n=== [{step}/{total}] {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regressor.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="demo data and predictions")
    p.add_argument("--train-images", type=int, default=1024, help="synthetic training faces rendered once (pool)")
    p.add_argument("--test-images", type=int, default=32, help="held-out faces to predict and score")
    p.add_argument("--max-steps", type=int, default=None, help="override the quickstart's trainer.max_steps")
    p.add_argument("--size", type=int, default=128, help="image size (the quickstart's and the shipped regressor's)")
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


def render_pool(num: int, size: int, out: Path) -> Path:
    """A training pool in ``out`` unless an identical one is already there."""
    from regressor.synthetic.pool import FacePool, PoolError, PoolSpec, write_pool

    try:
        pool = FacePool(out)
        if (pool.manifest.get("num"), pool.image_size, pool.manifest.get("split")) == (num, size, "train"):
            print(f"reusing the pool of {num} faces in {out}")
            return out
    except PoolError:
        pass
    manifest = write_pool(PoolSpec(out=out, num=num, image_size=size, split="train", workers=2))
    print(f"rendered {num} faces in {manifest['seconds']:.0f} s")
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


def held_out_errors(checkpoints: dict[str, Path], test_dir: Path) -> dict[str, dict[str, float]]:
    """Aligned vertex errors (mm; whole head and the face region NoW scores) on the held-out
    folder, for the mean face and each regressor, predicted from the image files."""
    import numpy as np
    import torch

    from regressor.inference import Reconstructor
    from regressor.losses.supervised import face_region_mask

    images = sorted((test_dir / "images").glob("*.png"))
    truth = torch.stack([torch.from_numpy(np.load(test_dir / "annotations" / f"{p.stem}.npz")["vertices"]) for p in images]).float()
    rows, face = {}, None
    for name, checkpoint in checkpoints.items():
        reconstructor = Reconstructor.from_checkpoint(checkpoint)
        model = reconstructor.pipeline.face_model
        face = face_region_mask(model) if face is None else face
        if "mean face" not in rows:
            with torch.no_grad():
                mean = model(model.zero_params(len(images))).vertices
            rows["mean face"] = _errors(mean, truth, face)
        rows[name] = _errors(reconstructor.predict(images).mesh.vertices, truth, face)
    return rows


def _errors(vertices, truth, face) -> dict[str, float]:
    from regressor.evaluation.metrics import vertex_errors_mm

    _, aligned = vertex_errors_mm(vertices, truth)
    _, face_aligned = vertex_errors_mm(vertices[:, face], truth[:, face])
    return {"aligned_mm": float(aligned.mean()), "face_aligned_mm": float(face_aligned.mean())}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.argv = sys.argv[:1]  # the demo's own flags are not LightningCLI arguments
    from regressor.assets import resolve_shipped
    from regressor.face_model import build_face_model
    from regressor.face_model.cli import export_obj
    from regressor.inference import SHIPPED_REGRESSOR
    from regressor.predict_cli import main as predict_plain
    from regressor.training.cli import run_lightning_cli

    if not SHIPPED_REGRESSOR.is_file():
        raise SystemExit(f"demo: the shipped regressor {SHIPPED_REGRESSOR} is missing (it is part of the repository)")
    quickstart = str(resolve_shipped(QUICKSTART_NAME))
    start = time.perf_counter()
    total = 6
    _header(1, total, "face model")
    model = build_face_model()
    print(model.summary())
    for path in export_obj(model, args.out / "model"):
        print(f"wrote {path}")

    _header(2, total, f"render a pool of {args.train_images} synthetic training faces (split 'train')")
    pool = render_pool(args.train_images, args.size, args.out / "pool")

    _header(3, total, f"fine-tune the shipped regressor: regressor fit --config {quickstart}")
    fit_args = ["--config", quickstart, "--data.init_args.pool_dir", str(pool),
                "--data.init_args.image_size", str(args.size)]
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

    _header(5, total, f"predict {args.test_images} held-out faces (split 'test') with both regressors")
    test_dir = render_split("test", args.test_images, args.size, args.out / "test_faces")
    shipped_out, own_out = args.out / "predictions_shipped", args.out / "predictions"
    predict_plain(["--images", str(test_dir / "images"), "--out", str(shipped_out)])
    run_lightning_cli(["predict", *fit_args, "--ckpt_path", str(checkpoint),
                       "--data.init_args.predict_dir", str(test_dir / "images"),
                       "--prediction_writer.output_dir", str(own_out)])
    rows = held_out_errors({"demo regressor": checkpoint, "shipped regressor": SHIPPED_REGRESSOR}, test_dir)
    print(f"\nheld-out test faces ({args.test_images}), similarity-aligned vertex error:")
    print(f"  {'':<20}{'face region (mm)':>18}{'whole head (mm)':>18}{'vs mean face':>14}")
    for name, row in rows.items():
        ratio = row["face_aligned_mm"] / rows["mean face"]["face_aligned_mm"]
        print(f"  {name:<20}{row['face_aligned_mm']:>18.3f}{row['aligned_mm']:>18.3f}{ratio:>13.2f}x")

    _header(6, total, "where things are")
    logs = QUICKSTART_OUT / "tensorboard"
    print(f"meshes, parameters, overlays: {own_out.resolve()}  (shipped regressor: {shipped_out.resolve()})")
    print(f"checkpoints:                  {stale.resolve()}")
    print(f"TensorBoard logs:             {logs.resolve()}   (tensorboard --logdir {logs})")
    print(f"image grids (png):            {(QUICKSTART_OUT / 'grids').resolve()}")
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
