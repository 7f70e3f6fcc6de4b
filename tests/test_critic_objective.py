"""The critic's ranking objective and metrics, on a tiny model and a toy batch."""
from __future__ import annotations

import pytest
import torch

from regressor.models.critic import ShapeCritic
from regressor.critic.objective import CriticObjective, auc, spearman

ERRORS_MM = torch.tensor([0.0, 1.0, 3.0, 8.0])


def test_auc_counts_correctly_ordered_pairs_and_half_ties():
    assert auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auc(torch.tensor([0.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert auc(torch.tensor([1.0]), torch.tensor([1.0, 0.0])) == 0.75


def test_spearman_is_minus_one_for_a_monotonically_falling_score():
    error = torch.tensor([0.0, 1.0, 2.0, 5.0, 9.0])
    assert spearman(-error.exp(), error) == pytest.approx(-1.0)
    assert spearman(error, error) == pytest.approx(1.0)


def test_ranking_terms_vanish_when_scores_follow_the_error_with_margin():
    objective = CriticObjective(margin=1.0)
    errors = ERRORS_MM.repeat(3, 1)
    well_ordered = 2.0 * objective.target(errors)  # twice the required spacing
    losses = objective(well_ordered, errors)
    assert losses["within"] == 0 and losses["cross"] == 0
    reversed_scores = -well_ordered
    assert objective(reversed_scores, errors)["within"] > 1.0


def test_margin_grows_with_the_error_gap():
    objective = CriticObjective(margin=1.0, cross_weight=0.0, regression_weight=0.0)
    flat_scores = torch.zeros(1, 2)
    small_gap = objective(flat_scores, torch.tensor([[0.0, 1.0]]))["within"]
    large_gap = objective(flat_scores, torch.tensor([[0.0, 10.0]]))["within"]
    assert large_gap > 2 * small_gap > 0


def _toy_batch(batch: int = 6, size: int = 32):
    """Images and 'renders' that match the image the worse, the larger the candidate's error."""
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool2d(torch.rand(batch, 3, size, size, generator=generator), 5, 1, 2)
    grey = image.mean(dim=1, keepdim=True)
    noise = torch.randn(batch, len(ERRORS_MM), 1, size, size, generator=generator)
    shaded = (grey[:, None] + 0.05 * ERRORS_MM[None, :, None, None, None] * noise).clamp(0, 1)
    return image, shaded, ERRORS_MM.repeat(batch, 1)


def _scores(critic, image, shaded):
    b, c = shaded.shape[:2]
    return critic(image.repeat_interleave(c, dim=0), shaded.flatten(0, 1)).reshape(b, c)


def test_a_few_steps_lower_the_objective_and_improve_the_ranking_on_a_toy_batch():
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", image_size=32, backbone_kwargs={"channels": [8, 16, 16, 32], "stem_width": 8})
    objective = CriticObjective()
    image, shaded, errors = _toy_batch()
    critic.eval()
    with torch.no_grad():
        before_scores = _scores(critic, image, shaded)
    before_loss = float(objective(before_scores, errors)["total"])
    before_rank = sum(spearman(before_scores[i], errors[i]) for i in range(len(errors))) / len(errors)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    critic.train()
    for _ in range(25):
        loss = objective(_scores(critic, image, shaded), errors)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    critic.eval()
    with torch.no_grad():
        after_scores = _scores(critic, image, shaded)
    after_loss = float(objective(after_scores, errors)["total"])
    after_rank = sum(spearman(after_scores[i], errors[i]) for i in range(len(errors))) / len(errors)
    assert after_loss < 0.7 * before_loss, (before_loss, after_loss)
    assert after_rank < before_rank and after_rank < -0.8, (before_rank, after_rank)
