"""Replay memory of rendered critic candidates (see ``RenderCache``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RenderedCandidates:
    """Grey renders of a CandidateSet: shaded (B, C, 1, H, W), mask (B, C, 1, H, W), error_mm / type_index (B, C)."""

    shaded: Tensor
    mask: Tensor
    error_mm: Tensor
    type_index: Tensor


class RenderCache:
    """Replay memory of rendered candidates, keyed by sample seed.

    Why: on shared CPUs rendering the negatives costs more than the critic's step, so a face's
    rendered candidates are reused in later epochs and re-drawn (new types, severities, light)
    with probability ``refresh_probability``. Stored as float16 / bool to keep memory small
    (2048 faces x 6 candidates x 64^2 px ~ 100 MB).
    """

    def __init__(self, refresh_probability: float = 0.3) -> None:
        self.refresh_probability = float(refresh_probability)
        self._store: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def stale(self, keys: list[int], generator: torch.Generator) -> list[int]:
        """Positions of ``keys`` that must be (re-)rendered now."""
        draws = torch.rand(len(keys), generator=generator).tolist()
        return [i for i, (k, u) in enumerate(zip(keys, draws)) if k not in self._store or u < self.refresh_probability]

    def put(self, keys: list[int], rendered: RenderedCandidates) -> None:
        for i, key in enumerate(keys):
            self._store[key] = (rendered.shaded[i].detach().to("cpu", torch.float16), rendered.mask[i].detach().cpu() > 0.5,
                                rendered.error_mm[i].detach().cpu(), rendered.type_index[i].detach().cpu())

    def get(self, keys: list[int], device) -> RenderedCandidates:
        items = [self._store[k] for k in keys]
        return RenderedCandidates(*(torch.stack([item[j] for item in items]).to(device) for j in range(4)))
