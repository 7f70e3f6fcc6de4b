"""benchmarks.regression: the arms and keys the README reports, on a tiny exported regressor."""
import json

import torch

from benchmarks.regression import main as regression_main
from regressor.io.regressor_file import export_regressor
from regressor.pipeline import build_pipeline

TINY = dict(backbone="resnet10t", n_shape=100, n_expression=50, n_albedo=10, image_size=32,
            encoder={"neck": "spatial"})


def test_regression_benchmark_reports_each_arm_beside_the_mean_face(tmp_path):
    torch.manual_seed(0)
    checkpoint = export_regressor(build_pipeline(**TINY).state_dict(), TINY, tmp_path / "regressor.ckpt")
    out = tmp_path / "bench.json"
    assert regression_main(["--checkpoint", str(checkpoint), "--faces", "2", "--refine-steps", "2", "--no-fitting",
                            "--json", str(out), "--grid", str(tmp_path / "grid.png")]) == 0
    figures = json.loads(out.read_text())
    for key in ("median_mm", "vertex_error_aligned_mm"):
        assert figures["mean_face"][key] > 0
    # an untrained regressor predicts the mean face (zero heads): ratio 1 exactly
    assert abs(figures["shipped"]["ratio_to_mean_face"] - 1.0) < 1e-3
    assert "shipped_ratio_to_mean_face" in figures["shifted"] and figures["seconds"] > 0
    assert (tmp_path / "grid.png").is_file()
