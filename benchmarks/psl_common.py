"""Shared pieces of ``benchmarks.psl_effect``: budgets, the held-out face sets, NoW scoring, statistics.

The benchmark faces are the synthetic ``benchmark`` split (``SPLIT_SEEDS["benchmark"] + i``, a
seed range no training config uses) with geometry beyond the model switched on, so the ground
truth "scan" (model mesh + displacement) is never exactly reachable by the model. Generated
sets are cached under ``outputs/psl_effect_cache`` (keyed by the generator's source code and
the set's parameters), so repeated runs and both conditions see the very same pixels.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from regressor.synthetic.displacement import displace_landmarks
from regressor.synthetic.splits import sample_seed
from regressor.synthetic.generator import SyntheticFaceGenerator
from regressor.synthetic.config import SyntheticConfig
from regressor.evaluation.now import NowResult, now_error

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / "outputs" / "psl_effect_cache"
GENERATOR_SOURCES = ("regressor/data", "regressor/face_model", "regressor/render")


@dataclass(frozen=True)
class Budget:
    """How much work one benchmark run does (both conditions always get the same).

    Attributes:
        image_size: image side (px) of the benchmark and training faces.
        benchmark_images: held-out faces fitted and used to evaluate the regressors.
        fit_steps_scale: multiplies every stage's steps of the fitting config.
        fit_batch: images fitted at once (fitting is per sample; this only trades memory for speed).
        refine_steps: NoW scan-to-mesh refinement steps (NoW: until convergence; 50 is ample here).
        train_samples: size of the regression fine-tuning pool (``train`` split seeds, at the
            baseline regressor's image size, with the ground truth the hybrid losses read).
        train_steps, train_batch: fine-tuning optimisation steps and batch size (both arms).
        train_seeds: one with/without pair of fine-tuned regressors per seed (spread = seed-to-seed).
        scan_stride: score every n-th ground-truth scan point (1 = all, the NoW protocol; more only in
            the smoke test, where the exact point-to-surface search dominates the run time).

    The regressor's architecture and image size are the baseline's (``--baseline``), not the budget's.
    """

    name: str
    image_size: int
    benchmark_images: int
    fit_steps_scale: float
    fit_batch: int
    refine_steps: int
    train_samples: int
    train_steps: int
    train_batch: int
    train_seeds: tuple[int, ...]
    scan_stride: int = 1

    def to_dict(self) -> dict:
        return {**asdict(self), "train_seeds": list(self.train_seeds)}


BUDGETS: dict[str, Budget] = {
    # a test of the plumbing only: numbers are meaningless
    "smoke": Budget("smoke", 32, 2, 0.05, 2, 0, 4, 2, 2, (0,), scan_stride=8),
    # >= 12 faces (paired bootstrap CI); half the fitting schedule, one fine-tuning pair
    "quick": Budget("quick", 64, 12, 0.5, 6, 50, 256, 40, 16, (0,)),
    # the README figures: >= 30 faces (10 gave 90% intervals of about +-10 points), 3/4 of the shipped
    # fitting schedule; the paper's regression recipe: fine-tune the baseline with and without the
    # critic at an equal budget (the quickstart's 150 steps of 16) over 3 seeds
    "full": Budget("full", 64, 30, 0.75, 10, 50, 512, 150, 16, (0, 1, 2)),
}


@dataclass
class FaceSet:
    """Synthetic faces with their ground truth (all tensors batched along dim 0).

    Attributes:
        image: (B, 3, S, S) in [0, 1].
        landmarks: (B, 68, 2) px; landmarks_valid: (B, 68); mask: (B, 1, S, S).
        vertices: (B, V, 3) ground-truth scan (model mesh + displacement), metres.
        now_landmarks3d: (B, 7, 3) the scan's NoW landmarks (moved with the displacement).
        seeds: (B,) generator seeds.
    """

    image: Tensor
    landmarks: Tensor
    landmarks_valid: Tensor
    mask: Tensor
    vertices: Tensor
    now_landmarks3d: Tensor
    seeds: Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    def slice(self, start: int, stop: int) -> "FaceSet":
        return FaceSet(**{k: v[start:stop] for k, v in self.__dict__.items()})

    def sample_dicts(self) -> list[dict[str, Tensor]]:
        """One training sample dict per face (the keys ``FaceBatch.from_dict`` reads)."""
        return [{"image": self.image[i], "landmarks": self.landmarks[i], "landmarks_valid": self.landmarks_valid[i],
                 "mask": self.mask[i], "index": torch.tensor(i)} for i in range(len(self))]


def benchmark_config() -> SyntheticConfig:
    """Every realism effect on, geometry beyond the model included."""
    config = SyntheticConfig()
    if not config.extra_geometry:
        raise RuntimeError("benchmark: SyntheticConfig().extra_geometry must be on (geometry beyond the model)")
    return config


def _source_hash() -> str:
    digest = hashlib.sha256()
    for folder in GENERATOR_SOURCES:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def face_set(face_model, split: str, count: int, image_size: int, cache: bool = True, chunk: int = 8,
             cache_dir: Path = CACHE_DIR, config: SyntheticConfig | None = None) -> FaceSet:
    """``count`` faces of ``split`` (seeds ``SPLIT_SEEDS[split] + i``), generated once and cached.

    Cached in blocks of ``chunk`` seeds, so budgets of different sizes share their common faces.
    ``config`` replaces the benchmark distribution (e.g. a shifted one; it must keep
    ``extra_geometry`` on so that the scan stays beyond the model).
    """
    config = config or benchmark_config()
    # another distribution's files are told apart by name too (the key alone already differs)
    name = split if config.to_dict() == benchmark_config().to_dict() else f"{split}-shifted"
    source = _source_hash()
    chunk = min(chunk, count)
    generator = None
    parts = []
    for start in range(0, count, chunk):
        key = hashlib.sha256(repr((split, start, chunk, image_size, config.to_dict(), source)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{name}_{start}-{start + chunk}_{image_size}px_{key}.pt"
        if cache and path.is_file():
            part = FaceSet(**torch.load(path, map_location="cpu", weights_only=True))
        else:
            generator = generator or SyntheticFaceGenerator(face_model, image_size, config)
            part = _generate(face_model, generator, [sample_seed(split, i) for i in range(start, start + chunk)])
            if cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_suffix(".tmp")
                torch.save(part.__dict__, temporary)
                temporary.replace(path)
        parts.append(part)
    faces = FaceSet(**{k: torch.cat([getattr(p, k) for p in parts]) for k in parts[0].__dict__})
    return faces.slice(0, count)


def training_config() -> SyntheticConfig:
    """The distribution the regressors (and the critic) train on: the generator's default."""
    return SyntheticConfig()


class SampleList(torch.utils.data.Dataset):
    """A list of sample dicts (what ``FaceBatch.from_dict`` reads after collation) as a Dataset."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def training_pool(face_model, count: int, image_size: int, cache: bool = True, chunk: int = 64,
                  cache_dir: Path = CACHE_DIR, config: SyntheticConfig | None = None) -> SampleList:
    """``count`` ``train``-split samples with full ground truth (vertices, params), cached.

    What the regression arm fine-tunes on: ``SyntheticFaceDataset`` samples (the keys the hybrid
    losses read: ``vertices`` and ``params`` besides image and landmarks), made with ``face_model``
    (the regressor's, so the parameter sizes match its heads) and kept in memory. Cached in blocks
    of ``chunk`` seeds keyed by the generator's source, the config and the face model's sizes.
    """
    from torch.utils.data import default_collate

    from regressor.synthetic.generator import SyntheticFaceDataset

    config = config or training_config()
    model_key = (type(face_model).__name__, face_model.num_vertices, face_model.n_shape, face_model.n_expression,
                 face_model.n_albedo)
    source = _source_hash()
    chunk = min(chunk, count)
    dataset = None
    samples: list[dict] = []
    for start in range(0, count, chunk):
        key = hashlib.sha256(repr(("train-pool", start, chunk, image_size, config.to_dict(), model_key, source)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"trainpool_{start}-{start + chunk}_{image_size}px_{key}.pt"
        if cache and path.is_file():
            batch = torch.load(path, map_location="cpu", weights_only=True)
        else:
            dataset = dataset or SyntheticFaceDataset(-(-count // chunk) * chunk, image_size, "train", config=config,
                                                      face_model=face_model)
            items = dataset.__getitems__(list(range(start, start + chunk)))
            batch = default_collate([{k: v for k, v in item.items() if k != "name"} for item in items])
            if cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_suffix(".tmp")
                torch.save(batch, temporary)
                temporary.replace(path)
        samples += [_index(batch, i) for i in range(chunk)]
    return SampleList(samples[:count])


def _index(batch, i: int):
    if isinstance(batch, dict):
        return {k: _index(v, i) for k, v in batch.items()}
    return batch[i]


@torch.no_grad()
def _generate(face_model, generator: SyntheticFaceGenerator, seeds: list[int]) -> FaceSet:
    batch = generator.generate(seeds)
    mesh = face_model(batch.params)  # the model part of the scan (the camera does not move the mesh)
    scan_landmarks = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, batch.displacement)
    return FaceSet(image=batch.image, landmarks=batch.landmarks, landmarks_valid=batch.landmarks_valid,
                   mask=batch.mask, vertices=batch.vertices, now_landmarks3d=scan_landmarks, seeds=batch.seeds)


def score_meshes(vertices: Tensor, now_landmarks3d: Tensor, faces: Tensor, truth: FaceSet,
                 refine_steps: int, scan_stride: int = 1) -> list[NowResult]:
    """NoW error of each predicted mesh (B,V,3) with its NoW landmarks (B,7,3) against ``truth``.

    ``scan_stride`` > 1 scores every n-th scan point only (a plumbing test's shortcut, not NoW).
    """
    return [now_error(vertices[i], faces, now_landmarks3d[i], truth.vertices[i, ::scan_stride], truth.now_landmarks3d[i],
                      refine_steps=refine_steps) for i in range(vertices.shape[0])]


def summarise(results: list[NowResult]) -> dict:
    """Pooled NoW statistics (mm) plus the per-region breakdown and per-image medians."""
    pooled = NowResult.cat(results)
    return {**pooled.summary(), "points": int(pooled.errors_mm.numel()),
            "per_image_median_mm": pooled.per_sample_median_mm}


def compare(without: list[NowResult], with_: list[NowResult], bootstrap: int = 500, seed: int = 0) -> dict:
    """Headline numbers of one mode: medians, means, the relative reductions and their uncertainty.

    ``reduction = 1 - with / without`` (positive = the perceptual term helps). The 90% interval
    resamples *images* (points of one face are not independent), pairing the two conditions.
    """
    a, b = summarise(without), summarise(with_)
    out = {
        "median_mm_without": a["median_mm"], "median_mm_with": b["median_mm"],
        "reduction": 1.0 - b["median_mm"] / a["median_mm"],
        "mean_mm_without": a["mean_mm"], "mean_mm_with": b["mean_mm"],
        "mean_reduction": 1.0 - b["mean_mm"] / a["mean_mm"],
        "std_mm_without": a["std_mm"], "std_mm_with": b["std_mm"],
        "images_improved": int(sum(y < x for x, y in zip(a["per_image_median_mm"], b["per_image_median_mm"]))),
        "images": len(without),
        "without": a, "with": b,
    }
    if bootstrap and len(without) > 1:
        generator = torch.Generator().manual_seed(seed)
        reductions = []
        for _ in range(bootstrap):
            pick = torch.randint(len(without), (len(without),), generator=generator).tolist()
            x = torch.cat([without[i].errors_mm for i in pick]).median()
            y = torch.cat([with_[i].errors_mm for i in pick]).median()
            reductions.append(float(1.0 - y / x))
        values = torch.tensor(reductions)
        out["reduction_ci90"] = [float(values.quantile(0.05)), float(values.quantile(0.95))]
    return out
