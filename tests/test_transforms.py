"""Specifications of the keypoint-aware augmentation (regressor.data.transforms)."""
from __future__ import annotations

import numpy as np
import pytest

from regressor.data.transforms import IBUG_FLIP_PERMUTATION, build_train_transform
from tests.face_folder_fixtures import schematic_face

NO_PHOTOMETRIC = dict(color_p=0.0, blur_p=0.0, noise_p=0.0, jpeg_p=0.0, grayscale_p=0.0)


def test_flip_permutation_is_an_involution_over_all_68_points():
    permutation = np.asarray(IBUG_FLIP_PERMUTATION)
    assert sorted(permutation.tolist()) == list(range(68))
    np.testing.assert_array_equal(permutation[permutation], np.arange(68))


def test_flip_permutation_maps_each_side_of_the_face_onto_the_other():
    face = schematic_face()  # written from the iBUG layout, independently of the permutation
    mirrored = face * np.array([-1.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(mirrored[list(IBUG_FLIP_PERMUTATION)], face, atol=1e-6)
    on_axis = [i for i in range(68) if IBUG_FLIP_PERMUTATION[i] == i]
    assert on_axis == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    assert IBUG_FLIP_PERMUTATION[36] == 45 and IBUG_FLIP_PERMUTATION[48] == 54 and IBUG_FLIP_PERMUTATION[0] == 16


def _labelled_dot_image(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One pixel per landmark, green channel = landmark index * 3, at distinct grid cells."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(16 * 16, size=68, replace=False)
    points = np.stack([(cells % 16) * 3 + 8.5, (cells // 16) * 3 + 8.5], axis=1).astype(np.float32)
    image = np.zeros((size, size, 3), np.uint8)
    for index, (x, y) in enumerate(points):
        image[int(y), int(x)] = (255, index * 3, 0)
    return image, points


def test_horizontal_flip_moves_pixels_and_relabels_landmarks_consistently():
    image, points = _labelled_dot_image()
    augment = build_train_transform(64, flip_p=1.0, affine_p=0.0, **NO_PHOTOMETRIC)
    flipped, new_points, _, _ = augment(image, points, seed=0)
    for index, (x, y) in enumerate(new_points):
        pixel = flipped[int(y), int(x)]
        assert pixel[0] == 255, f"landmark {index} is not on a dot after the flip"
        assert pixel[1] == IBUG_FLIP_PERMUTATION[index] * 3, f"landmark {index} sits on the wrong dot"
    np.testing.assert_allclose(new_points[:, 0], 64 - points[list(IBUG_FLIP_PERMUTATION), 0], atol=1e-4)


def _blob_image(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """3x3 white blobs centred on 68 well-separated landmarks (pixel centres)."""
    rng = np.random.default_rng(1)
    cells = rng.choice(14 * 14, size=68, replace=False)
    points = np.stack([(cells % 14) * 7 + 20.5, (cells // 14) * 7 + 20.5], axis=1).astype(np.float32)
    image = np.zeros((size, size, 3), np.uint8)
    for x, y in points:
        image[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    return image, points


@pytest.mark.parametrize("seed", range(4))
def test_affine_and_flip_keep_landmarks_on_their_blobs(seed):
    image, points = _blob_image()
    mask = (image[..., 0] > 0).astype(np.float32)
    augment = build_train_transform(
        128, flip_p=0.5, affine_p=1.0, max_rotation_deg=30, scale_range=(0.8, 1.2), max_translate=0.1, **NO_PHOTOMETRIC
    )
    moved, new_points, new_mask, _ = augment(image, points, mask, seed=seed)
    assert not np.allclose(new_points, points)  # something did happen
    ys, xs = np.nonzero(moved[..., 0])
    weights = moved[ys, xs, 0].astype(np.float64)
    checked = 0
    for x, y in new_points:
        if not (6 <= x <= 122 and 6 <= y <= 122):
            continue  # a blob cut by the border has a shifted centroid
        near = (xs + 0.5 - x) ** 2 + (ys + 0.5 - y) ** 2 < 9
        centroid = np.array([(weights[near] * (xs[near] + 0.5)).sum(), (weights[near] * (ys[near] + 0.5)).sum()])
        centroid /= weights[near].sum()
        assert np.hypot(*(centroid - (x, y))) < 0.35
        assert new_mask[int(y), int(x)] > 0.5  # the mask moved with the image
        checked += 1
    assert checked >= 50


def test_photometric_steps_leave_landmarks_and_geometry_alone():
    image, points = _blob_image()
    augment = build_train_transform(128, flip_p=0.0, affine_p=0.0, color_p=1.0, blur_p=1.0, noise_p=1.0, jpeg_p=1.0)
    changed, new_points, _, _ = augment(image, points, seed=3)
    np.testing.assert_allclose(new_points, points, atol=1e-5)
    assert changed.shape == image.shape and changed.dtype == np.uint8 and not np.array_equal(changed, image)


def test_same_seed_same_augmentation_different_seed_different():
    image, points = _blob_image()
    augment = build_train_transform(128)
    first = augment(image, points, seed=7)
    again = augment(image, points, seed=7)
    other = augment(image, points, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not (np.array_equal(first[0], other[0]) and np.array_equal(first[1], other[1]))


def test_landmarks_pushed_outside_the_crop_are_kept_in_order():
    image, points = _blob_image()
    points = points.copy()
    points[0] = (-5.0, 300.0)  # already off the image: must survive, not be dropped
    augment = build_train_transform(128, flip_p=0.0, affine_p=1.0, max_rotation_deg=0.0, scale_range=(1.0, 1.0),
                                    max_translate=0.0, **NO_PHOTOMETRIC)
    _, new_points, _, _ = augment(image, points, seed=0)
    assert new_points.shape == (68, 2)
    np.testing.assert_allclose(new_points[0], (-5.0, 300.0), atol=1e-3)


def test_flip_relabels_landmark_visibility_with_the_landmarks():
    image, points = _labelled_dot_image()
    visible = np.zeros(68, np.float32)
    visible[[0, 36, 48]] = 1.0  # the subject's right side only
    augment = build_train_transform(64, flip_p=1.0, affine_p=0.0, **NO_PHOTOMETRIC)
    result = augment(image, points, seed=0, landmarks_valid=visible)
    assert np.flatnonzero(result.landmarks_valid).tolist() == [16, 45, 54]
    assert build_train_transform(64, flip_p=0.0)(image, points, seed=0).landmarks_valid.tolist() == [1.0] * 68


def test_augmented_synthetic_face_keeps_its_visible_landmarks_on_its_mask():
    """A rendered face whose landmarks are known exactly: after flip + affine (and colour),
    the visible landmarks must still fall on the (equally transformed) face mask."""
    from regressor.synthetic.generator import SyntheticFaceDataset
    from regressor.synthetic.config import SyntheticConfig

    samples = SyntheticFaceDataset(3, image_size=64, split="val", config=SyntheticConfig.model_only()).__getitems__([0, 1, 2])
    augment = build_train_transform(64, flip_p=0.5, affine_p=1.0, max_rotation_deg=20, max_translate=0.08)
    on_mask = []
    for seed, sample in enumerate(samples):
        image = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        result = augment(image, sample["landmarks"].numpy(), sample["mask"][0].numpy(), seed=seed,
                         landmarks_valid=sample["landmarks_valid"].numpy())
        assert not np.allclose(result.landmarks, sample["landmarks"].numpy())
        visible = result.landmarks[result.landmarks_valid > 0]
        cols = np.clip(visible[:, 0].astype(int), 0, 63)
        rows = np.clip(visible[:, 1].astype(int), 0, 63)
        on_mask += (result.mask[rows, cols] > 0.5).tolist()
    assert np.mean(on_mask) >= 0.95
