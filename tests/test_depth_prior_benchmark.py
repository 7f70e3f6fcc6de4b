"""benchmarks.depth_prior: the held-out fit tells a predictable target from an unpredictable one."""
from __future__ import annotations

import json

import torch

from benchmarks.depth_prior import held_out_fit, main


def test_the_held_out_fit_separates_a_linear_target_from_noise():
    generator = torch.Generator().manual_seed(0)
    features = torch.cat([torch.randn(400, 5, generator=generator), torch.ones(400, 1)], dim=1)
    linear = features @ torch.tensor([0.3, -0.2, 0.1, 0.05, 0.4, 2.0])
    noise = 2.0 + torch.randn(400, generator=generator)
    assert held_out_fit(features, linear)["r2"] > 0.99
    assert held_out_fit(features, noise)["r2"] < 0.1
    assert held_out_fit(features, noise)["residual"] > 0.9 * held_out_fit(features, noise)["spread"]


def test_the_benchmark_writes_both_measures(tmp_path, capsys):
    out = tmp_path / "prior.json"
    assert main(["--faces", "400", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for name in ("nose_protrusion", "landmark_depth_spread"):
        assert figures[name]["mean"] > 0 and figures[name]["r2"] <= 1.0
        assert figures[name]["residual"] >= 0 and figures[name]["spread"] > 0
    assert "nose_protrusion" in capsys.readouterr().out


def test_the_regressor_reading_is_measured_beside_the_mean_face(tmp_path, capsys):
    out = tmp_path / "prior.json"
    assert main(["--faces", "300", "--regressor", "checkpoints/regressor.ckpt", "--num-faces", "4",
                 "--json", str(out)]) == 0
    reading = json.loads(out.read_text())["reading"]
    for reader in ("regressor", "mean_face"):
        row = reading[f"{reader}.nose_protrusion"]
        assert row["relative_error_std"] > 0 and 0.0 <= row["within_5_percent"] <= 1.0
    assert reading["regressor.nose_protrusion"] != reading["mean_face.nose_protrusion"]
    assert "mean_face.nose_protrusion on 4 val faces" in capsys.readouterr().out
