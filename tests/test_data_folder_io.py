"""Specifications of image and landmark file reading (regressor.data.image_io / landmarks_io)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from regressor.data.image_io import ImageReadError, list_images, load_image, load_image_reduced, probe_image
from regressor.data.landmarks_io import LandmarkFileError, find_landmark_file, load_landmarks, save_pts


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode,ext", [("L", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg"), ("1", "png"), ("LA", "png")])
def test_every_pixel_mode_becomes_uint8_rgb(tmp_path, rgb, mode, ext):
    path = tmp_path / f"img.{ext}"
    Image.fromarray(rgb).convert(mode).save(path)
    assert Image.open(path).mode == mode  # the file really is in that mode
    image = load_image(path)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8


def test_grayscale_gives_three_equal_channels(tmp_path, rgb):
    path = tmp_path / "gray.png"
    Image.fromarray(rgb[..., 0]).save(path)
    image = load_image(path)
    np.testing.assert_array_equal(image[..., 0], rgb[..., 0])
    np.testing.assert_array_equal(image[..., 1], image[..., 2])


def test_cmyk_jpeg_keeps_colours_close(tmp_path):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(red).convert("CMYK").save(path, quality=95)
    image = load_image(path).astype(int)
    assert abs(image[..., 0].mean() - 220) < 12 and image[..., 1].mean() < 20 and image[..., 2].mean() < 20


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)  # up to 59900
    path = tmp_path / "depth16.png"
    Image.fromarray(ramp).save(path)
    image = load_image(path)
    np.testing.assert_allclose(image[..., 0].astype(float), ramp / 257.0, atol=0.51)


def test_transparent_pixels_are_composited_on_the_background(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=2)
    rgba[:10, :, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_image(path, background=(0, 0, 0))
    np.testing.assert_array_equal(image[:10], rgb[:10])
    assert image[10:].max() == 0


def test_exif_orientation_is_applied(tmp_path, rgb):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    assert load_image(path).shape == (30, 20, 3)


def test_truncated_png_raises_naming_the_file(tmp_path, rgb):
    path = tmp_path / "full.png"
    Image.fromarray(rgb).save(path)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated.png.*truncated"):
        load_image(truncated)


@pytest.mark.parametrize("content", [b"", b"definitely not a jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_corrupt_files_raise_image_read_error(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(path)


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")


def test_images_above_the_pixel_limit_are_refused_clearly(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (200, 200)).save(path)
    with pytest.raises(ImageReadError, match="larger than the limit"):
        load_image(path, max_pixels=10_000)
    assert load_image(path, max_pixels=40_000).shape == (200, 200, 3)


def test_list_images_is_sorted_and_filters_extensions(tmp_path, rgb):
    for name in ["b.png", "a.JPG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]


def test_reduced_jpeg_decode_is_an_exact_block_average_of_the_full_image(tmp_path):
    rng = np.random.default_rng(2)
    smooth = np.kron(rng.integers(0, 256, size=(12, 16, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    full = load_image(path).astype(float)
    reduced, scale = load_image_reduced(path, 0.2)
    assert scale == 0.25 and reduced.shape == (120, 160, 3)  # the smallest of 1/2, 1/4, 1/8 that is >= 0.2
    blocks = full.reshape(120, 4, 160, 4, 3).mean(axis=(1, 3))
    assert np.abs(blocks - reduced).mean() < 2.0  # pixel (c, r) of the reduced image = block (4c.., 4r..)
    shifted = full[2:-2].reshape(119, 4, 160, 4, 3).mean(axis=(1, 3))
    assert np.abs(shifted - reduced[:119]).mean() > np.abs(blocks - reduced).mean()


def test_reduced_decode_of_other_formats_is_full_size(tmp_path, rgb):
    path = tmp_path / "small.png"
    Image.fromarray(rgb).save(path)
    image, scale = load_image_reduced(path, 0.1)
    assert scale == 1.0 and np.array_equal(image, rgb)


def test_probe_reads_upright_size_and_mode_without_decoding(tmp_path, rgb):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).convert("L").save(path, exif=exif)
    info = probe_image(path)
    assert (info.width, info.height, info.mode, info.conversion) == (20, 30, "L", "grayscale")


# ----------------------------------------------------------------------------- landmarks


@pytest.fixture()
def points() -> np.ndarray:
    return (np.random.default_rng(1).random((68, 2)) * 100).astype(np.float32)


def test_pts_round_trip_is_exact_and_file_is_one_based(tmp_path, points):
    path = save_pts(tmp_path / "face.pts", points)
    np.testing.assert_allclose(load_landmarks(path), points, atol=1e-3)
    text = path.read_text().splitlines()
    assert text[:3] == ["version: 1", "n_points: 68", "{"] and text[-1] == "}"
    first_x = float(text[3].split()[0])
    assert first_x == pytest.approx(points[0, 0] + 0.5, abs=1e-3)  # iBUG: pixel centres at integers, 1-based


@pytest.mark.parametrize("layout", ["68x2", "1x68x2", "flat", "68x3"])
def test_npy_layouts_are_accepted(tmp_path, points, layout):
    array = {"68x2": points, "1x68x2": points[None], "flat": points.reshape(-1),
             "68x3": np.concatenate([points, np.ones((68, 1), np.float32)], 1)}[layout]
    np.save(tmp_path / "face.npy", array)
    np.testing.assert_allclose(load_landmarks(tmp_path / "face.npy"), points)


@pytest.mark.parametrize("delimiter", [" ", ","])
def test_txt_is_read_with_spaces_or_commas(tmp_path, points, delimiter):
    np.savetxt(tmp_path / "face.txt", points, delimiter=delimiter)
    np.testing.assert_allclose(load_landmarks(tmp_path / "face.txt"), points, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".pts", ".npy", ".txt"])
def test_wrong_point_count_names_file_and_counts(tmp_path, points, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".pts":
        save_pts(path, points[:67])
    elif suffix == ".npy":
        np.save(path, points[:67])
    else:
        np.savetxt(path, points[:67])
    with pytest.raises(LandmarkFileError, match=r"x\.(pts|npy|txt) has 67 points, expected 68"):
        load_landmarks(path)


@pytest.mark.parametrize("suffix", [".pts", ".npy", ".txt"])
def test_nan_coordinates_are_rejected(tmp_path, points, suffix):
    path = tmp_path / f"nan{suffix}"
    points = points.copy()
    points[5, 1] = np.nan
    if suffix == ".pts":
        path.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in points) + "\n}\n")
    elif suffix == ".npy":
        np.save(path, points)
    else:
        np.savetxt(path, points)
    with pytest.raises(LandmarkFileError, match="non-finite coordinates.*first point 5"):
        load_landmarks(path)


def test_pts_header_disagreeing_with_body_is_rejected(tmp_path, points):
    path = tmp_path / "liar.pts"
    path.write_text("version: 1\nn_points: 70\n{\n" + "\n".join(f"{x} {y}" for x, y in points) + "\n}\n")
    with pytest.raises(LandmarkFileError, match="declares n_points: 70 but lists 68"):
        load_landmarks(path)


def test_missing_and_garbage_landmark_files_raise(tmp_path):
    with pytest.raises(LandmarkFileError, match="gone.pts: does not exist"):
        load_landmarks(tmp_path / "gone.pts")
    (tmp_path / "junk.pts").write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(LandmarkFileError, match="junk.pts"):
        load_landmarks(tmp_path / "junk.pts")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(LandmarkFileError, match="junk.npy"):
        load_landmarks(tmp_path / "junk.npy")


def test_find_landmark_file_prefers_directory_order(tmp_path, points):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "face.npy", points)
    save_pts(tmp_path / "a" / "face.pts", points)
    assert find_landmark_file("face", [tmp_path / "a", tmp_path / "b"]) == tmp_path / "a" / "face.pts"
    assert find_landmark_file("other", [tmp_path / "a"]) is None
