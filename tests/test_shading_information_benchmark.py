"""benchmarks.shading_information: the exact image model finds the truth where the image holds it; presets parse."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.shading_information import main, photometric_climb, photometric_error
from regressor.face_model import build_face_model
from regressor.render import Renderer
from regressor.synthetic.config import SyntheticConfig
from regressor.synthetic.generator import SyntheticFaceGenerator

SIZE = 32


def test_presets_switch_on_only_the_named_effects():
    assert SyntheticConfig.preset("default") == SyntheticConfig()
    assert SyntheticConfig.preset("model_only") == SyntheticConfig.model_only()
    one = SyntheticConfig.preset("model_only+ambient_occlusion+jpeg")
    assert one.ambient_occlusion and one.jpeg and not one.shadows and not one.facial_features
    fewer = SyntheticConfig.preset("default-ambient_occlusion-facial_features")
    assert not fewer.ambient_occlusion and not fewer.facial_features and fewer.shadows and fewer.jpeg
    for bad in ("modelonly", "model_only+ambient", "default+jpeg", "default-glitter", "model_only-jpeg"):
        with pytest.raises(ValueError, match="synthetic preset"):
            SyntheticConfig.preset(bad)


def test_on_model_only_images_the_truth_explains_the_image_and_the_climb_moves_towards_it():
    face_model = build_face_model()
    batch = SyntheticFaceGenerator(face_model, SIZE, SyntheticConfig.model_only()).generate([11, 12])
    renderer = Renderer(image_size=SIZE)
    truth = batch.params
    start = truth.clone()
    start.shape = 0.3 * truth.shape  # a shrunk, fit-like shape
    with torch.no_grad():
        at_truth = photometric_error(face_model, renderer, truth, batch.image)
        at_start = photometric_error(face_model, renderer, start, batch.image)
    assert bool((at_truth < 0.01).all()) and bool((at_start > 2 * at_truth).all())
    end = photometric_climb(face_model, renderer, batch.image, start, steps=30, lr=0.05)
    with torch.no_grad():
        assert bool((photometric_error(face_model, renderer, end, batch.image) < at_start).all())
        distance = lambda params: (face_model(params).vertices - face_model(truth).vertices).norm(dim=-1).mean(1)  # noqa: E731
        assert bool((distance(end) < distance(start)).all())


def test_the_benchmark_writes_one_row_per_image_distribution(tmp_path, capsys):
    out = tmp_path / "information.json"
    assert main(["--synthetic", "model_only", "model_only+facial_features", "--num-faces", "2", "--image-size", str(SIZE),
                 "--steps", "2", "--fit-cache", str(tmp_path / "fits"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [row["synthetic"] for row in rows] == ["model_only", "model_only+facial_features"]
    assert rows[0]["photometric_truth_wins"] == 1.0  # the exact model, the true appearance: nothing hides the truth
    for row in rows:
        assert 0.0 <= row["photometric_climb.improved_fraction"] <= 1.0 and row["photometric_climb.error_start_mm"] > 0
    with pytest.raises(SystemExit):
        main(["--synthetic", "model_only+glitter"])
