"""benchmarks.critic: its figures against known answers.

* ``ranking_figures`` on hand-made scores whose ranking is known: an oracle (score = -error) gives
  AUC 1 and Spearman -1, its mirror AUC 0 and Spearman +1, a constant AUC 0.5; only negatives of
  >= 2 mm count towards ``auc_2mm``.
* the whole benchmark (tiny run) with a critic whose score is a constant: every ranking figure is a
  tie (AUC 0.5, Spearman 0, gap 0), the gradient probe cannot move (fraction 0, error unchanged).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmarks.critic import SEVERITIES, ranking_figures
from benchmarks.critic import main as benchmark_main
from regressor.critic.negatives import negative_types
from regressor.models.critic import ShapeCritic


def graded_errors(num_faces: int = 3) -> SimpleNamespace:
    """Candidates laid out as ``graded_candidates`` lays them out: the positive (type -1, 0 mm), then
    every negative type at each severity, errors all distinct and rising with severity."""
    types = len(negative_types())
    type_index = torch.cat([torch.tensor([-1]), torch.arange(types).repeat_interleave(len(SEVERITIES))])
    severity = torch.cat([torch.zeros(1), torch.tensor(SEVERITIES).repeat(types)])
    error = torch.stack([
        torch.cat([torch.zeros(1), severity[1:] * 4.0 + 0.01 * type_index[1:] + 0.001 * face]) for face in range(num_faces)])
    return SimpleNamespace(error_mm=error, type_index=type_index.repeat(num_faces, 1))


def test_ranking_figures_of_known_rankings():
    candidates = graded_errors()
    error = candidates.error_mm
    hard = (candidates.type_index >= 0) & (error >= 2.0)
    oracle = ranking_figures(-error, candidates)
    assert oracle["auc_2mm"] == 1.0 and oracle["spearman"] == pytest.approx(-1.0)
    assert oracle["num_negatives_2mm"] == int(hard.sum()) > 0
    assert oracle["pos_neg_gap"] == pytest.approx(float(error[hard].mean()))
    assert all(t["auc"] in (1.0, None) and t["spearman"] == pytest.approx(-1.0) for t in oracle["per_type"].values())
    mirror = ranking_figures(error, candidates)
    assert mirror["auc_2mm"] == 0.0 and mirror["spearman"] == pytest.approx(1.0)
    constant = ranking_figures(torch.zeros_like(error), candidates)
    assert constant["auc_2mm"] == 0.5 and constant["spearman"] == 0.0 and constant["pos_neg_gap"] == 0.0
    # easy negatives (< 2 mm) scored above the positive do not count towards auc_2mm ...
    easy_win = torch.where(hard, -error, error.new_full(error.shape, 1.0))
    easy_win[:, 0] = 0.0
    assert ranking_figures(easy_win, candidates)["auc_2mm"] == 1.0
    # ... while half of the hard ones scored above it give exactly 0.5
    flipped = -error.clone()
    hard_columns = hard.nonzero()
    above = hard_columns[: len(hard_columns) // 2]
    flipped[above[:, 0], above[:, 1]] = 1.0
    assert ranking_figures(flipped, candidates)["auc_2mm"] == pytest.approx(0.5, abs=1 / len(hard_columns))


def test_benchmark_of_a_constant_critic_gives_the_known_figures(tmp_path, capsys):
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", 32, {"channels": [8, 8, 16, 16], "stem_width": 8})
    nn.init.zeros_(critic.head.weight)  # the score is the bias, whatever the image and the render
    nn.init.constant_(critic.head.bias, 0.25)
    checkpoint = tmp_path / "critic.pt"
    critic.save_checkpoint(checkpoint, {})
    out = tmp_path / "bench.json"
    assert benchmark_main(["--checkpoint", str(checkpoint), "--num-faces", "3", "--gradient-faces", "2",
                           "--gradient-steps", "2", "--op-faces", "2", "--topology-faces", "1", "--fit-cache", "",
                           "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    # ties everywhere: the Mann-Whitney AUC of a constant is exactly 1/2, its rank correlation 0
    assert figures["auc_2mm"] == 0.5 and figures["spearman"] == 0.0 and figures["pos_neg_gap"] == 0.0
    assert figures["num_negatives_2mm"] > 0
    assert all(t["auc"] in (0.5, None) and t["spearman"] == 0.0 for t in figures["per_type"].values())
    assert set(figures["per_type"]) == set(negative_types())
    assert figures["topology_mean_abs_delta"] == 0.0 and figures["subdivided_faces"] == 4 * figures["original_faces"]
    assert figures["topology.face_mask_auc"] == 0.5 and figures["topology.remeshed_auc"] == 0.5
    # no gradient: the probe's faces do not move, so none got better
    assert figures["gradient_score_start"] == figures["gradient_score_end"] == pytest.approx(0.25)
    assert figures["gradient_fraction"] == 0.0 and figures["gradient_num_faces"] == 2
    assert figures["gradient_error_end_mm"] == pytest.approx(figures["gradient_error_start_mm"], rel=1e-6)
    assert figures["gradient_error_start_mm"] > 0.5  # the probe starts from perturbed faces
    # the truth never strictly beats a tie, and a flat score has no direction
    assert figures["operating_point.truth_wins_fraction"] == 0.0 and figures["operating_point.gradient_cosine_critic"] == 0.0
    assert figures["operating_point.num_faces"] == 2 and figures["topology.num_faces"] == 1
    # the images are at the critic's own size; the fits at the shared fit size, whatever the critic's
    assert figures["image_size"] == 32 and figures["operating_point.fit"]["size"] == 64
    printed = capsys.readouterr().out
    assert "auc_2mm: 0.500" in printed and "spearman: 0.000" in printed
