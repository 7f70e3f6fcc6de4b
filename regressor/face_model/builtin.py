"""The built-in stand-in for FLAME: generated deterministically, written in FLAME's file formats.

FLAME is licence-gated and cannot be downloaded here, so the project sculpts its own head
(``builtin_mesh``), rigs it (``builtin_bases``), embeds landmarks and an albedo model
(``builtin_landmarks``), and writes ``generic_model.pkl``, ``flame_static_embedding.pkl``,
``flame_dynamic_embedding.npy`` and ``albedo.npz`` into the cache dir. ``FaceModel`` then
reads them through the same loader as the real files, so that path is always exercised.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regressor.face_model import builtin_bases as bases
from regressor.face_model import builtin_landmarks as landmarks
from regressor.face_model.builtin_mesh import make_grid, sculpt
from regressor.face_model.files import (
    AlbedoArrays, FlameArrays, LandmarkEmbedding, cache_dir, save_albedo, save_flame_model, save_landmark_embedding,
)

SEED = 20231
_GENERATOR_SOURCES = ("builtin.py", "builtin_mesh.py", "builtin_bases.py", "builtin_landmarks.py", "files.py")


def generator_version() -> str:
    """Hash of the generator's source: the cache folder is keyed by it, so edits never reuse stale files."""
    digest = hashlib.sha1()
    for name in _GENERATOR_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class BuiltinFiles:
    model: Path
    static_embedding: Path
    dynamic_embedding: Path
    albedo: Path

    @classmethod
    def in_folder(cls, folder: Path) -> "BuiltinFiles":
        return cls(folder / "generic_model.pkl", folder / "flame_static_embedding.pkl",
                   folder / "flame_dynamic_embedding.npy", folder / "albedo.npz")

    def exist(self) -> bool:
        return all(p.is_file() for p in vars(self).values())


@dataclass
class BuiltinModel:
    flame: FlameArrays
    embedding: LandmarkEmbedding
    albedo: AlbedoArrays


def generate() -> BuiltinModel:
    """Build every array of the stand-in (deterministic; a few seconds)."""
    rng = np.random.default_rng(SEED)
    grid = make_grid()
    head = sculpt(grid)
    weights = bases.skinning_weights(grid, head)
    joints = bases.joint_positions(head)
    shapedirs = np.concatenate([bases.identity_basis(grid, rng), bases.expression_basis(grid, rng)], -1)
    emb = LandmarkEmbedding(*landmarks.static_embedding(grid, head), *landmarks.dynamic_embedding(grid, head))
    mean, basis = landmarks.albedo_model(head, rng)
    # Centre: the face centre (between the eyes and the nose tip) at the origin.
    centre = np.array([0.0, 0.5 * (joints[3, 1] + -0.03), head.vertices[:, 2].max() - 0.03])
    v_template = head.vertices - centre
    joints = joints - centre
    head_centred = type(head)(radius=head.radius, design_points=head.design_points - centre, vertices=v_template)
    flame = FlameArrays(
        v_template=v_template,
        faces=grid.faces,
        shapedirs=shapedirs,
        posedirs=bases.pose_correctives(head, weights),
        J_regressor=bases.joint_regressor(head_centred, joints),
        weights=weights,
        kintree_table=np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    )
    return BuiltinModel(flame, emb, AlbedoArrays(mean, basis))


def write(model: BuiltinModel, folder: str | os.PathLike) -> BuiltinFiles:
    """Write the stand-in in FLAME's file formats into ``folder``."""
    paths = BuiltinFiles.in_folder(Path(folder))
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_flame_model(paths.model, model.flame)
    save_landmark_embedding(paths.static_embedding, paths.dynamic_embedding, model.embedding)
    save_albedo(paths.albedo, model.albedo)
    return paths


def builtin_files(root: str | os.PathLike | None = None) -> BuiltinFiles:
    """Paths of the cached stand-in files, generating them on first use.

    Generation writes into a temporary sibling folder that is renamed into place, so
    concurrent first uses (parallel tests, DDP workers) never see half-written files.
    """
    folder = Path(root) if root is not None else cache_dir() / f"builtin-{generator_version()}"
    paths = BuiltinFiles.in_folder(folder)
    if paths.exist():
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        write(generate(), tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            if not paths.exist():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
