"""A pre-rendered, memory-mapped pool of synthetic faces with ground truth.

Why: generating a synthetic face costs about as much as a training step, and under CPU
contention on-the-fly generation collapses. A pool is rendered once (several processes, one
thread each), stored as plain ``.npy`` arrays, and memory-mapped, so every epoch reads it at
memory speed and DataLoader workers share the pages.

Layout of a pool folder::

    images.npy            (N, S, S, 3) uint8
    landmarks.npy         (N, 68, 2) float32 pixels (project convention: pixel centres at +0.5)
    landmarks_valid.npy   (N, 68) float32
    now_landmarks.npy     (N, 7, 2) float32
    params_<field>.npy    one array per ``FaceParams`` field, float32
    seeds.npy             (N,) int64
    manifest.json         split, seed offset, size, count, config; written last (marks a complete pool)
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

POOL_VERSION = 1
ARRAYS = ("images", "landmarks", "landmarks_valid", "now_landmarks", "seeds")


class PoolError(RuntimeError):
    """A pool folder that is missing, incomplete or inconsistent."""


@dataclass
class PoolSpec:
    """What to render into a pool."""

    out: Path
    num: int
    image_size: int = 128
    split: str = "train"
    seed_offset: int = 0
    batch_size: int = 32
    workers: int = 2
    config: dict[str, Any] | None = None  # SyntheticConfig fields
    face_model: str | None = None  # FLAME-layout model file; None = the built-in stand-in


def _face_model(spec: PoolSpec):
    from regressor.face_model import build_face_model

    return build_face_model(spec.face_model)


def _allocate(spec: PoolSpec, param_shapes: dict[str, tuple[int, ...]]) -> None:
    n, s = spec.num, spec.image_size
    shapes = {"images": ((n, s, s, 3), np.uint8), "landmarks": ((n, 68, 2), np.float32),
              "landmarks_valid": ((n, 68), np.float32), "now_landmarks": ((n, 7, 2), np.float32),
              "seeds": ((n,), np.int64)}
    shapes.update({f"params_{k}": ((n, *v), np.float32) for k, v in param_shapes.items()})
    for name, (shape, dtype) in shapes.items():
        np.lib.format.open_memmap(spec.out / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()


def _render_range(spec: PoolSpec, start: int, stop: int, progress=None) -> None:
    """Render samples [start, stop) into the pool's arrays (one process, one thread)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from regressor.synthetic.splits import sample_seed
    from regressor.synthetic.generator import SyntheticFaceGenerator
    from regressor.synthetic.config import SyntheticConfig

    config = SyntheticConfig.from_dict(spec.config or {})
    generator = SyntheticFaceGenerator(_face_model(spec), spec.image_size, config)
    arrays = {p.stem: np.load(p, mmap_mode="r+") for p in spec.out.glob("*.npy")}
    for begin in range(start, stop, spec.batch_size):
        end = min(begin + spec.batch_size, stop)
        batch = generator.generate([sample_seed(spec.split, i, spec.seed_offset) for i in range(begin, end)])
        arrays["images"][begin:end] = (batch.image.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy()
        arrays["landmarks"][begin:end] = batch.landmarks.numpy()
        arrays["landmarks_valid"][begin:end] = batch.landmarks_valid.numpy()
        arrays["now_landmarks"][begin:end] = batch.now_landmarks.numpy()
        arrays["seeds"][begin:end] = batch.seeds.numpy()
        for name, value in batch.params.items():
            arrays[f"params_{name}"][begin:end] = value.reshape(end - begin, *arrays[f"params_{name}"].shape[1:]).numpy()
        if progress is not None:
            progress.put(end - begin)
    for array in arrays.values():
        array.flush()
    torch.set_num_threads(previous_threads)


def write_pool(spec: PoolSpec, show_progress: bool = True) -> dict[str, Any]:
    """Render ``spec.num`` faces into ``spec.out`` with ``spec.workers`` processes; returns the manifest."""
    from regressor.synthetic.generator import SyntheticFaceGenerator

    spec.out = Path(spec.out)
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "manifest.json").unlink(missing_ok=True)
    probe = SyntheticFaceGenerator(_face_model(spec), 16).generate([0])
    _allocate(spec, {k: tuple(v.shape[1:]) for k, v in probe.params.items()})
    started = time.perf_counter()
    if spec.workers == 1:  # in-process: no start-up cost (tests, small pools)
        _render_range(spec, 0, spec.num)
        return _finish(spec, started)
    bounds = np.linspace(0, spec.num, spec.workers + 1).round().astype(int)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_render_range, args=(spec, int(a), int(b), queue))
             for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for p in procs:
        p.start()
    from tqdm import tqdm

    with tqdm(total=spec.num, disable=not show_progress, desc="pool", unit="face") as bar:
        done = 0
        while done < spec.num:
            if not any(p.is_alive() for p in procs) and queue.empty():
                break
            try:
                n = queue.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty; loop re-checks the workers
                continue
            done += n
            bar.update(n)
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed or done < spec.num:
        raise PoolError(f"pool rendering failed (worker exit codes {failed}, {done}/{spec.num} faces written)")
    return _finish(spec, started)


def _finish(spec: PoolSpec, started: float) -> dict[str, Any]:
    manifest = {"version": POOL_VERSION, "split": spec.split, "seed_offset": spec.seed_offset, "num": spec.num,
                "image_size": spec.image_size, "config": spec.config or {},
                "face_model": spec.face_model or "builtin",
                "seconds": round(time.perf_counter() - started, 1)}
    (spec.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


class FacePool(Dataset):
    """Samples of a pool folder, memory-mapped; yields the project's sample dict (image float [0,1])."""

    def __init__(self, folder: str | Path, limit: int | None = None):
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise PoolError(f"{self.folder} is not a complete face pool: manifest.json is missing "
                            f"(render one with `regressor synth --pool --out {self.folder}`)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise PoolError(f"{manifest_path} is not valid JSON: {error}") from error
        self.arrays: dict[str, np.ndarray] = {}
        for path in sorted(self.folder.glob("*.npy")):
            try:
                self.arrays[path.stem] = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as error:
                raise PoolError(f"pool array {path} cannot be read: {error}") from error
        missing = [a for a in ARRAYS if a not in self.arrays]
        if missing:
            raise PoolError(f"pool {self.folder} lacks {missing}")
        n = int(self.manifest.get("num", -1))
        wrong = {k: v.shape[0] for k, v in self.arrays.items() if v.shape[0] != n}
        if wrong:
            raise PoolError(f"pool {self.folder}: manifest says {n} faces but arrays hold {wrong}")
        size = int(self.manifest["image_size"])
        if self.arrays["images"].shape[1:] != (size, size, 3):
            raise PoolError(f"pool {self.folder}: images are {self.arrays['images'].shape[1:]}, "
                            f"manifest says {size}x{size}x3")
        self.num = n if limit is None else min(n, int(limit))
        self.image_size = size

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num:
            raise IndexError(f"pool index {index} out of range [0, {self.num})")
        a = self.arrays
        image = torch.from_numpy(np.array(a["images"][index])).permute(2, 0, 1).float() / 255.0
        params = {k[len("params_"):]: torch.from_numpy(np.array(v[index])) for k, v in a.items()
                  if k.startswith("params_")}
        return {
            "image": image, "landmarks": torch.from_numpy(np.array(a["landmarks"][index])),
            "landmarks_valid": torch.from_numpy(np.array(a["landmarks_valid"][index])),
            "now_landmarks": torch.from_numpy(np.array(a["now_landmarks"][index])),
            "index": torch.tensor(index), "seed": torch.tensor(int(a["seeds"][index])),
            "name": f"{self.manifest['split']}_{index:07d}", "params": params,
        }
