"""Keypoint-aware training augmentation built from albumentations.

Image, 68 landmarks and (optional) mask move together through one ``A.Compose``. The only
piece albumentations lacks is the *semantic* part of a horizontal flip: after mirroring,
the subject's right eye is where the left one was, so the landmark indices must be
permuted (``IBUG_FLIP_PERMUTATION``). ``LandmarkHorizontalFlip`` adds that to
``A.HorizontalFlip``.

Coordinates: albumentations puts pixel centres at integers; the project puts pixel
*corners* at integers (``regressor.types``). ``FaceAugmentation`` converts on the way in
and out (±0.5), so a flip maps ``x -> W - x`` exactly as the project's convention requires.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np

from regressor.types import NUM_LANDMARKS


def _mirror_pairs() -> list[tuple[int, int]]:
    """Left/right pairs of the 0-based iBUG 68-point scheme."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0-16, chin tip 8 on the axis
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils; bridge 27-30 and tip 33 on the axis
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips; 51, 57 on the axis
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips; 62, 66 on the axis
    return pairs


def _permutation_from_pairs(pairs: list[tuple[int, int]], n: int) -> tuple[int, ...]:
    permutation = list(range(n))
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return tuple(permutation)


IBUG_FLIP_PERMUTATION: tuple[int, ...] = _permutation_from_pairs(_mirror_pairs(), NUM_LANDMARKS)
"""After mirroring an image, new landmark ``i`` is old landmark ``IBUG_FLIP_PERMUTATION[i]``."""


class LandmarkHorizontalFlip(A.HorizontalFlip):
    """``A.HorizontalFlip`` that also re-labels landmarks (left <-> right) after mirroring.

    The keypoints given to the ``Compose`` must be exactly the ``len(permutation)`` landmarks,
    in order, with ``remove_invisible=False`` (so rows are never dropped).
    """

    def __init__(self, permutation: tuple[int, ...] = IBUG_FLIP_PERMUTATION, p: float = 0.5):
        super().__init__(p=p)
        self.permutation = np.asarray(permutation, dtype=np.int64)

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        flipped = super().apply_to_keypoints(keypoints, **params)
        if len(flipped) != len(self.permutation):
            raise ValueError(
                f"LandmarkHorizontalFlip: got {len(flipped)} keypoints, expected {len(self.permutation)}"
            )
        return flipped[self.permutation]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("permutation",)


class Augmented(NamedTuple):
    """Result of ``FaceAugmentation``: image (S,S,3) uint8, landmarks (68,2), mask (S,S) or None,
    landmarks_valid (68,) (re-labelled with the landmarks when the image was flipped)."""

    image: np.ndarray
    landmarks: np.ndarray
    mask: np.ndarray | None
    landmarks_valid: np.ndarray


class FaceAugmentation:
    """Callable ``(image, landmarks, mask=None, seed=None, landmarks_valid=None) -> Augmented``.

    Args of ``__call__``:
        image: (S, S, 3) uint8 crop.
        landmarks: (68, 2) float, project pixel coordinates of that crop.
        mask: optional (S, S) float in [0, 1].
        seed: re-seeds the pipeline first, making this call reproducible (datasets pass a
            seed drawn from torch's RNG, so ``seed_everything`` governs augmentation too).
        landmarks_valid: optional (68,) visibility; carried as a keypoint label, so a flip
            permutes it together with the landmarks (default: all ones).
    """

    def __init__(self, transforms: list[A.BasicTransform]):
        self.compose = A.Compose(
            transforms,
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False, label_fields=["landmarks_valid"]),
        )

    def __call__(
        self,
        image: np.ndarray,
        landmarks: np.ndarray,
        mask: np.ndarray | None = None,
        seed: int | None = None,
        landmarks_valid: np.ndarray | None = None,
    ) -> Augmented:
        if seed is not None:
            self.compose.set_random_seed(int(seed))
        if landmarks_valid is None:
            landmarks_valid = np.ones(len(landmarks), np.float32)
        valid = np.asarray(landmarks_valid, np.float32)
        data: dict[str, Any] = {
            "image": image, "keypoints": np.asarray(landmarks, np.float32) - 0.5, "landmarks_valid": valid,
        }
        if mask is not None:
            data["mask"] = mask.astype(np.float32)
        out = self.compose(**data)
        points = np.asarray(out["keypoints"], dtype=np.float32)[:, :2] + 0.5
        return Augmented(
            out["image"], points, out["mask"] if mask is not None else None,
            np.asarray(out["landmarks_valid"], dtype=np.float32),
        )

    def __repr__(self) -> str:
        return f"FaceAugmentation({self.compose!r})"


def build_train_transform(
    image_size: int,
    flip_p: float = 0.5,
    affine_p: float = 0.7,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.93, 1.07),
    max_translate: float = 0.04,
    color_p: float = 0.8,
    blur_p: float = 0.2,
    noise_p: float = 0.2,
    jpeg_p: float = 0.2,
    grayscale_p: float = 0.05,
) -> FaceAugmentation:
    """Photometric (colour, greyscale, blur, noise, JPEG) and small geometric (affine, flip)
    augmentation for square face crops of side ``image_size``. Probabilities of 0 disable a
    step. Blur kernels scale with the crop so that 32 px and 224 px crops blur alike."""
    blur_max = max(3, int(image_size / 32) * 2 + 1)
    transforms: list[A.BasicTransform] = [
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=color_p),
        A.ToGray(p=grayscale_p),
        A.OneOf([A.GaussianBlur(blur_limit=(3, blur_max)), A.MotionBlur(blur_limit=(3, blur_max))], p=blur_p),
        A.GaussNoise(std_range=(0.01, 0.05), p=noise_p),
        A.ImageCompression(quality_range=(40, 95), p=jpeg_p),
        A.Affine(
            rotate=(-max_rotation_deg, max_rotation_deg), scale=scale_range,
            translate_percent=(-max_translate, max_translate), interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=affine_p,
        ),
        LandmarkHorizontalFlip(p=flip_p),
    ]
    return FaceAugmentation(transforms)
