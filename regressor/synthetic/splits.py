"""Named seed ranges for synthetic data.

A synthetic sample is a pure function of one integer seed. Splits are therefore disjoint
*seed ranges*: ``seed = SPLIT_SEEDS[split] + seed_offset + index``. Each range is
``SPLIT_STRIDE`` (10 million) seeds wide, so a split never reaches into the next one for any
realistic size; ``sample_seed`` refuses to cross a range boundary. Training configs use only
``TRAINING_SPLITS``; the held-out ranges (val, test, benchmark, critic_val) stay unseen.
"""
from __future__ import annotations

SPLIT_STRIDE = 10_000_000
SPLIT_SEEDS: dict[str, int] = {
    "train": 0,
    "val": 10_000_000,
    "test": 20_000_000,
    "benchmark": 30_000_000,
    "critic_train": 40_000_000,
    "critic_val": 50_000_000,
}
TRAINING_SPLITS = ("train", "critic_train")
HELD_OUT_SPLITS = ("val", "test", "benchmark", "critic_val")
# Sizes the shipped configs use; tests check these never overlap.
DEFAULT_SPLIT_SIZES: dict[str, int] = {
    "train": 100_000, "val": 1_000, "test": 1_000, "benchmark": 500,
    "critic_train": 50_000, "critic_val": 1_000,
}


def split_base_seed(split: str) -> int:
    """First seed of ``split``; a clear error for unknown names."""
    if split not in SPLIT_SEEDS:
        raise KeyError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    return SPLIT_SEEDS[split]


def sample_seed(split: str, index: int, seed_offset: int = 0) -> int:
    """Seed of sample ``index`` of ``split`` (offset by ``seed_offset``), kept inside the split's range."""
    local = seed_offset + index
    if not 0 <= local < SPLIT_STRIDE:
        raise ValueError(
            f"split {split!r}: seed_offset + index = {local} leaves the split's seed range [0, {SPLIT_STRIDE})"
        )
    return split_base_seed(split) + local


def split_seed_range(split: str, num_samples: int, seed_offset: int = 0) -> range:
    """All seeds that ``num_samples`` samples of ``split`` use."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples == 0:
        return range(0)
    first = sample_seed(split, 0, seed_offset)
    sample_seed(split, num_samples - 1, seed_offset)  # range check of the last one
    return range(first, first + num_samples)


def overlapping_splits(sizes: dict[str, int] | None = None, offsets: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """Pairs of splits whose seed ranges intersect for the given sizes (empty = all disjoint)."""
    sizes = DEFAULT_SPLIT_SIZES if sizes is None else sizes
    offsets = offsets or {}
    ranges = {name: split_seed_range(name, n, offsets.get(name, 0)) for name, n in sizes.items()}
    names = sorted(ranges)
    clashes = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = ranges[a], ranges[b]
            if len(ra) and len(rb) and ra.start < rb.stop and rb.start < ra.stop:
                clashes.append((a, b))
    return clashes
