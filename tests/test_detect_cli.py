"""`regressor landmarks` end to end, the landmark cache behind predict/optimize/folder datasets,
and the message a user gets when the optional [detect] extra is missing."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regressor.cli import main as regressor_main
from regressor.data.image_io import ImageReadError
from regressor.data.landmarks_io import load_landmarks
from regressor.detect import DetectorUnavailableError, detector_available
from regressor.detect.dlib_detector import Detection, FaceDetector, default_detector
from regressor.detect.provider import NoFaceFoundError, detect_and_cache, landmarks_for_image


class CountingDetector:
    """Stands in for dlib where only the cache logic is under test: a fixed face, or none."""

    def __init__(self, face: bool = True):
        self.calls = 0
        self.face = face

    def detect(self, image: np.ndarray) -> Detection | None:
        self.calls += 1
        if not self.face:
            return None
        landmarks = np.stack([np.linspace(10, 50, 68), np.linspace(12, 40, 68)], axis=1).astype(np.float32)
        return Detection(box=np.array([8, 10, 52, 44], np.float32), score=1.5, landmarks=landmarks, num_faces=1)


def write_photo(path: Path, value: int = 128) -> Path:
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def without_dlib(monkeypatch):
    """Simulate a machine without the extra: `import dlib` fails (None in sys.modules does that)."""
    default_detector.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)
    yield
    default_detector.cache_clear()


# --- the missing extra ------------------------------------------------------------------------

def test_missing_dlib_is_reported_with_install_instructions(without_dlib, tmp_path):
    assert not detector_available()
    with pytest.raises(DetectorUnavailableError) as error:
        FaceDetector()
    message = str(error.value)
    assert "dlib" in message and "make detect" in message and "pip install -e .[detect]" in message
    assert "landmark files" in message  # the other way out: supply landmarks
    with pytest.raises(DetectorUnavailableError):
        landmarks_for_image(write_photo(tmp_path / "face.png"), tmp_path / "cache")


def test_missing_predictor_package_is_named(monkeypatch):
    import regressor.detect as detect

    real_find_spec = detect.importlib.util.find_spec
    monkeypatch.setattr(
        detect.importlib.util, "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a),
    )
    assert not detector_available()
    with pytest.raises(DetectorUnavailableError, match="face_recognition_models"):
        detect.predictor_model_path()


def test_landmarks_command_without_the_extra_exits_with_the_hint(without_dlib, tmp_path, capsys):
    images = tmp_path / "photos"
    images.mkdir()
    write_photo(images / "a.png")
    assert regressor_main(["landmarks", "--images", str(images), "--out", str(tmp_path / "out")]) == 2
    assert "pip install -e .[detect]" in capsys.readouterr().err


def test_cached_landmarks_are_served_even_without_the_extra(without_dlib, tmp_path):
    photo = write_photo(tmp_path / "face.png")
    expected = landmarks_for_image(photo, tmp_path / "cache", detector=CountingDetector())
    np.testing.assert_allclose(landmarks_for_image(photo, tmp_path / "cache"), expected, atol=1e-3)


# --- the cache behind predict / optimize / folder datasets -----------------------------------

def test_landmarks_are_detected_once_then_read_from_the_cache(tmp_path):
    photo, cache, detector = write_photo(tmp_path / "face.png"), tmp_path / "cache", CountingDetector()
    first = landmarks_for_image(photo, cache, detector=detector)
    second = landmarks_for_image(photo, cache, detector=detector)
    assert detector.calls == 1 and first.shape == (68, 2)
    np.testing.assert_allclose(second, first, atol=1e-3)  # .pts stores 4 decimals
    np.testing.assert_allclose(load_landmarks(cache / "face.pts"), first, atol=1e-3)
    record = json.loads((cache / "face.json").read_text())
    assert record["num_faces"] == 1 and record["box"] == [8.0, 10.0, 52.0, 44.0] and record["image_size"] == [64, 64]


def test_an_edited_photo_is_detected_again(tmp_path):
    photo, cache, detector = write_photo(tmp_path / "face.png"), tmp_path / "cache", CountingDetector()
    landmarks_for_image(photo, cache, detector=detector)
    write_photo(photo, value=30)
    stat = photo.stat()
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    landmarks_for_image(photo, cache, detector=detector)
    assert detector.calls == 2


def test_no_face_is_cached_and_raised_each_time(tmp_path):
    photo, cache, detector = write_photo(tmp_path / "wall.png"), tmp_path / "cache", CountingDetector(face=False)
    for _ in range(2):
        with pytest.raises(NoFaceFoundError, match="wall.png"):
            landmarks_for_image(photo, cache, detector=detector)
    assert detector.calls == 1 and not (cache / "wall.pts").exists()


def test_unreadable_photo_raises_image_read_error_and_caches_nothing(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        detect_and_cache(broken, tmp_path / "cache", detector=CountingDetector())
    assert not (tmp_path / "cache" / "broken.json").exists()


# --- the command, end to end with dlib ---------------------------------------------------------

@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Every kind of photo users bring: a face (jpeg), grayscale, EXIF-rotated, CMYK, a tiny face,
    a huge 6000x4000 photo, two faces, a wall of noise, and a corrupt file."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    astronaut = skimage_data.astronaut()
    face = Image.fromarray(astronaut)
    face.save(folder / "astronaut.jpg", quality=92)
    face.convert("L").resize((384, 384)).save(folder / "gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut))).save(folder / "exif_rotated.jpg", quality=92, exif=exif)
    face.convert("CMYK").save(folder / "cmyk.jpg", quality=92)
    tiny = Image.new("RGB", (640, 480), (120, 120, 120))
    tiny.paste(face.resize((160, 160), Image.Resampling.BOX), (300, 200))
    tiny.save(folder / "tiny.png")
    huge = Image.new("RGB", (6000, 4000), (90, 90, 90))
    huge.paste(face.resize((4000, 4000), Image.Resampling.BILINEAR), (1000, 0))
    huge.save(folder / "huge.jpg", quality=80)
    pair = Image.new("RGB", (512 + 384, 512), (120, 120, 120))
    pair.paste(face, (0, 0))
    pair.paste(face.resize((384, 384), Image.Resampling.BOX), (512, 0))
    pair.save(folder / "two_faces.png")
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_landmarks_command_writes_pts_json_previews_and_a_summary(photo_folder, tmp_path, capsys):
    pytest.importorskip("dlib", reason="the [detect] extra (dlib-bin) is not installed")
    out = tmp_path / "landmarks"
    code = regressor_main(["landmarks", "--images", str(photo_folder), "--out", str(out), "--preview"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "9 images: 6 with one face, 1 with several faces" in printed
    assert "1 with no face, 1 unreadable" in printed and "corrupt.jpg" in printed and "noise.png" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["one_face"] == 6 and summary["counts"]["failed"] == 0
    assert summary["files"]["several_faces"] == ["two_faces.png"]
    assert summary["files"]["no_face"] == ["noise.png"] and summary["files"]["unreadable"] == ["corrupt.jpg"]
    assert "corrupt" in summary["reasons"]["corrupt.jpg"] or "truncated" in summary["reasons"]["corrupt.jpg"]

    landmarks = load_landmarks(out / "astronaut.pts")
    record = json.loads((out / "astronaut.json").read_text())
    x0, y0, x1, y1 = record["box"]
    assert record["num_faces"] == 1 and record["score"] > 0
    assert np.all((landmarks[17:, 0] > x0) & (landmarks[17:, 0] < x1) & (landmarks[17:, 1] > y0) & (landmarks[17:, 1] < y1))
    # The other photos show the same face: their landmarks are the astronaut's, moved accordingly.
    for name in ("exif_rotated", "cmyk", "two_faces"):
        np.testing.assert_allclose(load_landmarks(out / f"{name}.pts"), landmarks, atol=4, err_msg=name)
    np.testing.assert_allclose(load_landmarks(out / "gray.pts"), landmarks * 384 / 512, atol=4)
    huge_expected = landmarks * 4000 / 512 + np.array([1000.0, 0.0])
    assert np.median(np.abs(load_landmarks(out / "huge.pts") - huge_expected)) < 15  # face is ~690 px wide
    assert json.loads((out / "huge.json").read_text())["image_size"] == [6000, 4000]
    tiny_expected = landmarks * 160 / 512 + np.array([300.0, 200.0])
    assert np.median(np.abs(load_landmarks(out / "tiny.pts") - tiny_expected)) < 3

    with Image.open(out / "preview" / "astronaut.png") as preview:
        assert preview.size == (512, 512)
        nose_tip = np.asarray(preview.convert("RGB"))[int(landmarks[30, 1]), int(landmarks[30, 0])]
        assert tuple(nose_tip) == (255, 40, 40)  # a red landmark dot was drawn there
    with Image.open(out / "preview" / "huge.png") as preview:
        assert max(preview.size) == 1024  # previews of huge photos are downscaled
    assert not (out / "noise.pts").exists() and not (out / "preview" / "noise.png").exists()

    # A second run reuses the up-to-date results and reports the same.
    assert regressor_main(["landmarks", "--images", str(photo_folder), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]


def test_landmarks_command_rejects_a_missing_folder(tmp_path, capsys):
    code = regressor_main(["landmarks", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_cached_landmark_provider_pickles_and_matches_the_folder_dataset_contract(tmp_path):
    import pickle

    from regressor.detect import CachedLandmarkProvider

    photo, detector = write_photo(tmp_path / "face.png"), CountingDetector()
    provider = pickle.loads(pickle.dumps(CachedLandmarkProvider(tmp_path / "cache", detector=detector)))
    assert provider(photo).shape == (68, 2) and (tmp_path / "cache" / "face.pts").is_file()


def test_folder_dataset_of_raw_photos_detects_landmarks_and_skips_faceless_ones(tmp_path):
    pytest.importorskip("dlib", reason="the [detect] extra (dlib-bin) is not installed")
    skimage_data = pytest.importorskip("skimage.data")
    from regressor.data.folder import FaceFolderDataset
    from regressor.detect import CachedLandmarkProvider

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.jpg", quality=92)
    write_photo(photos / "wall.png")
    dataset = FaceFolderDataset(photos, image_size=64, split="val", landmark_provider=CachedLandmarkProvider(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="wall.png"):
        samples = [dataset[i] for i in range(len(dataset))]
    assert all(sample["name"] == "astronaut" for sample in samples)
    landmarks = samples[0]["landmarks"]
    assert landmarks.shape == (68, 2) and bool(((landmarks > 0) & (landmarks < 64)).all())
    assert dataset.skipped["no_face_detected"] == 1
    assert (tmp_path / "cache" / "astronaut.pts").is_file() and (tmp_path / "cache" / "wall.json").is_file()


def test_face_crop_frames_the_detected_face_and_moves_its_landmarks(tmp_path):
    from regressor.detect import face_crop

    ramp = np.arange(64, dtype=np.uint8) * 4  # red = 4 x column, green = 4 x row: pixels say where they are
    photo = tmp_path / "face.png"
    Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.zeros((64, 64), np.uint8)), -1)).save(photo)
    crop = face_crop(photo, tmp_path / "cache", size=32, detector=CountingDetector())
    assert crop.image.shape == (32, 32, 3) and crop.image.dtype == np.uint8
    low, high = crop.landmarks.min(axis=0), crop.landmarks.max(axis=0)
    assert np.all(low > 0) and np.all(high < 32)  # the face fills the crop with a margin
    np.testing.assert_allclose(max(high - low) * 1.25, 32, rtol=1e-3)  # crop side = 1.25 x landmark extent
    for crop_point, source_point in zip(crop.landmarks[::10], crop.source_landmarks[::10]):
        column, row = (crop_point - 0.5).round().astype(int)
        expected = 4 * (source_point - 0.5)  # the ramp's value at the source landmark
        np.testing.assert_allclose(crop.image[row, column, :2], expected, atol=5)
