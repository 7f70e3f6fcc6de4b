"""benchmarks.critic_climb: the climb figure follows a critic that knows the truth, and fails one that does not."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks.critic_climb import climb_figures, main
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


@pytest.mark.parametrize("sign, falls", [(1.0, True), (-1.0, False)])
def test_the_climb_lowers_the_error_only_for_a_critic_that_points_to_the_truth(sign, falls):
    face_model = build_face_model()
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
    figures = climb_figures(RenderMatchingCritic(reference, sign), face_model, render, torch.zeros(2, 3, SIZE, SIZE),
                            mesh.vertices, region, start, steps=15, lr=0.05)
    assert (figures["error_end_mm"] < figures["error_start_mm"]) == falls
    assert figures["improved_fraction"] == (1.0 if falls else 0.0)


def test_the_benchmark_writes_its_figures_for_a_tiny_critic(tmp_path, capsys):
    checkpoint = tmp_path / "critic.pt"
    ShapeCritic("resnet10t", SIZE, {"channels": [8, 8, 16, 16], "stem_width": 8}).save_checkpoint(checkpoint, {})
    out = tmp_path / "climb.json"
    assert main(["--checkpoint", str(checkpoint), "--num-faces", "2", "--steps", "1", "--fit-cache", str(tmp_path / "fits"),
                 "--json", str(out), "--oracle", "--oracle-reductions", "4", "1", "--oracle-targets", "placed", "image"]) == 0
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
    assert "climb" in capsys.readouterr().out
