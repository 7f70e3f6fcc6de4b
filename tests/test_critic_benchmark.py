"""benchmarks.critic measures the four critic metrics for any checkpoint (tiny run, random tiny critic)."""
from __future__ import annotations

import json

import torch

from benchmarks.critic import main as benchmark_main
from regressor.models.critic import ShapeCritic


def test_benchmark_writes_the_four_metrics_with_valid_ranges(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "critic.pt"
    ShapeCritic("resnet10t", 32, {"channels": [8, 8, 16, 16], "stem_width": 8}).save_checkpoint(checkpoint, {})
    out = tmp_path / "bench.json"
    assert benchmark_main(["--checkpoint", str(checkpoint), "--num-faces", "3", "--gradient-faces", "2",
                           "--gradient-steps", "2", "--op-faces", "2", "--topology-faces", "1", "--fit-cache", "",
                           "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert 0.0 <= figures["auc_2mm"] <= 1.0 and figures["num_negatives_2mm"] > 0
    assert -1.0 <= figures["spearman"] <= 1.0
    assert figures["topology_mean_abs_delta"] >= 0 and figures["subdivided_faces"] == 4 * figures["original_faces"]
    assert 0.0 <= figures["gradient_fraction"] <= 1.0 and figures["gradient_num_faces"] == 2
    assert set(figures["per_type"]) >= {"identity", "flatten", "exaggerate"}
    for key in ("operating_point.truth_wins_fraction", "operating_point.monotone_fraction",
                "interior_sensitivity_fraction", "topology.true_wins_fraction"):
        assert 0.0 <= figures[key] <= 1.0, key
    for key in ("operating_point.gradient_cosine_critic", "operating_point.gradient_cosine_landmarks"):
        assert -1.0 <= figures[key] <= 1.0, key
    assert figures["operating_point.num_faces"] == 2 and figures["topology.num_faces"] == 1
    # the images are at the critic's own size; the fits at the shared fit size, whatever the critic's
    assert figures["image_size"] == 32 and figures["operating_point.fit"]["size"] == 64
    printed = capsys.readouterr().out
    for name in ("auc_2mm", "spearman", "topology_ratio", "gradient_fraction"):
        assert name in printed
