"""Several face datasets as one: shared sample keys, and a weighted draw between them.

Synthetic samples carry ground truth (``vertices``, ``params``, ...) that real folders lack.
``default_collate`` needs every sample of a batch to have the same keys, so a mixed dataset
reduces each sample to ``COMMON_KEYS``; ``FaceBatch.from_dict`` treats the rest as optional.
The mix ratio is set by a ``WeightedRandomSampler`` (weight of a sample = weight of its
source / size of its source), so a source's share does not depend on how many files it has.
"""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, WeightedRandomSampler

COMMON_KEYS = ("image", "landmarks", "landmarks_valid", "mask", "index", "name")


class MixedFaceDataset(Dataset):
    """Concatenation of named sources; samples reduced to ``keys`` (plus ``source``: the source's position).

    Forwards batched fetches (``__getitems__``) to sources that have them (the synthetic
    dataset renders a whole batch at once).
    """

    def __init__(self, sources: dict[str, Dataset], keys: Sequence[str] = COMMON_KEYS):
        if not sources:
            raise ValueError("MixedFaceDataset needs at least one source")
        empty = [name for name, dataset in sources.items() if len(dataset) == 0]
        if empty:
            raise ValueError(f"MixedFaceDataset: sources {empty} are empty")
        self.names = list(sources)
        self.sources = [sources[name] for name in self.names]
        self.keys = tuple(keys)
        self.offsets = [0]
        for dataset in self.sources:
            self.offsets.append(self.offsets[-1] + len(dataset))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(source position, index inside that source) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"MixedFaceDataset index {index} out of range [0, {len(self)})")
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, index - self.offsets[source]

    def _reduce(self, sample: dict[str, Any], source: int) -> dict[str, Any]:
        missing = [k for k in self.keys if k not in sample]
        if missing:
            raise KeyError(f"source {self.names[source]!r} yields samples without keys {missing}")
        reduced = {k: sample[k] for k in self.keys}
        reduced["source"] = torch.tensor(source, dtype=torch.long)
        return reduced

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, local = self.locate(int(index))
        return self._reduce(self.sources[source][local], source)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        located = [self.locate(int(i)) for i in indices]
        out: list[dict[str, Any] | None] = [None] * len(indices)
        for source, dataset in enumerate(self.sources):
            positions = [k for k, (s, _) in enumerate(located) if s == source]
            if not positions:
                continue
            locals_ = [located[k][1] for k in positions]
            fetch = getattr(dataset, "__getitems__", None)
            samples = fetch(locals_) if fetch is not None else [dataset[i] for i in locals_]
            for k, sample in zip(positions, samples):
                out[k] = self._reduce(sample, source)
        return out  # type: ignore[return-value]

    def sample_weights(self, weights: dict[str, float]) -> torch.Tensor:
        """(N,) per-sample weights giving source ``name`` a share ``weights[name] / sum(weights)``."""
        unknown = sorted(set(weights) - set(self.names))
        missing = sorted(set(self.names) - set(weights))
        if unknown or missing:
            raise ValueError(
                f"mix weights must name exactly the sources {self.names}; unknown {unknown}, missing {missing}"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {weights}")
        per_sample = torch.empty(len(self), dtype=torch.double)
        for source, name in enumerate(self.names):
            start, stop = self.offsets[source], self.offsets[source + 1]
            per_sample[start:stop] = weights[name] / (stop - start)
        return per_sample


def weighted_source_sampler(
    dataset: MixedFaceDataset, weights: dict[str, float], num_samples: int, seed: int
) -> WeightedRandomSampler:
    """Draws ``num_samples`` indices per epoch, with replacement, reproducibly from ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        dataset.sample_weights(weights), num_samples=num_samples, replacement=True, generator=generator
    )
