"""The critic's training objective and its ranking metrics (plain torch, no Lightning).

Why a ranking objective: a real/fake discriminator saturates (every negative gets the same low
score), so a regressor that uses it as a loss gets no gradient once it is "fake enough". Here the
score is asked to *order* geometries by their mean vertex error, with a margin that grows with the
error gap, so small improvements of a geometry raise the score by a proportionate amount:

* ``within``: hinge on all candidate pairs of one image, ``relu(m * (t_i - t_j) - (s_i - s_j))``
  for ``err_i < err_j`` where ``t = -log(1 + err / unit)`` is the calibrated target;
* ``cross``: the same hinge on pairs across images of the batch (makes scores comparable between
  images, which the AUC metric and a batch-mean loss need);
* ``regression``: smooth-L1 of the score to ``t`` (anchors the scale: score ~ -log(1 + err/unit)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CriticObjective:
    """Weights and margins of the critic loss (see module docstring).

    Attributes:
        error_unit_mm: the error unit of the target ``-log(1 + err/unit)``.
        margin: hinge margin per unit of target difference.
        min_gap: pairs whose target differs by less than this are ignored (near-ties).
        within_weight / cross_weight / regression_weight: term weights.
    """

    error_unit_mm: float = 1.0
    margin: float = 1.0
    min_gap: float = 0.05
    within_weight: float = 1.0
    cross_weight: float = 0.5
    regression_weight: float = 0.5

    def target(self, error_mm: Tensor) -> Tensor:
        return -torch.log1p(error_mm / self.error_unit_mm)

    def __call__(self, scores: Tensor, error_mm: Tensor) -> dict[str, Tensor]:
        """scores, error_mm (B, C) -> {"within", "cross", "regression", "total"} scalars."""
        target = self.target(error_mm)
        within = _pairwise_hinge(scores, target, self.margin, self.min_gap)
        cross = _pairwise_hinge(scores.reshape(1, -1), target.reshape(1, -1), self.margin, self.min_gap)
        regression = torch.nn.functional.smooth_l1_loss(scores, target)
        total = self.within_weight * within + self.cross_weight * cross + self.regression_weight * regression
        return {"within": within, "cross": cross, "regression": regression, "total": total}


def _pairwise_hinge(scores: Tensor, target: Tensor, margin: float, min_gap: float) -> Tensor:
    """Mean hinge over ordered pairs of each row: (R, N) -> scalar."""
    gap = target[:, :, None] - target[:, None, :]  # > 0 where i is better than j
    valid = gap > min_gap
    if not valid.any():
        return scores.sum() * 0.0
    violation = torch.relu(margin * gap - (scores[:, :, None] - scores[:, None, :]))
    return violation[valid].mean()


def auc(positive_scores: Tensor, negative_scores: Tensor) -> float:
    """P(score(positive) > score(negative)), ties count 1/2 (Mann-Whitney U). NaN if a side is empty."""
    if positive_scores.numel() == 0 or negative_scores.numel() == 0:
        return float("nan")
    p = positive_scores.detach().double().reshape(-1, 1)
    n = negative_scores.detach().double().reshape(1, -1)
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties)."""
    if x.numel() < 2:
        return float("nan")
    rx, ry = _ranks(x.detach().double()), _ranks(y.detach().double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).clamp(min=1e-12)
    return float((rx * ry).sum() / denominator)


def _ranks(x: Tensor) -> Tensor:
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.cpu().numpy())).to(x)
