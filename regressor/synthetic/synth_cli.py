"""``regressor synth``: write a synthetic dataset with ground truth to disk.

Layout of ``--out``::

    images/{name}.png        the rendered image
    annotations/{name}.npz   landmarks (68,2), landmarks_valid (68,), now_landmarks (7,2),
                             mask (H,W) uint8, vertices (V,3), displacement (V,3), seed,
                             params_<field> for every FaceParams field
    landmarks/{name}.pts     the 68 landmarks in iBUG .pts (so the folder dataset reads it too)
    manifest.json            split, seeds, image size, config, count

Sample ``i`` has seed ``SPLIT_SEEDS[split] + seed + i`` (``regressor.synthetic.splits``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from regressor.data.landmarks_io import save_pts
from regressor.synthetic.splits import SPLIT_SEEDS, split_seed_range
from regressor.synthetic.config import SyntheticConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regressor synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--num", type=int, default=1000, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed offset inside the split's seed range")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--split", default="train", choices=sorted(SPLIT_SEEDS), help="named seed range")
    p.add_argument("--batch-size", type=int, default=32, help="samples rendered together")
    p.add_argument("--config", type=Path, default=None, help="yaml with SyntheticConfig fields")
    p.add_argument("--model-only", action="store_true", help="albedo x SH images only (no effects, no displacement)")
    p.add_argument("--face-model", default=None, help="FLAME-layout model file (default: built-in stand-in)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering batches in parallel")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1 is fastest: the tensors are small and cores are shared)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--pool", action="store_true",
                   help="write a memory-mapped training pool (regressor.synthetic.pool) instead of image files")
    return p


def load_config(path: Path | None, model_only: bool) -> SyntheticConfig:
    values = {}
    if path is not None:
        import yaml

        if not path.is_file():
            raise SystemExit(f"regressor synth: config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise SystemExit(f"regressor synth: {path} must hold a mapping of SyntheticConfig fields")
    return SyntheticConfig.model_only(**values) if model_only else SyntheticConfig.from_dict(values)


def write_sample(out: Path, name: str, batch, k: int) -> None:
    """Write sample ``k`` of a SyntheticBatch as png + npz + pts."""
    image = (batch.image[k].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(image).save(out / "images" / f"{name}.png")
    arrays = {
        "landmarks": batch.landmarks[k], "landmarks_valid": batch.landmarks_valid[k],
        "now_landmarks": batch.now_landmarks[k], "vertices": batch.vertices[k],
        "displacement": batch.displacement[k], "seed": batch.seeds[k],
    }
    arrays = {key: value.cpu().numpy() for key, value in arrays.items()}
    arrays["mask"] = (batch.mask[k, 0] > 0.5).cpu().numpy().astype(np.uint8)
    for field, value in batch.params.items():
        arrays[f"params_{field}"] = value[k].cpu().numpy()
    np.savez_compressed(out / "annotations" / f"{name}.npz", **arrays)
    # save_pts applies the iBUG +0.5 offset (1-based pixel centres); writing project pixels
    # directly put every landmark half a pixel up and left when read back.
    save_pts(out / "landmarks" / f"{name}.pts", batch.landmarks[k].cpu().numpy())


_WORKER: dict = {}


def _init_worker(model_path: str | None, size: int, config: SyntheticConfig, threads: int) -> None:
    """Build the face model and generator once per process."""
    from regressor.synthetic.generator import SyntheticFaceGenerator
    from regressor.face_model import build_face_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_face_model(model_path)
    _WORKER["generator"] = SyntheticFaceGenerator(model, size, config)


def _render_chunk(job: tuple[Path, list[int], list[str]]) -> int:
    out, seeds, names = job
    batch = _WORKER["generator"].generate(seeds)
    for k, name in enumerate(names):
        write_sample(out, name, batch, k)
    return len(seeds)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num < 1 or args.size < 8 or args.batch_size < 1 or args.workers < 1 or args.threads < 1:
        raise SystemExit("regressor synth: need --num >= 1, --size >= 8, --batch-size/--workers/--threads >= 1")
    config = load_config(args.config, args.model_only)
    if args.pool:
        from regressor.synthetic.pool import PoolSpec, write_pool

        manifest = write_pool(PoolSpec(out=args.out, num=args.num, image_size=args.size, split=args.split,
                                       seed_offset=args.seed, batch_size=args.batch_size, workers=args.workers,
                                       config=config.to_dict(), face_model=args.face_model),
                              show_progress=not args.no_progress)
        print(f"wrote a pool of {args.num} faces to {args.out} in {manifest['seconds']:.1f} s")
        return 0
    seeds = list(split_seed_range(args.split, args.num, args.seed))
    names = [f"{args.split}_{i + args.seed:07d}" for i in range(len(seeds))]
    for sub in ("images", "annotations", "landmarks"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(args.out, seeds[i:i + args.batch_size], names[i:i + args.batch_size])
            for i in range(0, len(seeds), args.batch_size)]
    init = (args.face_model, args.size, config, args.threads)

    start = time.perf_counter()
    with tqdm(total=len(seeds), desc="synth", unit="img", disable=args.no_progress) as bar:
        if args.workers == 1:
            previous_threads = torch.get_num_threads()
            _init_worker(*init)
            for job in jobs:
                bar.update(_render_chunk(job))
            torch.set_num_threads(previous_threads)
        else:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(args.workers, _init_worker, init) as pool:
                for done in pool.imap_unordered(_render_chunk, jobs):
                    bar.update(done)
    elapsed = time.perf_counter() - start
    manifest = {
        "split": args.split, "seed_offset": args.seed, "first_seed": seeds[0], "num": len(seeds),
        "image_size": args.size, "names": names, "config": config.to_dict(),
        "face_model": args.face_model or "builtin", "seconds": round(elapsed, 2),
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {len(seeds)} samples to {args.out} in {elapsed:.1f} s ({len(seeds) / elapsed:.1f} img/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
