"""Real photos with 68 landmarks as training / evaluation samples.

``FaceFolderDataset`` yields the project's sample dict (``regressor.types.FaceBatch``):
``image`` (3,S,S) float [0,1], ``landmarks`` (68,2) px of the crop, ``landmarks_valid`` (68,),
``mask`` (1,S,S), ``index`` (long), ``name`` (str), and ``vertices`` (V,3) when meshes are
loaded. The crop is a square box around the landmarks (scaled, jittered in training), resized
to ``image_size``; augmentation (``regressor.data.transforms``) then moves image, landmarks and
mask together.

Bad files never end an epoch. The folder is vetted up front (``folder_scan``); whatever only
decoding reveals is found in ``__getitem__``, counted, and the sample is replaced by the next
good one (deterministically: the next index in order). ``strict=True`` raises instead, naming
the file. ``dataset.skipped`` / ``dataset.skip_report()`` give the counts by reason, including
those found inside DataLoader workers.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from regressor.data.crop import box_from_landmarks, crop_image, crop_mask, crop_points, landmark_hull_mask
from regressor.data.folder_scan import FaceRecord, SampleSkipped, check_landmarks_fit_image, scan_face_folder
from regressor.data.image_io import ImageReadError, load_image, load_image_reduced
from regressor.data.landmarks_io import LandmarkFileError
from regressor.data.transforms import FaceAugmentation
from regressor.types import NUM_LANDMARKS

LandmarkProvider = Callable[[Path], np.ndarray]
"""``provider(image_path) -> (68, 2)`` landmarks in pixels of ``load_image(image_path)``.
Raises ``ValueError`` when there is no face (the sample is skipped and counted), any other
error (e.g. the detector is not installed) stops the run. The optional offline detector supplies one (``CachedLandmarkProvider``)."""


class FaceFolderDataset(Dataset):
    """Face crops from a folder of photos and landmark files (layout: ``regressor.data.folder_scan``).

    Args:
        root: the folder.
        image_size: side of the square output crop, pixels.
        split: ``"train"`` turns on crop jitter and ``augment``; and if ``root/splits/<split>.txt``
            exists, only the stems listed there are used.
        landmarks_dir: extra folder searched first for landmark files.
        strict: raise on the first bad file instead of skipping it.
        augment: a ``FaceAugmentation`` (e.g. ``build_train_transform(image_size)``), training only.
        crop_scale: crop side / larger side of the landmarks' bounding box.
        crop_shift_y: move the crop centre by this fraction of its side (negative = up).
            The crop defaults reproduce the synthetic faces' framing (measured on the
            ``val`` split: landmark box 0.63 (0.55-0.71) of the image side, its centre
            0.04 of the side below the image centre), so real and synthetic crops agree.
        crop_jitter: training-time random shift of the crop centre, fraction of the side.
        crop_scale_jitter: training-time random crop size factor ``1 ± crop_scale_jitter``.
        load_meshes: add ``vertices`` from ``root/meshes/<stem>.obj`` (different meshes have
            different vertex counts, so collate with batch size 1).
        landmark_provider: called for images without a landmark file (see ``LandmarkProvider``);
            without one, such images are skipped as ``missing_landmarks``.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 64,
        split: str = "train",
        landmarks_dir: str | Path | None = None,
        strict: bool = False,
        augment: FaceAugmentation | None = None,
        crop_scale: float = 1.6,
        crop_shift_y: float = -0.04,
        crop_jitter: float = 0.04,
        crop_scale_jitter: float = 0.12,
        load_meshes: bool = False,
        landmark_provider: LandmarkProvider | None = None,
    ):
        self.root = Path(root)
        self.image_size = int(image_size)
        self.split = split
        self.training = split == "train"
        self.strict = strict
        self.augment = augment
        self.crop_scale, self.crop_shift_y = crop_scale, crop_shift_y
        self.crop_jitter, self.crop_scale_jitter = crop_jitter, crop_scale_jitter
        self.load_meshes = load_meshes
        self.landmark_provider = landmark_provider
        self.records, self.skip_log = scan_face_folder(
            self.root, split=split, landmarks_dir=landmarks_dir, strict=strict, load_meshes=load_meshes,
            allow_missing_landmarks=landmark_provider is not None,
        )
        if not self.records:
            hint = ""
            if self.skipped["missing_landmarks"]:
                hint = ("; for photos without landmark files run `regressor landmarks --images DIR --out DIR`, or "
                        "set detect_landmarks: true on FaceDataModule (both need `pip install -e .[detect]`)")
            raise ValueError(f"no usable samples in {self.root}: {self.skip_report()}{hint}")
        if sum(self.skipped.values()):
            warnings.warn(self.skip_report(), stacklevel=2)

    # ------------------------------------------------------------------ reporting
    @property
    def skipped(self) -> Counter:
        """Skipped files by reason (``folder_scan.SKIP_REASONS``), up-front and lazy."""
        return self.skip_log.skipped

    def skip_report(self) -> str:
        return self.skip_log.report(f"face folder {self.root} [{self.split}]")

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # One draw from torch's RNG per sample: seed_everything / DataLoader worker seeding
        # then govern crop jitter and augmentation, and no two epochs repeat them.
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if self.training else 0
        count = len(self.records)
        for offset in range(count):
            candidate = (index + offset) % count
            if self.skip_log.lazy_reason(candidate) is not None:
                continue
            try:
                return self._load(candidate, seed)
            except SampleSkipped as skip:
                if self.strict:
                    raise skip.error from None
                self.skip_log.mark_lazy(candidate, skip.reason)
                warnings.warn(f"skipping {self.records[candidate].image_path.name}: {skip.error}", stacklevel=2)
        raise RuntimeError(f"every sample of {self.root} failed to load: {self.skip_report()}")

    def _load(self, index: int, seed: int) -> dict[str, Any]:
        record = self.records[index]
        landmarks = record.landmarks if record.landmarks is not None else self._provide(record)
        rng = np.random.default_rng(seed)
        jitter = self.training and (self.crop_jitter > 0 or self.crop_scale_jitter > 0)
        box = box_from_landmarks(
            landmarks, scale=self.crop_scale, shift_y=self.crop_shift_y,
            jitter=self.crop_jitter if jitter else 0.0, scale_jitter=self.crop_scale_jitter if jitter else 0.0,
            rng=rng if jitter else None,
        )
        size = self.image_size
        try:  # decode big JPEGs at reduced size: twice the crop's resolution is plenty
            image, scale = load_image_reduced(record.image_path, 2.0 * size / box.size)
        except ImageReadError as error:
            raise SampleSkipped("unreadable_image", error) from None
        crop = crop_image(image, box.scaled(scale), size)
        points = crop_points(landmarks, box, size)
        mask = None
        if record.mask_path is not None:
            mask = crop_mask(self._load_mask(record.mask_path), box, size)
        if self.training and self.augment is not None:
            crop, points, mask, _ = self.augment(crop, points, mask, seed=seed + 1)
        if mask is None:
            mask = landmark_hull_mask(points, size)

        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0),
            "landmarks": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "landmarks_valid": torch.ones(NUM_LANDMARKS),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "index": torch.tensor(index, dtype=torch.long),
            "name": record.name,
        }
        if self.load_meshes:
            sample["vertices"] = self._load_mesh(record.mesh_path)
        return sample

    def _provide(self, record: FaceRecord) -> np.ndarray:
        path = record.image_path
        try:
            landmarks = np.asarray(self.landmark_provider(path), dtype=np.float32)
        except ImageReadError as error:
            raise SampleSkipped("unreadable_image", error) from None
        except ValueError as error:  # no face found (NoFaceFoundError is a ValueError)
            raise SampleSkipped("no_face_detected", error) from None
        if landmarks.shape != (NUM_LANDMARKS, 2) or not np.isfinite(landmarks).all():
            raise RuntimeError(
                f"landmark_provider returned {landmarks.shape} landmarks for {path}, expected finite (68, 2)"
            )
        try:
            check_landmarks_fit_image(landmarks, record.width, record.height, path)
        except LandmarkFileError as error:
            raise SampleSkipped("landmarks_outside_image", error) from None
        return landmarks

    @staticmethod
    def _load_mask(path: Path) -> np.ndarray:
        try:
            return load_image(path)[..., 0].astype(np.float32) / 255.0
        except ImageReadError as error:
            raise SampleSkipped("unreadable_mask", error) from None

    @staticmethod
    def _load_mesh(path: Path) -> torch.Tensor:
        from pytorch3d.io import load_obj

        try:
            vertices, _, _ = load_obj(str(path), load_textures=False)
        except (OSError, ValueError) as error:
            raise SampleSkipped("unreadable_mesh", error) from None
        return vertices.float()
