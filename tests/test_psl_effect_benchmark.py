"""``benchmarks.psl_effect``: end to end at the smoke budget (layout, and the figures that have a known
answer: the mean face scores the same on both sets, the "without" arm never sees the critic), and the
gradient-norm figure against its closed form."""
import json
import math

import pytest
import torch

from benchmarks.psl_common import BUDGETS, benchmark_config, face_set
from benchmarks.psl_effect import main
from regressor.models.critic import ShapeCritic

HEADLINE = ("median_mm_without", "median_mm_with", "reduction", "mean_mm_without", "mean_mm_with", "std_mm_without",
            "std_mm_with")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_smoke_budget_writes_json_table_and_plot(tmp_path, tiny_critic_file, tiny_regressor, cache_dir):
    tiny_baseline = tiny_regressor.path  # stands in for checkpoints/regressor.ckpt
    out = tmp_path / "psl.json"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic_file),
                 "--cache-dir", str(cache_dir), "--baseline", str(tiny_baseline)]) == 0
    results = json.loads(out.read_text())
    smoke = BUDGETS["smoke"]
    arms = {"fitting": results["fitting"], "regression": results["regression"],
            "shifted fitting": results["shifted"]["fitting"], "shifted regression": results["shifted"]["regression"]}
    for mode, report in arms.items():
        for key in HEADLINE:  # millimetres of a NoW error on faces a few mm from the mean: not metres, not 0
            if key != "reduction":
                assert 0.05 < report[key] < 50.0, (mode, key, report[key])
        assert math.isfinite(report["reduction"]), mode
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
    # one norm per term the perceptual stage weights (default.yaml: landmarks, regularizers, photometric and
    # the critic), each non-zero: the random critic does pull on the shape (closed form: the test below)
    norms = results["fitting"]["gradient_norms_at_perceptual_stage"]
    assert set(norms) == {"landmarks", "regularizers", "photometric", "perceptual_shape"}
    assert all(value > 0 for value in norms.values()), norms
    assert results["benchmark_set"]["seeds"][0] == 30_000_000  # the held-out benchmark split
    # the shifted set: the same seeds, other lighting / background / skin, so other pixels
    assert results["shifted"]["benchmark_set"]["seeds"] == results["benchmark_set"]["seeds"]
    # the mean face is scored on geometry only, and both sets hold the same faces: the same figures
    assert results["shifted"]["mean_face"] == results["mean_face"] and 0.5 < results["mean_face"]["median_mm"] < 10
    table = out.with_suffix(".md").read_text()
    assert table.count("| fitting |") == 3 and table.count("| regression |") == 4  # + the baseline row
    assert table.count("| shifted fitting |") == 3 and table.count("| shifted regression |") == 4
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_shifted_set_changes_the_pixels_not_the_faces(cache_dir, face_model):
    from benchmarks.regression import shifted_config

    model = face_model
    plain = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)
    shifted = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir, config=shifted_config())
    assert torch.equal(plain.seeds, shifted.seeds)
    assert (plain.image - shifted.image).abs().mean() > 0.02


def test_missing_baseline_skips_the_regression_arm_and_says_why(tmp_path, tiny_critic_file, cache_dir, capsys):
    out = tmp_path / "skip.json"
    missing = tmp_path / "no_regressor.ckpt"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic_file), "--cache-dir", str(cache_dir),
                 "--modes", "regression", "--no-shifted", "--baseline", str(missing)]) == 0
    results = json.loads(out.read_text())
    assert str(missing) in results["regression"]["skipped"] and "--baseline" in results["regression"]["skipped"]
    assert "regression arm skipped" in capsys.readouterr().out
    assert "shifted" not in results and "skipped" in out.with_suffix(".md").read_text()


def test_val_split_weight_sweep_scores_other_faces_with_a_scaled_weight(tmp_path, tiny_critic_file, cache_dir):
    out = tmp_path / "sweep.json"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic_file), "--cache-dir", str(cache_dir),
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


def test_benchmark_faces_are_cached_and_carry_geometry_beyond_the_model(cache_dir, face_model):
    model = face_model
    first = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)  # generated by the smoke run (or now)
    again = face_set(model, "benchmark", 2, 32, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("benchmark_0-2_32px_*.pt"))) == 1 and len(again) == 2
    assert torch.equal(first.image, again.image) and torch.equal(first.vertices, again.vertices)
    assert first.vertices.shape == (2, model.num_vertices, 3) and first.now_landmarks3d.shape == (2, 7, 3)
    assert benchmark_config().extra_geometry


def test_gradient_norms_match_their_closed_form(tiny_critic_file):
    """``gradient_norms``: mean per-image norm of d(weight x term)/d(shape). For the shape prior
    ``w * mean_b |s_b|^2`` that is ``2 w mean_b |s_b|``; the critic's scales with ``perceptual_weight``
    (the stack's own weight for it is 0 in the "without" arm, where the figure is taken)."""
    from types import SimpleNamespace

    from benchmarks.psl_effect import gradient_norms
    from regressor.face_model import build_face_model
    from regressor.losses import LossStack
    from regressor.render import Renderer
    from regressor.types import FaceParams

    torch.manual_seed(0)
    model = build_face_model(n_shape=10, n_expression=5, n_albedo=3)
    params = FaceParams.zeros(2, n_shape=10, n_expression=5, n_albedo=3)
    params.shape = torch.randn(2, 10) * 0.5
    faces = SimpleNamespace(image=torch.rand(2, 3, 32, 32), landmarks=torch.rand(2, 68, 2) * 32,
                            landmarks_valid=torch.ones(2, 68))
    stack = LossStack([
        {"name": "regularizers", "weight": 2.0, "shape": 0.01, "expression": 0.0, "albedo": 0.0, "jaw": 0.0},
        {"name": "landmarks", "weight": 1.0},
        {"name": "perceptual_shape", "weight": 0.0, "checkpoint": str(tiny_critic_file)},
    ])
    stage = {"regularizers": 0.5, "landmarks": 0.0, "perceptual_shape": 1.0}  # landmarks off in this stage

    def norms(perceptual_weight):
        return gradient_norms(SimpleNamespace(params=params), faces, stack, stage, perceptual_weight,
                              "perceptual_shape", model, Renderer(image_size=32))

    once, twice = norms(0.3), norms(0.6)
    assert set(once) == {"regularizers", "perceptual_shape"}
    expected = 2.0 * 0.5 * 2 * 0.01 * float(params.shape.norm(dim=1).mean())
    assert once["regularizers"] == pytest.approx(expected, rel=1e-5) and twice["regularizers"] == once["regularizers"]
    assert once["perceptual_shape"] > 0 and twice["perceptual_shape"] == pytest.approx(2 * once["perceptual_shape"], rel=1e-5)
    assert set(norms(0.0)) == {"regularizers"}  # a zero weight is not measured


def test_the_without_arm_does_not_depend_on_the_critic(tmp_path, tiny_critic_file, cache_dir):
    """Fitting without the PSL must not see the critic: two critics give bit-identical "without" figures,
    while their "with" figures differ."""
    from torch import nn

    torch.manual_seed(1)
    other = ShapeCritic("resnet10t", 32, {"channels": [8, 8, 16, 16], "stem_width": 8})
    nn.init.normal_(other.head.weight, std=1.0)  # a strong pull, so that the "with" arm visibly moves
    other_path = tmp_path / "other_critic.pt"
    other.save_checkpoint(other_path, {})
    reports = []
    for critic in (tiny_critic_file, other_path):
        out = tmp_path / f"{critic.stem}.json"
        assert main(["--budget", "smoke", "--json", str(out), "--critic", str(critic), "--cache-dir", str(cache_dir),
                     "--modes", "fitting", "--no-shifted", "--weight-scale", "50"]) == 0
        reports.append(json.loads(out.read_text())["fitting"])
    first, second = reports
    assert first["without"]["per_image_median_mm"] == second["without"]["per_image_median_mm"]
    assert first["median_mm_without"] == second["median_mm_without"]
    assert first["final_losses"]["without"] == second["final_losses"]["without"]
    assert first["without"]["per_image_median_mm"] != first["with"]["per_image_median_mm"]
    assert first["with"]["per_image_median_mm"] != second["with"]["per_image_median_mm"]
