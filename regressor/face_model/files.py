"""Read and write FLAME's files without chumpy: the model pickle, landmark embeddings, albedo.

FLAME's ``generic_model.pkl`` is a Python-2 pickle holding chumpy arrays and a scipy sparse
``J_regressor``; it and the ``.npy`` embeddings that hold a pickled dict are read through the
restricted unpickler of ``safe_pickle`` (never ``np.load(allow_pickle=True)``). Every key is
checked for shape, and errors name the file, the key and the expected shape. Converted models
are cached as ``.npz`` (no pickle involved) in the face-model cache dir.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from regressor.face_model.safe_pickle import (  # noqa: F401  (re-exported)
    FaceModelFileError, RestrictedUnpickler, UnsafePickleError, load_npy_object, load_pickle, require_file,
)

NUM_JOINTS = 5
POSEDIRS_DIM = 9 * (NUM_JOINTS - 1)


def cache_dir() -> Path:
    """``$FACE_PSL_CACHE`` or ``~/.cache/face-psl``."""
    return Path(os.environ.get("FACE_PSL_CACHE") or Path.home() / ".cache" / "face-psl")


# --------------------------------------------------------------------------- validation
def _get(d: Any, key: str, path: Path, shape: tuple, dtype=np.float64) -> np.ndarray:
    """``d[key]`` as an array of ``shape`` (None = any size); errors name file, key and shape."""
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if not isinstance(d, dict):
        raise FaceModelFileError(f"{path}: expected a dict with key '{key}', found {type(d).__name__}")
    if key not in d:
        raise FaceModelFileError(f"{path}: missing key '{key}' (expected shape {expected}); keys: {sorted(d)}")
    value = d[key]
    if value is None:
        raise FaceModelFileError(f"{path}: key '{key}' holds no array (expected shape {expected})")
    value = np.asarray(value.toarray() if scipy.sparse.issparse(value) else value)
    if value.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, value.shape)):
        raise FaceModelFileError(f"{path}: key '{key}' has shape {value.shape}, expected {expected}")
    return value.astype(dtype)


@dataclass
class FlameArrays:
    """A FLAME-layout model as plain arrays (shapes for V vertices, F faces)."""

    v_template: np.ndarray     # (V, 3) metres
    faces: np.ndarray          # (F, 3) int64
    shapedirs: np.ndarray      # (V, 3, 300 + 100): identity then expression
    posedirs: np.ndarray       # (V, 3, 36)
    J_regressor: np.ndarray    # (5, V) dense
    weights: np.ndarray        # (V, 5)
    kintree_table: np.ndarray  # (2, 5) int64; parents row, root's parent = -1

    @classmethod
    def from_dict(cls, d: Any, path: Path) -> "FlameArrays":
        v_template = _get(d, "v_template", path, (None, 3))
        n = len(v_template)
        kintree = _get(d, "kintree_table", path, (2, NUM_JOINTS), np.int64)
        kintree[0, 0] = -1  # FLAME stores 2**32 - 1
        return cls(
            v_template=v_template,
            faces=_get(d, "f", path, (None, 3), np.int64),
            shapedirs=_get(d, "shapedirs", path, (n, 3, None)),
            posedirs=_get(d, "posedirs", path, (n, 3, POSEDIRS_DIM)),
            J_regressor=_get(d, "J_regressor", path, (NUM_JOINTS, n)),
            weights=_get(d, "weights", path, (n, NUM_JOINTS)),
            kintree_table=kintree,
        )


@dataclass
class LandmarkEmbedding:
    """Barycentric landmark embedding: static iBUG 17..67 and 79 yaw bins of the 17 jaw points."""

    static_faces: np.ndarray   # (51,) int64
    static_bary: np.ndarray    # (51, 3)
    dynamic_faces: np.ndarray  # (79, 17) int64
    dynamic_bary: np.ndarray   # (79, 17, 3)


@dataclass
class AlbedoArrays:
    mean: np.ndarray   # (V, 3) in [0, 1]
    basis: np.ndarray  # (V, 3, K)


# --------------------------------------------------------------------------- loaders
def _cache_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def load_flame_model(path: str | os.PathLike, use_cache: bool = True) -> FlameArrays:
    """Read ``generic_model.pkl`` (or a stand-in in its format), via an ``.npz`` cache."""
    path = require_file(path, "FLAME model")
    cached = cache_dir() / "converted" / f"{path.stem}-{_cache_key(path)}.npz"
    if use_cache and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return FlameArrays(**{k: z[k] for k in z.files})
    arrays = FlameArrays.from_dict(load_pickle(path, "FLAME model"), path)
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, **vars(arrays))
            tmp.replace(cached)
        except OSError as err:
            warnings.warn(f"could not write face-model cache {cached}: {err}")
    return arrays


def load_landmark_embedding(static_path: str | os.PathLike, dynamic_path: str | os.PathLike | None = None) -> LandmarkEmbedding:
    """FLAME's ``flame_static_embedding.pkl`` + ``flame_dynamic_embedding.npy``, or DECA's
    ``landmark_embedding.npy`` (which holds both) as ``static_path`` with no ``dynamic_path``."""
    static_path = Path(static_path)
    if static_path.suffix == ".npy":
        d = load_npy_object(static_path, "landmark embedding")
        return LandmarkEmbedding(
            static_faces=_get(d, "static_lmk_faces_idx", static_path, (51,), np.int64),
            static_bary=_get(d, "static_lmk_bary_coords", static_path, (51, 3)),
            dynamic_faces=_get(d, "dynamic_lmk_faces_idx", static_path, (79, 17), np.int64),
            dynamic_bary=_get(d, "dynamic_lmk_bary_coords", static_path, (79, 17, 3)),
        )
    if dynamic_path is None:
        raise FaceModelFileError(f"{static_path}: a dynamic embedding (flame_dynamic_embedding.npy) is needed too")
    s = load_pickle(static_path, "static landmark embedding")
    dynamic_path = Path(dynamic_path)
    d = load_npy_object(dynamic_path, "dynamic landmark embedding")
    return LandmarkEmbedding(
        static_faces=_get(s, "lmk_face_idx", static_path, (51,), np.int64),
        static_bary=_get(s, "lmk_b_coords", static_path, (51, 3)),
        dynamic_faces=_get(d, "lmk_face_idx", dynamic_path, (79, 17), np.int64),
        dynamic_bary=_get(d, "lmk_b_coords", dynamic_path, (79, 17, 3)),
    )


def load_albedo(path: str | os.PathLike, num_vertices: int) -> AlbedoArrays:
    """Per-vertex albedo ``.npz`` with ``mean`` (V, 3) and ``basis`` (V, 3, K)."""
    path = require_file(path, "albedo")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as err:
        raise FaceModelFileError(f"{path}: cannot read albedo .npz: {err}") from err
    return AlbedoArrays(mean=_get(d, "mean", path, (num_vertices, 3)), basis=_get(d, "basis", path, (num_vertices, 3, None)))


# --------------------------------------------------------------------------- writers (FLAME formats)
def save_flame_model(path: str | os.PathLike, arrays: FlameArrays) -> None:
    """Write a ``generic_model.pkl``-format pickle (protocol 2, sparse ``J_regressor``)."""
    kintree = arrays.kintree_table.astype(np.int64).copy()
    kintree[0, 0] = 2**32 - 1
    d = {
        "v_template": arrays.v_template.astype(np.float64),
        "f": arrays.faces.astype(np.uint32),
        "shapedirs": arrays.shapedirs.astype(np.float64),
        "posedirs": arrays.posedirs.astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(arrays.J_regressor),
        "J": (arrays.J_regressor @ arrays.v_template),
        "weights": arrays.weights.astype(np.float64),
        "kintree_table": kintree,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=2)


def save_landmark_embedding(static_path: str | os.PathLike, dynamic_path: str | os.PathLike, emb: LandmarkEmbedding) -> None:
    """Write ``flame_static_embedding.pkl`` and ``flame_dynamic_embedding.npy``."""
    with open(static_path, "wb") as fh:
        pickle.dump({"lmk_face_idx": emb.static_faces.astype(np.uint32), "lmk_b_coords": emb.static_bary}, fh, protocol=2)
    np.save(dynamic_path, {"lmk_face_idx": emb.dynamic_faces.astype(np.int64), "lmk_b_coords": emb.dynamic_bary},
            allow_pickle=True)


def save_albedo(path: str | os.PathLike, albedo: AlbedoArrays) -> None:
    np.savez(path, mean=albedo.mean.astype(np.float32), basis=albedo.basis.astype(np.float32))
