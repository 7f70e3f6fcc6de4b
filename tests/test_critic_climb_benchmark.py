"""benchmarks.critic_climb: the climb figure follows a critic that knows the truth, and fails one that does not."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks.critic_climb import climb_figures, climb_trace, main
from regressor.critic.gradient import metric_weights
from regressor.models.critic import ShapeCritic
from regressor.critic.operating_point import vertex_renderer
from regressor.critic.target import face_region
from regressor.face_model import build_face_model
from regressor.render import Renderer

SIZE = 32


class RenderMatchingCritic(nn.Module):
    """Minus (or, with sign -1, plus) the L1 distance to the truth's render: an oracle and an anti-oracle."""

    def __init__(self, reference, sign: float = 1.0):
        super().__init__()
        self.reference, self.sign = reference, sign

    def forward(self, image, shaded):
        return -self.sign * (shaded - self.reference).abs().flatten(1).mean(1) + 0.0 * image.sum()


def shrunk_start_and_oracle(face_model, sign: float):
    """Two random faces, a start at 0.3x their shape (fit-like) and the (anti-)oracle critic of their renders."""
    generator = torch.Generator().manual_seed(0)
    truth_params = face_model.zero_params(2)
    truth_params.shape = torch.randn(truth_params.shape.shape, generator=generator)
    mesh = face_model(truth_params)
    region = face_region(mesh.vertices, mesh.now_landmarks3d)
    render = vertex_renderer(Renderer(image_size=SIZE), face_model.faces)
    with torch.no_grad():
        reference = render(mesh.vertices, truth_params.camera).shaded
    start = truth_params.clone()
    start.shape = 0.3 * truth_params.shape  # a shrunk, fit-like start
    return truth_params, mesh.vertices, region, start, render, RenderMatchingCritic(reference, sign)


@pytest.mark.parametrize("sign, falls", [(1.0, True), (-1.0, False)])
def test_the_climb_lowers_the_error_only_for_a_critic_that_points_to_the_truth(sign, falls):
    face_model = build_face_model()
    _, vertices, region, start, render, critic = shrunk_start_and_oracle(face_model, sign)
    figures = climb_figures(critic, face_model, render, torch.zeros(2, 3, SIZE, SIZE), vertices, region, start,
                            steps=15, lr=0.05)
    assert (figures["error_end_mm"] < figures["error_start_mm"]) == falls
    assert figures["improved_fraction"] == (1.0 if falls else 0.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_climb_trace_follows_the_gate_climb_step_by_step(sign):
    face_model = build_face_model()
    truth, vertices, region, start, render, critic = shrunk_start_and_oracle(face_model, sign)
    image = torch.zeros(2, 3, SIZE, SIZE)
    figures = climb_figures(critic, face_model, render, image, vertices, region, start, steps=6, lr=0.05)
    rows = climb_trace(critic, face_model, render, image, truth, vertices, region, start,
                       metric_weights(face_model, "geometric"), steps=6, lr=0.05)
    assert [row["step"] for row in rows] == list(range(7))
    assert rows[0]["error_mm"] == pytest.approx(figures["error_start_mm"]) and rows[0]["improved_fraction"] == 0.0
    assert rows[-1]["error_mm"] == pytest.approx(figures["error_end_mm"])  # the same climb, not another one
    assert rows[-1]["improved_fraction"] == figures["improved_fraction"] and "gradient_cosine" not in rows[-1]
    assert (rows[0]["gradient_cosine"] > 0) == (sign > 0)  # the oracle points to the truth, the anti-oracle away
    assert all(row["gradient_norm"] > 0 for row in rows[:-1])
    scores = [row["score"] for row in rows[:-1]]
    assert scores[-1] > scores[0]  # a climb: the score rises


def test_the_benchmark_writes_its_figures_for_a_tiny_critic(tmp_path, capsys):
    checkpoint = tmp_path / "critic.pt"
    ShapeCritic("resnet10t", SIZE, {"channels": [8, 8, 16, 16], "stem_width": 8}).save_checkpoint(checkpoint, {})
    out = tmp_path / "climb.json"
    assert main(["--checkpoint", str(checkpoint), "--num-faces", "2", "--steps", "1", "--fit-cache", str(tmp_path / "fits"),
                 "--json", str(out), "--trace", "--oracle", "--oracle-reductions", "4", "1", "--oracle-targets", "placed", "image"]) == 0
    row, oracle, every_pixel, image_oracle, _ = json.loads(out.read_text())
    assert every_pixel["checkpoint"] == "oracle:render/1" and every_pixel["image_size"] == SIZE
    assert image_oracle["checkpoint"] == "oracle:render/4:image" and image_oracle["truth_beats_other_truth"] == 1.0
    # the oracle is given the true render at the fit: its score ranks the true shape first, whatever the image
    assert oracle["checkpoint"] == "oracle:render/4" and oracle["truth_beats_other_truth"] == 1.0
    assert oracle["gradient_cosine"] == oracle["gradient_cosine_other_image"] > 0
    assert set(row["gate"]) == {"climb_lowers_median_error", "improved_fraction_at_least_0.6", "cosine_at_least_0.15",
                                "reads_the_image", "passes"}
    assert row["gate"]["passes"] == all(v for k, v in row["gate"].items() if k != "passes")
    assert row["image_size"] == SIZE and row["split"] == "val" and row["num_faces"] == 2
    for key in ("truth_beats_other_truth", "climb.improved_fraction", "climb_true_pose.improved_fraction"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["climb.error_start_mm"] > 0 and row["climb_true_pose.error_start_mm"] > 0
    assert [step["step"] for step in row["climb_trace"]] == [0, 1]
    assert row["climb_trace"][-1]["error_mm"] == pytest.approx(row["climb.error_end_mm"])
    printed = capsys.readouterr().out
    assert "climb" in printed and "median error mm" in printed
