"""FLAME-layout face model: real FLAME files (no chumpy) or the built-in stand-in.

Get one with ``build_face_model(spec)`` (``regressor.face_model.factory``): ``None`` = the built-in
stand-in, a ``generic_model.pkl`` path, a yaml file, or a ``{class_path, init_args}`` / arguments dict.
"""
from regressor.face_model.factory import build_face_model
from regressor.face_model.files import FaceModelFileError, UnsafePickleError
from regressor.face_model.flame import FaceModel

__all__ = ["FaceModel", "FaceModelFileError", "UnsafePickleError", "build_face_model"]
