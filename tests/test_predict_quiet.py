"""Predicting a folder is quiet: images with landmark files never reach the detector, and faces the
detector misses are one summary line, not one warning each (``make demo`` printed a dlib warning per
synthetic test face although it had written their landmarks)."""
from __future__ import annotations

import logging
import shutil
import warnings

import pytest

from regressor.data.predict_folder import PredictImageDataset
from regressor.detect.provider import NoFaceFoundError
from tests.face_folder_fixtures import make_face_folder


class RecordingProvider:
    """A landmark provider that finds no face, and remembers what it was asked."""

    def __init__(self):
        self.asked = []

    def __call__(self, path):
        self.asked.append(path.name)
        raise NoFaceFoundError(path)


@pytest.fixture()
def faces(tmp_path):
    make_face_folder(tmp_path / "faces", count=5, height=60, width=50)
    return tmp_path / "faces"


def _load_all(dataset):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [dataset[i] for i in range(len(dataset))]
    return samples, [str(w.message) for w in caught]


@pytest.mark.parametrize("given", ["images", "folder"])
def test_landmark_files_beside_the_images_are_used_and_the_detector_is_never_asked(faces, given, caplog):
    provider = RecordingProvider()
    root = faces / "images" if given == "images" else faces  # <folder>/images, as the demo passes it
    dataset = PredictImageDataset(root, 32, landmark_provider=provider)
    with caplog.at_level(logging.DEBUG):
        samples, warned = _load_all(dataset)
    assert [s["crop"] for s in samples] == ["landmarks"] * 5
    assert provider.asked == [] and warned == [] and dataset.detection_report() == ""
    assert not [r for r in caplog.records if r.name.startswith("regressor")]


def test_faces_the_detector_misses_are_counted_and_reported_in_one_line(faces, caplog):
    shutil.rmtree(faces / "landmarks")
    provider = RecordingProvider()
    dataset = PredictImageDataset(faces / "images", 32, landmark_provider=provider)
    with caplog.at_level(logging.DEBUG, logger="regressor.data.predict_folder"):
        samples, warned = _load_all(dataset)
    assert [s["crop"] for s in samples] == ["centre"] * 5 and len(provider.asked) == 5
    assert warned == []  # no warning per image ...
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 5  # ... a debug line each at most
    report = dataset.detection_report()
    assert dataset.no_face_detected == 5 and "no face detected in 5 of 5 image(s)" in report and "\n" not in report


def test_predict_prints_one_summary_and_one_centre_crop_line(faces, tmp_path, monkeypatch, capsys, tiny_regressor):
    import regressor.predict_cli as predict_cli

    checkpoint = tiny_regressor.path
    for stem in ("face_03", "face_04"):
        (faces / "landmarks" / f"{stem}.pts").unlink()  # two photos the detector then misses
    monkeypatch.setattr(predict_cli, "_provider", lambda mode, cache: RecordingProvider())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert predict_cli.main(["--images", str(faces / "images"), "--out", str(tmp_path / "out"),
                                 "--ckpt_path", str(checkpoint)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [str(w.message) for w in caught if "face" in str(w.message)] == []
    assert not [line for line in printed if "face_0" in line]  # nothing per image without --verbose
    assert [line for line in printed if line.startswith("predicted")] == [
        f"predicted 5 face(s) into {tmp_path / 'out'} (2 from centre, 3 from landmarks)"]
    assert [line for line in printed if "centre-cropped" in line] == [
        "warning: 2 image(s) were centre-cropped (no landmarks, box or detected face; the detector found no face in 2)"]


def test_datamodule_predict_reports_missed_faces_once_at_teardown(faces):
    from regressor.training.datamodule import FaceDataModule

    shutil.rmtree(faces / "landmarks")
    module = FaceDataModule(image_size=32, predict_dir=str(faces / "images"), detect_landmarks=False)
    module.setup("predict")
    dataset = module.datasets["predict"]
    dataset.landmark_provider = RecordingProvider()
    _load_all(dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.teardown("predict")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no face detected in 5 of 5 image(s)" in messages[0]


def test_a_missed_face_in_a_loader_worker_is_counted_in_the_parent(faces):
    from torch.utils.data import DataLoader

    from regressor.data.predict_folder import collate_skipping_unreadable

    (faces / "landmarks" / "face_00.pts").unlink()
    dataset = PredictImageDataset(faces / "images", 32, landmark_provider=RecordingProvider())
    loader = DataLoader(dataset, batch_size=5, num_workers=1, collate_fn=collate_skipping_unreadable)
    crops = [c for batch in loader for c in batch["crop"]]
    assert crops.count("centre") == 1 and dataset.no_face_detected == 1  # set in the worker, read here
