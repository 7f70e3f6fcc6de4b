"""FLAME-layout face model: real FLAME files (no chumpy) or the built-in stand-in."""
from regressor.face_model.files import FaceModelFileError, UnsafePickleError
from regressor.face_model.flame import FaceModel

__all__ = ["FaceModel", "FaceModelFileError", "UnsafePickleError"]
