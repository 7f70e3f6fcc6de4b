"""``benchmarks.recipe_seeds --jaw-bias``: where the landmark term plus the jaw prior puts an open jaw."""
import pytest

from benchmarks.recipe_seeds import jaw_prior_bias


def test_without_the_prior_the_landmarks_read_the_true_opening_and_a_strong_prior_closes_it():
    figures = jaw_prior_bias(weights=(0.0, 1.0), faces=24, size=64)
    truth = figures["true_openings"]
    assert truth, "no open mouth among the 24 val faces"
    # Every other parameter is the truth, so without a prior the best opening is the true one (0.005 rad grid).
    assert figures["read_openings"]["0.0"] == pytest.approx(truth, abs=0.006)
    # A prior as strong as the landmark term itself closes each of them most of the way.
    assert all(read < 0.5 * true for read, true in zip(figures["read_openings"]["1.0"], truth))
