"""``regressor predict`` without a training config: photos in, meshes out, default weights shipped."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import regressor.inference as inference
from regressor.cli import main as regressor_main
from regressor.data.landmarks_io import save_pts
from regressor.inference import Reconstructor, load_pipeline
from regressor.io.regressor_file import RegressorFileError, read_regressor_file
from regressor.pipeline import build_pipeline

def test_exported_file_loads_weights_only_and_predicts_like_the_original(tiny_regressor):
    path, original = tiny_regressor.path, tiny_regressor.pipeline
    assert torch.load(path, weights_only=True)["format"] == "face-psl-regressor"
    loaded = load_pipeline(path).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = original.eval()(images), loaded(images)
    # int8 storage: vertices agree to a fraction of a millimetre (this random net amplifies
    # rounding more than a trained one; benchmarks.regression reports the shipped file's figures)
    difference = (a.mesh.vertices - b.mesh.vertices).norm(dim=-1)
    assert difference.mean() < 3e-4 and difference.max() < 2e-3
    with torch.no_grad():
        fresh = build_pipeline(**tiny_regressor.description).eval()(images)  # zero heads: the mean face
    assert (a.mesh.vertices - fresh.mesh.vertices).norm(dim=-1).mean() > 3 * difference.mean()


def test_wrong_version_is_refused(tiny_regressor):
    path = tiny_regressor.path
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["version"] = 99
    with pytest.raises(RegressorFileError, match="version 99"):
        read_regressor_file(checkpoint, path)


def test_predict_without_ckpt_path_uses_the_shipped_regressor(tiny_regressor, tmp_path, monkeypatch):
    path = tiny_regressor.path
    monkeypatch.setattr(inference, "SHIPPED_REGRESSOR", path)
    photos = tmp_path / "faces" / "images"
    photos.mkdir(parents=True)
    (tmp_path / "faces" / "landmarks").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    points = np.stack([np.linspace(20, 40, 68), np.linspace(30, 60, 68)], 1)
    save_pts(tmp_path / "faces" / "landmarks" / "a.pts", points)
    out = tmp_path / "out"
    assert regressor_main(["predict", "--images", str(photos), "--out", str(out), "--detect", "off"]) == 0
    assert (out / "a.obj").is_file() and (out / "b.obj").is_file()
    record = json.loads((out / "predictions.json").read_text())
    assert record["checkpoint"] == str(path)
    assert record["images"]["a"]["crop"] == "landmarks"   # DIR/images finds DIR/landmarks
    assert record["images"]["b"]["crop"] == "centre"


def test_predict_with_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        regressor_main(["predict", "--images", str(tmp_path), "--out", str(tmp_path / "o"),
                        "--ckpt_path", str(tmp_path / "nope.ckpt")])


def test_reconstructor_defaults_to_the_shipped_file(tiny_regressor, monkeypatch):
    path = tiny_regressor.path
    monkeypatch.setattr(inference, "SHIPPED_REGRESSOR", path)
    assert Reconstructor.from_checkpoint().image_size == 32
