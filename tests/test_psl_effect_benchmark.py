"""``benchmarks.psl_effect`` end to end at the smoke budget: the outputs' shape, not the numbers."""
import json

import pytest
import torch

from benchmarks.psl_common import BUDGETS, benchmark_config, face_set
from benchmarks.psl_effect import main
from regressor.models.critic import ShapeCritic
from regressor.io.regressor_file import export_regressor
from regressor.pipeline import build_pipeline

HEADLINE = ("median_mm_without", "median_mm_with", "reduction", "mean_mm_without", "mean_mm_with", "std_mm_without",
            "std_mm_with")


@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("critic") / "critic.pt"
    ShapeCritic("resnet10t", 32, {"channels": [8, 8, 16, 16], "stem_width": 8}).save_checkpoint(path, {})
    return path


@pytest.fixture(scope="module")
def tiny_baseline(tmp_path_factory):
    """A tiny random regressor, exported as the shipped one is (stands in for checkpoints/regressor.ckpt)."""
    torch.manual_seed(0)
    description = dict(backbone="resnet10t", n_shape=10, n_expression=5, n_albedo=3, image_size=32,
                       encoder={"neck": "spatial"})
    pipeline = build_pipeline(**description)
    for p in pipeline.encoder.parameters():  # non-zero heads: not the mean face
        p.data.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("regressor") / "regressor.ckpt"
    return export_regressor(pipeline.state_dict(), description, path, {"note": "test"})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_smoke_budget_writes_json_table_and_plot(tmp_path, tiny_critic, tiny_baseline, cache_dir):
    out = tmp_path / "psl.json"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic),
                 "--cache-dir", str(cache_dir), "--baseline", str(tiny_baseline)]) == 0
    results = json.loads(out.read_text())
    smoke = BUDGETS["smoke"]
    arms = {"fitting": results["fitting"], "regression": results["regression"],
            "shifted fitting": results["shifted"]["fitting"], "shifted regression": results["shifted"]["regression"]}
    for mode, report in arms.items():
        for key in HEADLINE:
            assert isinstance(report[key], float), (mode, key)
        assert report["reduction"] == pytest.approx(1 - report["median_mm_with"] / report["median_mm_without"])
        for condition in ("without", "with"):
            summary = report[condition]
            assert {"nose_median_mm", "mouth_median_mm", "forehead_median_mm", "cheeks_median_mm"} <= set(summary)
            assert len(summary["per_image_median_mm"]) == smoke.benchmark_images * (
                len(smoke.train_seeds) if mode.endswith("regression") else 1)
    # the regression arm fine-tunes the given baseline (scored too, before fine-tuning) per seed
    for report in (arms["regression"], arms["shifted regression"]):
        assert set(report["seeds"]) == {str(s) for s in smoke.train_seeds}
        assert report["baseline"]["path"] == str(tiny_baseline) and report["baseline"]["median_mm"] > 0
        assert report["fine_tune_steps"] == smoke.train_steps and report["image_size"] == 32
        assert report["perceptual_weight"] == results["regression_weight"] == pytest.approx(0.05)
        assert "loss/perceptual_shape" in report["final_losses"]["with"]["0"]
        assert "loss/perceptual_shape" not in report["final_losses"]["without"]["0"]
    assert results["fitting"]["gradient_norms_at_perceptual_stage"]["perceptual_shape"] >= 0
    assert results["benchmark_set"]["seeds"][0] == 30_000_000  # the held-out benchmark split
    # the shifted set: the same seeds, other lighting / background / skin, so other pixels
    assert results["shifted"]["benchmark_set"]["seeds"] == results["benchmark_set"]["seeds"]
    assert results["shifted"]["mean_face"]["median_mm"] > 0
    table = out.with_suffix(".md").read_text()
    assert table.count("| fitting |") == 3 and table.count("| regression |") == 4  # + the baseline row
    assert table.count("| shifted fitting |") == 3 and table.count("| shifted regression |") == 4
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_shifted_set_changes_the_pixels_not_the_faces(cache_dir):
    from benchmarks.regression import shifted_config
    from regressor.face_model import build_face_model

    model = build_face_model()
    plain = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)
    shifted = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir, config=shifted_config())
    assert torch.equal(plain.seeds, shifted.seeds)
    assert (plain.image - shifted.image).abs().mean() > 0.02


def test_missing_baseline_skips_the_regression_arm_and_says_why(tmp_path, tiny_critic, cache_dir, capsys):
    out = tmp_path / "skip.json"
    missing = tmp_path / "no_regressor.ckpt"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic), "--cache-dir", str(cache_dir),
                 "--modes", "regression", "--no-shifted", "--baseline", str(missing)]) == 0
    results = json.loads(out.read_text())
    assert str(missing) in results["regression"]["skipped"] and "--baseline" in results["regression"]["skipped"]
    assert "regression arm skipped" in capsys.readouterr().out
    assert "shifted" not in results and "skipped" in out.with_suffix(".md").read_text()


def test_val_split_weight_sweep_scores_other_faces_with_a_scaled_weight(tmp_path, tiny_critic, cache_dir):
    out = tmp_path / "sweep.json"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic), "--cache-dir", str(cache_dir),
                 "--modes", "fitting", "--split", "val", "--weight-scale", "3", "--no-shifted"]) == 0
    results = json.loads(out.read_text())
    assert results["benchmark_set"]["split"] == "val" and results["benchmark_set"]["seeds"][0] == 10_000_000
    import yaml

    losses = yaml.safe_load(open("configs/fitting/default.yaml"))["losses"]
    configured = next(spec["weight"] for spec in losses if spec["name"] == "perceptual_shape")
    assert results["fitting"]["perceptual_weight"] == pytest.approx(3 * configured)
    assert results["weight_scale"] == 3.0 and "regression" not in results and "shifted" not in results


def test_comparison_reports_the_median_reduction_and_counts_the_improved_images():
    from benchmarks.psl_common import compare
    from regressor.evaluation.now import NowResult

    def result(*errors):
        values = torch.tensor(errors)
        return NowResult(values, torch.zeros(len(errors), dtype=torch.long), [float(values.median())])

    without = [result(2.0, 2.0, 2.0), result(4.0, 4.0, 4.0)]
    with_ = [result(1.0, 1.0, 1.0), result(5.0, 5.0, 5.0)]
    out = compare(without, with_, bootstrap=50)
    assert out["median_mm_without"] == 2.0 and out["median_mm_with"] == 1.0
    assert out["reduction"] == pytest.approx(0.5) and out["images_improved"] == 1 and out["images"] == 2
    low, high = out["reduction_ci90"]
    assert -0.25 - 1e-6 <= low <= high <= 0.5 + 1e-6


def test_benchmark_faces_are_cached_and_carry_geometry_beyond_the_model(cache_dir):
    from regressor.face_model import build_face_model

    model = build_face_model()
    first = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)  # generated by the smoke run (or now)
    again = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("benchmark_0-2_32px_*.pt"))) == 1 and len(again) == 2
    assert torch.equal(first.image, again.image) and torch.equal(first.vertices, again.vertices)
    assert first.vertices.shape == (2, model.num_vertices, 3) and first.now_landmarks3d.shape == (2, 7, 3)
    assert benchmark_config().extra_geometry
