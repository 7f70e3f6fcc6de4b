"""`regressor optimize` on photo folders: every output belongs to its image."""
import hashlib
import json
import shutil

import numpy as np
import torch
import pytest
import yaml
from PIL import Image

from regressor.data.landmarks_io import load_landmarks
from regressor.detect.provider import NoFaceFoundError
from regressor.fitting_cli import main as optimize
from tests.face_folder_fixtures import make_face_folder

SIZE = 32
HEIGHT, WIDTH = 60, 50


@pytest.fixture()
def tiny_config(tmp_path):
    config = {
        "image_size": SIZE, "batch_size": 2, "face_model": {"n_shape": 10, "n_expression": 5}, "renderer": {},
        "losses": [{"name": "landmarks", "weight": 1.0}, {"name": "photometric", "weight": 1.0},
                   {"name": "regularizers", "weight": 1.0, "shape": 1e-3, "expression": 1e-3}],
        "stages": [{"name": "rigid", "steps": 2, "optimize": ["global_pose", "camera"], "weights": {"landmarks": 1.0}},
                   {"name": "all", "steps": 2, "optimize": ["shape", "expression", "camera", "albedo", "light"],
                    "weights": {"landmarks": 1.0, "photometric": 1.0, "regularizers": 1.0}}],
    }
    path = tmp_path / "tiny_fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def face_folder(tmp_path):
    root = tmp_path / "faces"
    make_face_folder(root, count=5, height=HEIGHT, width=WIDTH)
    return root


def _run(images, config, out, *extra):
    return optimize(["--images", str(images), "--config", str(config), "--out", str(out), *extra])


def _sha1(path):
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_a_face_folder_given_as_dir_or_dir_images_gives_identical_outputs(face_folder, tiny_config, tmp_path):
    # One thread: with several, BLAS may sum in another order and the fits differ in the 8th digit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_dir_and_dir_images(face_folder, tiny_config, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _compare_dir_and_dir_images(face_folder, tiny_config, tmp_path):
    assert _run(face_folder, tiny_config, tmp_path / "a") == 0
    assert _run(face_folder / "images", tiny_config, tmp_path / "b") == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("face_*.npz"))
    assert len(names) == 5 and names == sorted(p.name for p in (tmp_path / "b").glob("face_*.npz"))
    for name in names:
        a, b = np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        assert a.files == b.files
        for key in a.files:
            assert np.array_equal(a[key], b[key]), f"{name}: {key} differs"
        # the landmarks came from faces/landmarks/, never from a detector
        assert str(a["landmark_source"]).endswith(".pts")


def test_a_detection_failing_mid_batch_skips_that_image_and_no_other_image_takes_its_name(
        face_folder, tiny_config, tmp_path, monkeypatch):
    stash = tmp_path / "true_landmarks"
    shutil.move(str(face_folder / "landmarks"), stash)  # no landmark files: every image is "detected"
    failing = "face_02"
    calls = []

    class FakeDetector:
        def __init__(self, cache_dir):
            pass

        def __call__(self, path):
            calls.append(path.stem)
            if path.stem == failing:
                raise NoFaceFoundError(path)
            return load_landmarks(stash / f"{path.stem}.pts")

    monkeypatch.setattr("regressor.detect.CachedLandmarkProvider", FakeDetector)
    out = tmp_path / "out"
    assert _run(face_folder, tiny_config, out, "--batch-size", "3") == 0
    assert sorted(calls) == [f"face_{i:02d}" for i in range(5)]
    assert not (out / f"{failing}.npz").exists() and not (out / f"{failing}.obj").exists()
    assert not (out / f"{failing}_overlay.png").exists()
    history = json.loads((out / "history.json").read_text())
    assert history["fitted"] == ["face_00", "face_01", "face_03", "face_04"]
    assert [s["name"] for s in history["skipped"]] == [failing]
    assert history["skipped"][0]["reason"] == "no_face_detected"
    fitted_in_batches = [name for batch in history["batches"] for name in batch["names"]]
    assert fitted_in_batches == history["fitted"]  # each image exactly once, none under another's name
    for stem in history["fitted"]:  # each output records the very file and landmarks it was fitted to
        stored = np.load(out / f"{stem}.npz")
        assert str(stored["source_image"]) == f"{stem}.png"
        assert str(stored["source_sha1"]) == _sha1(face_folder / "images" / f"{stem}.png")
        assert np.allclose(stored["source_landmarks"], load_landmarks(stash / f"{stem}.pts"))


def test_the_summary_names_each_skip_and_says_nothing_when_none(face_folder, tiny_config, tmp_path, capsys):
    (face_folder / "landmarks" / "face_01.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n")
    assert _run(face_folder, tiny_config, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "fitted 4 image(s), skipped 1:" in printed
    assert "SKIPPED face_01: [bad_landmarks]" in printed
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["skipped"][0]["name"] == "face_01" and "3 points" in history["skipped"][0]["detail"]
    shutil.copy(face_folder / "landmarks" / "face_00.pts", face_folder / "landmarks" / "face_01.pts")
    assert _run(face_folder, tiny_config, tmp_path / "again") == 0
    printed = capsys.readouterr().out
    assert "fitted 5 image(s)\n" in printed and "skip" not in printed.lower()


def test_outputs_include_overlay_and_panel_at_the_photo_size_and_an_albedo(face_folder, tiny_config, tmp_path):
    out = tmp_path / "out"
    assert _run(face_folder, tiny_config, out) == 0
    overlay = Image.open(out / "face_00_overlay.png")
    assert overlay.size == (WIDTH, HEIGHT)
    assert Image.open(out / "face_00_panel.png").size == (3 * WIDTH, HEIGHT)
    assert Image.open(out / "face_00_albedo.png").size == (SIZE, SIZE)
    # the overlay differs from the photo where the face is, and only there is grey blended in
    photo = np.asarray(Image.open(face_folder / "images" / "face_00.png").convert("RGB"), dtype=float)
    changed = np.abs(np.asarray(overlay, dtype=float) - photo).sum(-1) > 3
    assert 0.02 < changed.mean() < 0.9
    stored = np.load(out / "face_00.npz")
    assert stored["now_landmarks3d"].shape == (7, 3) and stored["landmarks3d"].shape == (68, 3)


def test_points_marked_invisible_are_fitted_without_them(face_folder, tiny_config, tmp_path):
    points = load_landmarks(face_folder / "landmarks" / "face_00.pts")
    points[3] = np.nan  # one NaN point (.npy)
    (face_folder / "landmarks" / "face_00.pts").unlink()
    np.save(face_folder / "landmarks" / "face_00.npy", points)
    visibility = np.ones((68, 1))
    visibility[[5, 6]] = 0  # a visibility column (.txt)
    rows = np.concatenate([load_landmarks(face_folder / "landmarks" / "face_01.pts"), visibility], axis=1)
    (face_folder / "landmarks" / "face_01.pts").unlink()
    np.savetxt(face_folder / "landmarks" / "face_01.txt", rows)
    out = tmp_path / "out"
    assert _run(face_folder, tiny_config, out) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["skipped"] == [] and len(history["fitted"]) == 5
    assert np.flatnonzero(np.load(out / "face_00.npz")["landmarks_valid"] == 0).tolist() == [3]
    assert np.flatnonzero(np.load(out / "face_01.npz")["landmarks_valid"] == 0).tolist() == [5, 6]
