"""Specifications of FaceFolderDataset: sample contract, crops, augmentation, bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from regressor.data.folder import FaceFolderDataset
from regressor.data.image_io import ImageReadError
from regressor.data.landmarks_io import LandmarkFileError, load_landmarks, save_pts
from regressor.data.transforms import build_train_transform
from regressor.types import FaceBatch
from tests.face_folder_fixtures import draw_face, make_face_folder, schematic_face

NO_PHOTOMETRIC = dict(color_p=0.0, blur_p=0.0, noise_p=0.0, jpeg_p=0.0, grayscale_p=0.0)


@pytest.fixture()
def folder(tmp_path) -> Path:
    make_face_folder(tmp_path, count=6, height=150, width=130)
    return tmp_path


def quiet_dataset(*args, **kwargs) -> FaceFolderDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FaceFolderDataset(*args, **kwargs)


def red_fraction_at_landmarks(sample: dict) -> float:
    """Share of in-image landmarks whose pixel is red (the fixture draws a red dot on each)."""
    image = sample["image"].permute(1, 2, 0).numpy()
    size = image.shape[0]
    hits = []
    for x, y in sample["landmarks"].numpy():
        if 0 <= x < size and 0 <= y < size:
            r, g, _ = image[int(y), int(x)]
            hits.append(r - g > 0.1)
    return float(np.mean(hits))


def test_samples_follow_the_dataset_contract_and_collate_into_a_face_batch(folder):
    dataset = FaceFolderDataset(folder, image_size=32, split="val")
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["landmarks"].shape == (68, 2) and sample["landmarks_valid"].shape == (68,)
    assert sample["mask"].shape == (1, 32, 32) and sample["index"].dtype == torch.long
    assert sample["name"] == "face_00"
    batch = FaceBatch.from_dict(next(iter(DataLoader(dataset, batch_size=4))))
    assert batch.image.shape == (4, 3, 32, 32) and batch.landmarks.shape == (4, 68, 2)


def test_crop_is_a_square_around_the_landmarks_scaled_by_crop_scale(folder):
    dataset = FaceFolderDataset(folder, image_size=64, split="val", crop_scale=1.25, crop_shift_y=0.0)
    landmarks = dataset[2]["landmarks"].numpy()
    low, high = landmarks.min(0), landmarks.max(0)
    np.testing.assert_allclose((low + high) / 2, (32.0, 32.0), atol=1e-3)
    assert max(high - low) == pytest.approx(64 / 1.25, abs=1e-3)
    shifted = FaceFolderDataset(folder, image_size=64, split="val", crop_scale=1.25, crop_shift_y=-0.1)[2]["landmarks"]
    np.testing.assert_allclose(shifted.numpy().mean(0) - landmarks.mean(0), (0.0, 6.4), atol=1e-3)  # crop moved up


def test_default_crop_frames_faces_like_the_synthetic_data(folder):
    landmarks = FaceFolderDataset(folder, image_size=64, split="val")[0]["landmarks"].numpy()
    low, high = landmarks.min(0), landmarks.max(0)
    assert 0.55 <= max(high - low) / 64 <= 0.72  # synthetic: landmark box 0.55-0.72 of the side
    assert (low + high)[1] / 2 / 64 == pytest.approx(0.54, abs=0.01)  # and a little below the centre


def test_landmarks_sit_on_the_drawn_dots_without_augmentation(folder):
    dataset = FaceFolderDataset(folder, image_size=64, split="val")
    assert all(red_fraction_at_landmarks(dataset[i]) >= 0.95 for i in range(len(dataset)))


def test_landmarks_stay_on_the_dots_through_jitter_affine_and_flip(folder):
    augment = build_train_transform(64, flip_p=0.5, affine_p=1.0, **NO_PHOTOMETRIC)
    dataset = FaceFolderDataset(folder, image_size=64, split="train", augment=augment, crop_jitter=0.1)
    torch.manual_seed(0)
    fractions = [red_fraction_at_landmarks(dataset[i % len(dataset)]) for i in range(12)]
    assert min(fractions) >= 0.9, fractions


def test_mask_covers_the_face_and_not_the_corners(folder):
    mask = FaceFolderDataset(folder, image_size=64, split="val")[0]["mask"][0]
    assert mask[32, 32] == 1.0 and mask[0, 0] == 0.0 and mask[63, 63] == 0.0


def test_training_samples_are_reproducible_under_a_torch_seed_and_vary_otherwise(folder):
    dataset = FaceFolderDataset(folder, image_size=32, split="train", augment=build_train_transform(32))
    torch.manual_seed(5)
    first = dataset[1]
    torch.manual_seed(5)
    again = dataset[1]
    other = dataset[1]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["landmarks"], again["landmarks"])
    assert not torch.equal(first["landmarks"], other["landmarks"])


def test_evaluation_samples_are_deterministic(folder):
    dataset = FaceFolderDataset(folder, image_size=32, split="test", augment=build_train_transform(32))
    assert torch.equal(dataset[3]["image"], dataset[3]["image"])


def test_masks_and_meshes_are_read_when_present(folder):
    (folder / "masks").mkdir()
    for i in range(6):
        mask = np.zeros((150, 130), np.uint8)
        mask[:, :65] = 255  # left half only: clearly not the landmark hull
        Image.fromarray(mask).save(folder / "masks" / f"face_{i:02d}.png")
    (folder / "meshes").mkdir()
    for i in range(6):
        (folder / "meshes" / f"face_{i:02d}.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 0.5\nf 1 2 3\n")
    dataset = FaceFolderDataset(folder, image_size=32, split="val", load_meshes=True)
    sample = dataset[0]
    assert sample["vertices"].shape == (4, 3) and sample["vertices"][3, 2] == 0.5
    column_means = sample["mask"][0].mean(0)
    assert column_means[:8].mean() > 0.2 and column_means[-4:].max() == 0.0


def test_splits_file_restricts_the_folder(folder):
    (folder / "splits").mkdir()
    (folder / "splits" / "val.txt").write_text("face_01\nface_04\n")
    assert [r.name for r in FaceFolderDataset(folder, split="val").records] == ["face_01", "face_04"]
    assert len(FaceFolderDataset(folder, split="train")) == 6


def test_landmarks_next_to_the_images_and_in_landmarks_dir_are_found(tmp_path):
    make_face_folder(tmp_path / "a", count=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for stem in ("face_00", "face_01"):
        (tmp_path / "a" / "images" / f"{stem}.png").rename(flat / f"{stem}.png")
    np.save(flat / "face_00.npy", load_landmarks(tmp_path / "a" / "landmarks" / "face_00.pts"))
    assert len(quiet_dataset(flat, split="val")) == 1  # face_01 has no landmarks here
    assert len(FaceFolderDataset(flat, split="val", landmarks_dir=tmp_path / "a" / "landmarks")) == 2


def test_big_jpeg_is_decoded_at_reduced_size_with_landmarks_still_on_the_dots(tmp_path, monkeypatch):
    from regressor.data import folder as folder_module

    (tmp_path / "images").mkdir()
    landmarks = schematic_face() * 350 + np.array([600.0, 800.0])
    Image.fromarray(draw_face(1600, 1200, landmarks)).save(tmp_path / "images" / "big.jpg", quality=92)
    save_pts(tmp_path / "images" / "big.pts", landmarks)
    scales = []
    original = folder_module.load_image_reduced

    def spy(path, scale):
        image, actual = original(path, scale)
        scales.append(actual)
        return image, actual

    monkeypatch.setattr(folder_module, "load_image_reduced", spy)
    sample = FaceFolderDataset(tmp_path, image_size=48, split="val")[0]
    assert scales == [0.125]  # JPEG DCT scaling did the heavy lifting
    assert red_fraction_at_landmarks(sample) >= 0.95


# --------------------------------------------------------------------------- bad input


def _break(folder: Path, case: str) -> str:
    """Damage face_02 in the way ``case`` names; return the file name an error must mention."""
    image, pts = folder / "images" / "face_02.png", folder / "landmarks" / "face_02.pts"
    landmarks = load_landmarks(pts)
    if case == "corrupt_file":
        image.write_bytes(b"this is not a png")
        return "face_02.png"
    if case == "truncated_png":
        image.write_bytes(image.read_bytes()[:-400])
        return "face_02.png"
    if case == "missing_landmark_file":
        pts.unlink()
        return "face_02"
    if case == "67_points":
        save_pts(pts, landmarks[:67])
        return "face_02.pts"
    if case == "nan_coordinates":
        landmarks[10, 0] = np.nan
        pts.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in landmarks) + "\n}\n")
        return "face_02.pts"
    if case == "landmarks_of_another_image":
        save_pts(pts, landmarks * 5 + 400)
        return "face_02.pts"
    raise AssertionError(case)


BAD_CASES = {
    "corrupt_file": ("unreadable_image", ImageReadError),
    "truncated_png": ("unreadable_image", ImageReadError),
    "missing_landmark_file": ("missing_landmarks", FileNotFoundError),
    "67_points": ("bad_landmarks", LandmarkFileError),
    "nan_coordinates": ("nan_landmarks", LandmarkFileError),
    "landmarks_of_another_image": ("landmarks_outside_image", LandmarkFileError),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_is_skipped_and_counted_by_reason_in_lenient_mode(folder, case):
    _break(folder, case)
    reason, _ = BAD_CASES[case]
    with pytest.warns(UserWarning, match="face_02"):
        dataset = FaceFolderDataset(folder, image_size=32, split="train")
    assert len(dataset) == 5 and "face_02" not in [r.name for r in dataset.records]
    assert dataset.skipped == {reason: 1}
    assert f"{reason}: 1" in dataset.skip_report()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_raises_a_clear_error_naming_it_in_strict_mode(folder, case):
    name = _break(folder, case)
    _, error_type = BAD_CASES[case]
    with pytest.raises(error_type, match=name):
        FaceFolderDataset(folder, image_size=32, strict=True)


def _truncate_jpeg(folder: Path, stem: str) -> Path:
    """Replace ``stem``'s png by a jpeg cut in half: its header is fine, only decoding fails."""
    png = folder / "images" / f"{stem}.png"
    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    png.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    return jpeg


def test_truncated_jpeg_found_while_loading_is_replaced_by_the_next_sample_and_counted(folder):
    _truncate_jpeg(folder, "face_02")
    dataset = FaceFolderDataset(folder, image_size=32, split="val")
    assert len(dataset) == 6  # its header passed the up-front scan
    with pytest.warns(UserWarning, match="face_02.jpg"):
        sample = dataset[2]
    assert sample["name"] == "face_03" and int(sample["index"]) == 3
    assert dataset.skipped == {"unreadable_image": 1}
    assert dataset[2]["name"] == "face_03"  # known bad now: replaced without a second warning or count
    assert dataset.skipped == {"unreadable_image": 1}


def test_truncated_jpeg_raises_when_loaded_in_strict_mode(folder):
    _truncate_jpeg(folder, "face_02")
    dataset = FaceFolderDataset(folder, image_size=32, split="val", strict=True)
    with pytest.raises(ImageReadError, match="face_02.jpg"):
        dataset[2]


@pytest.mark.parametrize("kind", ["grayscale", "alpha", "16-bit", "cmyk"])
def test_grayscale_rgba_16bit_and_cmyk_images_are_converted_not_skipped(folder, kind):
    rgb = np.asarray(Image.open(folder / "images" / "face_01.png").convert("RGB"))
    target = folder / "images" / "face_01.png"
    if kind == "grayscale":
        Image.fromarray(rgb).convert("L").save(target)
    elif kind == "alpha":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(target)
    elif kind == "16-bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(target)
    else:
        target.unlink()
        Image.fromarray(rgb).convert("CMYK").save(target.with_suffix(".jpg"), quality=95)
    for strict in (False, True):
        dataset = FaceFolderDataset(folder, image_size=32, split="val", strict=strict)
        assert len(dataset) == 6 and sum(dataset.skipped.values()) == 0
        assert dataset.skip_log.converted == {kind: 1} and f"converted 1 {kind}" in dataset.skip_report()
        sample = dataset[1]
        assert sample["image"].shape == (3, 32, 32) and sample["image"].std() > 0.05


def test_folder_with_ten_percent_bad_files_gives_a_full_epoch_and_reports_skips_by_reason(tmp_path):
    make_face_folder(tmp_path, count=30, height=96, width=96)
    (tmp_path / "images" / "face_03.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
    save_pts(tmp_path / "landmarks" / "face_11.pts", schematic_face()[:60] * 20 + 48)  # mislabelled count
    _truncate_jpeg(tmp_path, "face_25")  # found only while loading, inside a worker
    (tmp_path / "landmarks" / "face_17.pts").unlink()  # missing
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        dataset = FaceFolderDataset(tmp_path, image_size=32, split="train", augment=build_train_transform(32))
        loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2,
                            generator=torch.Generator().manual_seed(0))
        names = [name for batch in loader for name in batch["name"]]
    assert len(names) == len(dataset) == 27  # a full epoch: the lazily found bad file was replaced
    assert not {"face_03", "face_11", "face_17", "face_25"} & set(names)
    assert dataset.skipped == {"unreadable_image": 2, "bad_landmarks": 1, "missing_landmarks": 1}
    report = dataset.skip_report()
    assert "skipped 4 file(s)" in report and "unreadable_image: 2" in report


# --------------------------------------------------------------------------- landmark provider


def test_landmark_provider_fills_in_missing_files_and_no_face_is_a_counted_skip(folder):
    known = {f"face_{i:02d}": load_landmarks(folder / "landmarks" / f"face_{i:02d}.pts") for i in range(6)}
    for pts in (folder / "landmarks").glob("*.pts"):
        pts.unlink()
    asked = []

    def provider(path: Path) -> np.ndarray:
        asked.append(path.stem)
        if path.stem == "face_04":
            raise ValueError(f"no face found in {path}")
        return known[path.stem]

    dataset = FaceFolderDataset(folder, image_size=64, split="val", landmark_provider=provider)
    assert len(dataset) == 6 and not asked  # lazily: nothing detected before it is needed
    assert red_fraction_at_landmarks(dataset[0]) >= 0.95
    with pytest.warns(UserWarning, match="face_04"):
        assert dataset[4]["name"] == "face_05"
    assert dataset.skipped == {"no_face_detected": 1}


def test_a_broken_landmark_provider_stops_the_run(folder):
    (folder / "landmarks" / "face_00.pts").unlink()

    def provider(path: Path) -> np.ndarray:
        raise RuntimeError("the [detect] extra is not installed")

    dataset = FaceFolderDataset(folder, image_size=32, split="val", landmark_provider=provider)
    with pytest.raises(RuntimeError, match="detect"):
        dataset[0]


def test_an_empty_or_entirely_bad_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FaceFolderDataset(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        FaceFolderDataset(tmp_path)
    Image.fromarray(draw_face(40, 40, schematic_face() * 10 + 20)).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(ValueError, match="no usable samples.*missing_landmarks: 1"):
        quiet_dataset(tmp_path)
