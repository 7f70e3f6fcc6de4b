"""Safe unpickling of FLAME's files: numpy arrays, chumpy stubs and sparse stubs, nothing else.

A pickle can run arbitrary code through the globals it names (``os.system`` ...), and FLAME's
``generic_model.pkl`` needs chumpy, which is broken on current Python/numpy. So ``find_class``
maps ``chumpy.*`` to a stub that keeps ``state['x']`` as an ndarray, scipy sparse matrices to a
stub that is densified, allows numpy's own array reconstruction, and refuses every other global.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse


class FaceModelFileError(ValueError):
    """A face-model file is missing, unreadable, or holds a key of the wrong shape."""


class UnsafePickleError(FaceModelFileError):
    """A pickle asked for a global outside the small allow-list (it could run code)."""


# --------------------------------------------------------------------------- restricted unpickling
class _ChumpyStub:
    """Stands in for ``chumpy.ch.Ch`` and friends: keeps the wrapped array ``state['x']``."""

    def __init__(self, *args, **kwargs):
        self.x = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        self.x = np.asarray(state["x"]) if isinstance(state, dict) and "x" in state else None


class _SparseStub:
    """Stands in for a scipy sparse matrix; ``to_dense`` rebuilds it from the pickled fields."""

    format = "csc"

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = dict(state)

    def to_dense(self) -> np.ndarray:
        s = self.state
        shape = tuple(s.get("_shape", s.get("shape", ())))
        if self.format == "coo":
            coords = s.get("coords") or (s["row"], s["col"])
            matrix = scipy.sparse.coo_matrix((s["data"], tuple(coords)), shape=shape)
        else:
            cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
            matrix = cls((s["data"], s["indices"], s["indptr"]), shape=shape)
        return np.asarray(matrix.toarray())


def _sparse_stub(fmt: str) -> type:
    return type(f"_Sparse_{fmt}", (_SparseStub,), {"format": fmt})


def _numpy_global(name: str):
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name) if hasattr(core.multiarray, name) else getattr(core.numeric, name)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
    ("copy_reg", "_reconstructor"): __import__("copyreg")._reconstructor,
    ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,  # chumpy's pickled state holds sets of term names
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
}
for _core in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"):
    for _name in ("_reconstruct", "scalar", "_frombuffer"):
        _ALLOWED[(_core, _name)] = (lambda n: lambda *a: _numpy_global(n)(*a))(_name)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for FLAME-style files: numpy arrays, chumpy stubs, sparse stubs, nothing else."""

    def __init__(self, file, source: str = "<pickle>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return _sparse_stub(name[:3])
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafePickleError(
            f"{self.source}: refusing to unpickle global '{module}.{name}': only numpy arrays, chumpy "
            "arrays and scipy sparse matrices are allowed in face-model files (a pickle that names "
            "other globals can run arbitrary code)"
        )


def _plain(value: Any) -> Any:
    """Chumpy / sparse stubs -> ndarrays (recursively through dicts)."""
    if isinstance(value, _ChumpyStub):
        return value.x
    if isinstance(value, _SparseStub):
        return value.to_dense()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FaceModelFileError(f"{what} file not found: {path}")
    return path


def load_pickle(path: str | os.PathLike, what: str = "face-model") -> Any:
    """Load a FLAME-style pickle (Python 2 or 3) safely; stubs become ndarrays."""
    path = require_file(path, what)
    with open(path, "rb") as fh:
        try:
            return _plain(RestrictedUnpickler(fh, source=str(path)).load())
        except UnsafePickleError:
            raise
        except Exception as err:  # truncated / not a pickle
            raise FaceModelFileError(f"{path}: cannot read {what} pickle: {err}") from err


def load_npy_object(path: str | os.PathLike, what: str) -> Any:
    """Load an ``.npy`` that may hold a pickled object (e.g. a dict) through the restricted unpickler."""
    path = require_file(path, what)
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
            if not dtype.hasobject:
                return np.load(path, allow_pickle=False)
            array = _plain(RestrictedUnpickler(fh, source=str(path)).load())
        except UnsafePickleError:
            raise
        except Exception as err:
            raise FaceModelFileError(f"{path}: cannot read {what} .npy: {err}") from err
    return _plain(array[()] if isinstance(array, np.ndarray) and array.shape == () else array)
