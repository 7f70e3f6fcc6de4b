"""Throughput of real-photo loading: ``FaceFolderDataset`` samples per second on the CPU.

    python -m benchmarks.data_loading --json data_loading.json [--images 24] [--size 128]

Writes a temporary folder of drawn faces as JPEGs at two photo sizes (640x480 and 12 MP,
4000x3000) with .pts landmarks, then times training samples (jitter + augmentation) in the
main process (no workers), once with the reduced JPEG decode the dataset uses and once
forcing full decodes, to show what DCT-scaled decoding buys. Wall-clock on whatever else
the machine runs; the load average is recorded.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.output import write_json
from regressor.data import folder as folder_module
from regressor.data.folder import FaceFolderDataset
from regressor.data.image_io import load_image
from regressor.data.landmarks_io import save_pts
from regressor.data.transforms import build_train_transform
from tests.face_folder_fixtures import draw_face, schematic_face


def write_folder(root: Path, count: int, height: int, width: int) -> None:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        scale = rng.uniform(0.15, 0.3) * min(height, width)
        landmarks = schematic_face() * scale + np.array([width / 2, height / 2]) * rng.uniform(0.9, 1.1, 2)
        Image.fromarray(draw_face(height, width, landmarks, seed=i)).save(root / "images" / f"f{i:03d}.jpg", quality=90)
        save_pts(root / "images" / f"f{i:03d}.pts", landmarks)


def samples_per_second(dataset: FaceFolderDataset, passes: int = 2) -> float:
    torch.manual_seed(0)
    dataset[0]  # warm-up (imports, first decode)
    start = time.perf_counter()
    for _ in range(passes):
        for i in range(len(dataset)):
            dataset[i]
    return passes * len(dataset) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="crop side, pixels")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {"load_average": os.getloadavg()[0], "crop_size": args.size, "images": args.images, "folders": {}}
    for label, (height, width) in {"640x480": (480, 640), "12MP": (3000, 4000)}.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_folder(Path(tmp), args.images, height, width)
            dataset = FaceFolderDataset(tmp, image_size=args.size, split="train", augment=build_train_transform(args.size))
            reduced = samples_per_second(dataset)
            original = folder_module.load_image_reduced
            folder_module.load_image_reduced = lambda path, scale: (load_image(path), 1.0)
            try:
                full = samples_per_second(dataset, passes=1)
            finally:
                folder_module.load_image_reduced = original
        results["folders"][label] = {"samples_per_s": round(reduced, 1), "samples_per_s_full_decode": round(full, 1)}
        print(f"{label:>8}: {reduced:7.1f} samples/s (full decode: {full:6.1f}) at {args.size} px, 1 process")
    write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
