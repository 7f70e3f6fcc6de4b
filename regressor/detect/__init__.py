"""Offline 68-point landmark detection for raw photos (the optional ``[detect]`` extra).

Why dlib: ``dlib-bin`` is a prebuilt wheel and ``face_recognition_models`` ships dlib's
iBUG 68-point shape predictor inside its wheel, so detection works with no network at run
time (the detectors most face repos use download their weights on first call).

Only this file is imported eagerly; it must work without dlib installed, so that the rest of
the project (and its tests) run without the extra and fail with a clear message only when
detection is actually needed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL_HINT = (
    "install the optional detector with `make detect` or `pip install -e .[detect]` "
    "(dlib-bin + face_recognition_models, no download at run time), "
    "or supply landmark files yourself (68 iBUG points per image as .pts/.npy/.txt, "
    "e.g. written by `regressor landmarks --images DIR --out DIR` on a machine with the extra)"
)
PREDICTOR_FILE = "models/shape_predictor_68_face_landmarks.dat"


class DetectorUnavailableError(RuntimeError):
    """Raised when landmarks must be detected but the ``[detect]`` extra is not installed."""

    def __init__(self, missing: str, needed_for: str = "detecting landmarks on raw photos"):
        self.missing = missing
        super().__init__(f"{needed_for} needs {missing}, which is not available: {INSTALL_HINT}")


def predictor_model_path() -> Path:
    """Path of the 68-point shape predictor inside the ``face_recognition_models`` wheel.

    Located with ``find_spec`` instead of ``face_recognition_models.pose_predictor_model_location()``
    because that package's ``__init__`` imports the deprecated ``pkg_resources``, which newer
    setuptools releases drop; the data file itself is all we need.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailableError("the package face_recognition_models")
    path = Path(list(spec.submodule_search_locations)[0]) / PREDICTOR_FILE
    if not path.is_file():
        raise DetectorUnavailableError(f"the shape predictor file {path} (face_recognition_models is incomplete)")
    return path


def import_dlib():
    """Import dlib or raise :class:`DetectorUnavailableError` (one place, so tests can simulate its absence)."""
    try:
        import dlib  # noqa: PLC0415  (optional dependency)
    except ImportError as error:
        raise DetectorUnavailableError(f"the package dlib (dlib-bin): {error}") from error
    return dlib


def detector_available() -> bool:
    """True when both dlib and the packaged shape predictor can be loaded (nothing is loaded here)."""
    try:
        import_dlib()
        predictor_model_path()
    except DetectorUnavailableError:
        return False
    return True


def __getattr__(name: str):
    # Lazy re-exports: `from regressor.detect import FaceDetector` without importing dlib eagerly.
    if name in ("Detection", "FaceDetector", "default_detector"):
        from regressor.detect import dlib_detector

        return getattr(dlib_detector, name)
    if name in ("landmarks_for_image", "NoFaceFoundError", "CachedLandmarkProvider", "FaceCrop", "face_crop"):
        from regressor.detect import provider

        return getattr(provider, name)
    raise AttributeError(f"module 'regressor.detect' has no attribute {name!r}")


__all__ = [
    "CachedLandmarkProvider",
    "DetectorUnavailableError",
    "Detection",
    "FaceCrop",
    "FaceDetector",
    "NoFaceFoundError",
    "default_detector",
    "detector_available",
    "face_crop",
    "landmarks_for_image",
    "predictor_model_path",
]
