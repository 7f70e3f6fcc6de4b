"""Offline landmark detection on a real photograph (skimage's public-domain astronaut) and on the
photos users really have: rotated by EXIF, grayscale, CMYK, huge, tiny faces, no face at all."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib", reason="the [detect] extra (dlib-bin) is not installed")
skimage_data = pytest.importorskip("skimage.data")

from regressor.data.image_io import load_image  # noqa: E402
from regressor.detect import detector_available  # noqa: E402
from regressor.detect.dlib_detector import Detection, FaceDetector, default_detector  # noqa: E402

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6  # EXIF: the stored pixels must be turned 90 degrees clockwise to be upright


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return default_detector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB: Eileen Collins, NASA photo (public domain), shipped by scikit-image."""
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_detection(detector, astronaut) -> Detection:
    return detector.detect(astronaut)


def resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subject's right eye centre, left eye centre) from iBUG points 36-41 and 42-47."""
    return landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)


def test_detector_is_available_offline_when_the_extra_is_installed():
    assert detector_available()


def test_astronaut_has_one_face_with_landmarks_inside_its_box(astronaut_detection):
    found = astronaut_detection
    assert found is not None and found.num_faces == 1 and found.score > 0
    assert found.landmarks.shape == (68, 2) and found.landmarks.dtype == np.float32
    x0, y0, x1, y1 = found.box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    inner = found.landmarks[17:]  # brows, nose, eyes, mouth: strictly inside the detector's box
    assert np.all((inner[:, 0] > x0) & (inner[:, 0] < x1) & (inner[:, 1] > y0) & (inner[:, 1] < y1))
    margin = 0.25 * (x1 - x0)  # the jaw line may leave dlib's tight box a little, never by much
    points = found.landmarks
    assert np.all((points[:, 0] > x0 - margin) & (points[:, 0] < x1 + margin))
    assert np.all((points[:, 1] > y0 - margin) & (points[:, 1] < y1 + margin))


def test_astronaut_landmarks_have_face_anatomy(astronaut_detection):
    points = astronaut_detection.landmarks
    right_eye, left_eye = eye_centres(points)
    box_width = astronaut_detection.box[2] - astronaut_detection.box[0]
    inter_ocular = np.linalg.norm(left_eye - right_eye)
    assert 0.3 < inter_ocular / box_width < 0.6, inter_ocular / box_width
    assert right_eye[0] < left_eye[0]  # subject's right eye is on the viewer's left in a frontal photo
    eye_y = (right_eye[1] + left_eye[1]) / 2
    nose_tip_y, mouth_y, chin_y = points[30, 1], points[48:68, 1].mean(), points[8, 1]
    assert eye_y < nose_tip_y < mouth_y < chin_y
    assert points[0, 0] < points[30, 0] < points[16, 0]  # nose tip between the jaw ends


def test_grayscale_photo_gives_the_same_landmarks(detector, astronaut, astronaut_detection, tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(astronaut).convert("L").save(path)
    found = detector.detect(load_image(path))
    assert found is not None
    assert np.abs(found.landmarks - astronaut_detection.landmarks).max() <= 3.0


def test_exif_rotated_jpeg_is_detected_upright(detector, astronaut, tmp_path):
    upright_path, sideways_path = tmp_path / "upright.jpg", tmp_path / "sideways.jpg"
    Image.fromarray(astronaut).save(upright_path, quality=95)
    stored_sideways = np.ascontiguousarray(np.rot90(astronaut))  # what a camera held sideways stores
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_DISPLAY
    Image.fromarray(stored_sideways).save(sideways_path, quality=95, exif=exif)

    assert detector.detect(stored_sideways) is None  # the frontal detector needs the EXIF rotation applied
    found = detector.detect(load_image(sideways_path))
    reference = detector.detect(load_image(upright_path))
    assert found is not None and reference is not None
    assert np.abs(found.landmarks - reference.landmarks).max() <= 4.0


def test_cmyk_jpeg_is_detected(detector, astronaut, astronaut_detection, tmp_path):
    path = tmp_path / "print.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(path, quality=95)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    found = detector.detect(load_image(path))
    assert found is not None
    assert np.abs(found.landmarks - astronaut_detection.landmarks).max() <= 4.0


def test_huge_photo_is_detected_and_mapped_back_to_full_resolution(detector, astronaut, astronaut_detection):
    canvas = Image.new("RGB", (6000, 4000), (90, 90, 90))
    canvas.paste(Image.fromarray(astronaut).resize((4000, 4000), Image.Resampling.BILINEAR), (1000, 0))
    found = detector.detect(np.asarray(canvas))
    assert found is not None
    scale = 4000 / 512
    expected = (astronaut_detection.landmarks - 0.5) * scale + 0.5 + np.array([1000.0, 0.0])
    face_width = found.box[2] - found.box[0]
    assert 500 < face_width < 900  # the real face (~88 px at 512) scaled, not a downscaled-image box
    assert np.median(np.linalg.norm(found.landmarks - expected, axis=1)) < 0.03 * face_width


def test_tiny_face_is_found_by_upsampling(detector, astronaut):
    canvas = np.full((480, 640, 3), 120, np.uint8)
    canvas[200:360, 300:460] = resized(astronaut, 160)  # face box ~37 px, below the HOG template's ~80 px
    without_upsampling = FaceDetector(max_upsampled_side=640)
    assert without_upsampling.detect(canvas) is None
    found = detector.detect(canvas)
    assert found is not None
    centre = (found.box[:2] + found.box[2:]) / 2
    expected_centre = np.array([300, 200]) + np.array([222.0, 126.0]) * 160 / 512  # astronaut face centre
    assert np.linalg.norm(centre - expected_centre) < 8


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_image_without_a_face_gives_none(detector, kind):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) if kind == "noise" else np.full((300, 400, 3), 128, np.uint8)
    assert detector.detect(image) is None


def test_several_faces_are_counted_and_the_largest_is_picked(detector, astronaut, astronaut_detection):
    canvas = np.full((512, 512 + 384, 3), 120, np.uint8)
    canvas[:, :512] = astronaut
    canvas[:384, 512:] = resized(astronaut, 384)
    found = detector.detect(canvas)
    assert found is not None and found.num_faces == 2
    np.testing.assert_allclose(found.box, astronaut_detection.box, atol=2)


def test_suit_patch_clutter_is_not_picked_although_its_box_is_larger(detector, astronaut):
    # Beside a wide margin dlib also fires weakly (score ~0.02) on the suit patch with a box larger
    # than the face; the relative-score filter must keep the real face.
    canvas = np.full((512, 800, 3), 120, np.uint8)
    canvas[:, :512] = astronaut
    found = detector.detect(canvas)
    assert found is not None and found.num_faces == 1
    assert found.box[1] < 150  # the face (top ~83 px), not the patch (top ~330 px)


def test_detector_survives_pickling_for_dataloader_workers(detector, astronaut, astronaut_detection):
    copy = pickle.loads(pickle.dumps(detector))
    assert copy is not detector and copy.max_side == detector.max_side
    np.testing.assert_array_equal(copy.detect(astronaut).landmarks, astronaut_detection.landmarks)


def test_non_uint8_or_wrongly_shaped_arrays_are_rejected_clearly(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.detect(np.zeros((64, 64, 2), np.uint8))
