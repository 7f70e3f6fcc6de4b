"""``benchmarks.psl_effect`` end to end at the smoke budget: the outputs' shape, not the numbers."""
import json

import pytest
import torch

from benchmarks.psl_common import BUDGETS, benchmark_config, face_set
from benchmarks.psl_effect import main, with_critic
from regressor.models.critic import ShapeCritic

HEADLINE = ("median_mm_without", "median_mm_with", "reduction", "mean_mm_without", "mean_mm_with", "std_mm_without",
            "std_mm_with")


@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("critic") / "critic.pt"
    ShapeCritic("resnet10t", 32, {"channels": [8, 8, 16, 16], "stem_width": 8}).save_checkpoint(path, {})
    return path


def test_smoke_budget_writes_json_table_and_plot(tmp_path, tiny_critic):
    out = tmp_path / "psl.json"
    assert main(["--budget", "smoke", "--json", str(out), "--critic", str(tiny_critic),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads(out.read_text())
    for mode in ("fitting", "regression"):
        for key in HEADLINE:
            assert isinstance(results[mode][key], float), (mode, key)
        assert results[mode]["reduction"] == pytest.approx(1 - results[mode]["median_mm_with"] / results[mode]["median_mm_without"])
        for condition in ("without", "with"):
            summary = results[mode][condition]
            assert {"nose_median_mm", "mouth_median_mm", "forehead_median_mm", "cheeks_median_mm"} <= set(summary)
            assert len(summary["per_image_median_mm"]) == BUDGETS["smoke"].benchmark_images * (
                len(BUDGETS["smoke"].train_seeds) if mode == "regression" else 1)
    assert set(results["regression"]["seeds"]) == {str(s) for s in BUDGETS["smoke"].train_seeds}
    assert results["fitting"]["gradient_norms_at_perceptual_stage"]["perceptual_shape"] >= 0
    assert results["benchmark_set"]["seeds"][0] == 30_000_000  # the held-out benchmark split
    table = out.with_suffix(".md").read_text()
    assert table.count("| fitting |") == 3 and table.count("| regression |") == 3
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_without_condition_differs_only_in_the_perceptual_weight():
    losses = [{"name": "landmarks", "weight": 1.0}, {"name": "perceptual_shape", "weight": 0.05, "warmup_steps": 60}]
    off = with_critic(losses, "c.pt", 0.0, warmup_steps=9)
    on = with_critic(losses, "c.pt", 1.0, warmup_steps=9)
    assert off[0] == on[0] == losses[0]
    assert off[1] == {**on[1], "weight": 0.0}
    assert on[1] == {"name": "perceptual_shape", "weight": 0.05, "warmup_steps": 9, "checkpoint": "c.pt"}


def test_benchmark_faces_are_cached_and_carry_geometry_beyond_the_model(tmp_path):
    from regressor.face_model import FaceModel

    model = FaceModel.builtin()
    first = face_set(model, "benchmark", 1, 32, cache_dir=tmp_path)
    again = face_set(model, "benchmark", 1, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("benchmark_1_32px_*.pt"))) == 1
    assert torch.equal(first.image, again.image) and torch.equal(first.vertices, again.vertices)
    assert first.vertices.shape == (1, model.num_vertices, 3) and first.now_landmarks3d.shape == (1, 7, 3)
    assert benchmark_config().extra_geometry
