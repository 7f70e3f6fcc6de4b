"""``FaceModel``: FLAME-layout parameters -> posed mesh with 68 iBUG and 7 NoW landmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from regressor.face_model import files
from regressor.face_model.lbs import blend_skinning
from regressor.types import FaceMesh, FaceParams

N_IDENTITY_FILE, N_EXPRESSION_FILE = 300, 100
NOW_FROM_IBUG = (36, 39, 42, 45, 33, 48, 54)  # order documented in regressor.types
MAX_CONTOUR_YAW = 39


def _pad_columns(a: np.ndarray, n: int) -> np.ndarray:
    """Truncate or zero-pad the last axis to ``n``."""
    if a.shape[-1] >= n:
        return a[..., :n]
    return np.concatenate([a, np.zeros(a.shape[:-1] + (n - a.shape[-1],), a.dtype)], -1)


def contour_bin(rot_root: Tensor, rot_neck: Tensor) -> Tensor:
    """(B,) index into FLAME's 79 dynamic-contour bins from the head's yaw.

    Yaw is that of ``R_root @ R_neck`` in degrees, rounded; bins 0..39 hold yaw 0..39 and
    bins 40..78 hold yaw -1..-39 (FLAME's ordering); larger yaws are clamped.
    """
    r = rot_root @ rot_neck
    yaw = torch.atan2(-r[:, 2, 0], torch.sqrt(r[:, 0, 0] ** 2 + r[:, 1, 0] ** 2))
    deg = torch.round(torch.rad2deg(yaw)).long().clamp(-MAX_CONTOUR_YAW, MAX_CONTOUR_YAW)
    return torch.where(deg >= 0, deg, MAX_CONTOUR_YAW - deg)


class FaceModel(nn.Module):
    """FLAME-layout parametric head with linear blend skinning over 5 joints.

    Joints: root, neck, jaw, left eye, right eye. Pose (axis-angle) is global(3), neck(3),
    jaw(3), left eye(3), right eye(3). ``model_path=None`` uses the built-in stand-in,
    generated deterministically on first use and cached (see ``regressor.face_model.builtin``).

    Args:
        model_path: FLAME ``generic_model.pkl`` (or any file in its format).
        static_embedding_path: ``flame_static_embedding.pkl``, or DECA's ``landmark_embedding.npy``.
        dynamic_embedding_path: ``flame_dynamic_embedding.npy``. Both embeddings default to the
            files of those names next to ``model_path``.
        albedo_path: ``.npz`` with per-vertex ``mean`` (V, 3) and ``basis`` (V, 3, K). Without it a
            real FLAME model gets a flat skin tone with global tint components.
        n_shape, n_expression, n_albedo: numbers of components used (zero-padded / truncated).
    """

    def __init__(
        self,
        model_path: str | None = None,
        static_embedding_path: str | None = None,
        dynamic_embedding_path: str | None = None,
        albedo_path: str | None = None,
        n_shape: int = 100,
        n_expression: int = 50,
        n_albedo: int = 10,
    ):
        super().__init__()
        self.init_args = dict(model_path=model_path, static_embedding_path=static_embedding_path,
                              dynamic_embedding_path=dynamic_embedding_path, albedo_path=albedo_path,
                              n_shape=n_shape, n_expression=n_expression, n_albedo=n_albedo)  # see regressor.components
        self.n_shape, self.n_expression, self.n_albedo = int(n_shape), int(n_expression), int(n_albedo)
        self.is_builtin = model_path is None
        if model_path is None:
            from regressor.face_model.builtin import builtin_files

            paths = builtin_files()
            model_path = str(paths.model)
            static_embedding_path = static_embedding_path or str(paths.static_embedding)
            dynamic_embedding_path = dynamic_embedding_path or str(paths.dynamic_embedding)
            albedo_path = albedo_path or str(paths.albedo)
        static_embedding_path, dynamic_embedding_path = _default_embeddings(
            Path(model_path), static_embedding_path, dynamic_embedding_path)
        self.model_path = str(model_path)

        arrays = files.load_flame_model(model_path)
        emb = files.load_landmark_embedding(static_embedding_path, dynamic_embedding_path)
        n_vertices = len(arrays.v_template)
        for name, idx in (("static", emb.static_faces), ("dynamic", emb.dynamic_faces)):
            if idx.min() < 0 or idx.max() >= len(arrays.faces):
                raise files.FaceModelFileError(
                    f"{static_embedding_path}: {name} landmark face index {int(idx.max())} out of range "
                    f"for a model with {len(arrays.faces)} faces ({model_path})")
        if albedo_path is not None:
            albedo = files.load_albedo(albedo_path, n_vertices)
        else:
            albedo = _flat_albedo(n_vertices)

        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        identity = _pad_columns(arrays.shapedirs[..., :N_IDENTITY_FILE], self.n_shape)
        expression = _pad_columns(arrays.shapedirs[..., N_IDENTITY_FILE:], self.n_expression)
        self.register_buffer("v_template", f32(arrays.v_template))
        self.register_buffer("faces", torch.as_tensor(arrays.faces, dtype=torch.long))
        self.register_buffer("shapedirs", f32(np.concatenate([identity, expression], -1)))
        self.register_buffer("posedirs", f32(arrays.posedirs.reshape(-1, arrays.posedirs.shape[-1]).T))
        self.register_buffer("J_regressor", f32(arrays.J_regressor))
        self.register_buffer("lbs_weights", f32(arrays.weights))
        self.parents = [int(p) for p in arrays.kintree_table[0]]
        self.parents[0] = -1
        self.register_buffer("static_lmk_faces", torch.as_tensor(emb.static_faces, dtype=torch.long))
        self.register_buffer("static_lmk_bary", f32(emb.static_bary))
        self.register_buffer("dynamic_lmk_faces", torch.as_tensor(emb.dynamic_faces, dtype=torch.long))
        self.register_buffer("dynamic_lmk_bary", f32(emb.dynamic_bary))
        self.register_buffer("albedo_mean", f32(albedo.mean))
        self.register_buffer("albedo_basis", f32(_pad_columns(albedo.basis, self.n_albedo)))

    @classmethod
    def builtin(cls, **kwargs) -> "FaceModel":
        """The built-in stand-in (``model_path=None``)."""
        kwargs.pop("model_path", None)
        return cls(model_path=None, **kwargs)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def zero_params(self, batch_size: int, device: torch.device | str | None = None) -> FaceParams:
        """The mean face with ``FaceParams.zeros``' camera and light."""
        return FaceParams.zeros(batch_size, self.n_shape, self.n_expression, self.n_albedo,
                                device=device if device is not None else self.v_template.device)

    def shaped_vertices(self, shape: Tensor, expression: Tensor) -> Tensor:
        """(B, V, 3) template plus identity and expression offsets, before posing."""
        for name, t, n in (("shape", shape, self.n_shape), ("expression", expression, self.n_expression)):
            if t.shape[-1] != n:
                raise ValueError(f"FaceModel: params.{name} has {t.shape[-1]} components, model expects {n}")
        betas = torch.cat([shape, expression], -1).to(self.shapedirs.dtype)
        return self.v_template + torch.einsum("vck,bk->bvc", self.shapedirs, betas)

    def forward(self, params: FaceParams) -> FaceMesh:
        v_shaped = self.shaped_vertices(params.shape, params.expression)
        pose = params.pose.to(v_shaped.dtype)
        vertices, _, rot_mats = blend_skinning(
            v_shaped, pose, self.posedirs, self.J_regressor, self.lbs_weights, self.parents)
        landmarks = self.landmarks(vertices, contour_bin(rot_mats[:, 0], rot_mats[:, 1]))
        return FaceMesh(vertices=vertices, faces=self.faces, landmarks3d=landmarks,
                        now_landmarks3d=landmarks[:, list(NOW_FROM_IBUG)])

    def landmarks(self, vertices: Tensor, bins: Tensor) -> Tensor:
        """(B, 68, 3): 17 jaw-contour points of each sample's yaw bin, then the static 51."""
        batch = vertices.shape[0]
        lmk_faces = torch.cat([self.dynamic_lmk_faces[bins], self.static_lmk_faces.expand(batch, -1)], 1)
        bary = torch.cat([self.dynamic_lmk_bary[bins], self.static_lmk_bary.expand(batch, -1, -1)], 1)
        corners = vertices[torch.arange(batch, device=vertices.device)[:, None, None], self.faces[lmk_faces]]
        return (corners * bary[..., None]).sum(-2)

    def albedo(self, coeffs: Tensor) -> Tensor:
        """(B, n_albedo) coefficients -> (B, V, 3) per-vertex albedo in [0, 1]."""
        if coeffs.shape[-1] != self.n_albedo:
            raise ValueError(f"FaceModel.albedo: got {coeffs.shape[-1]} coefficients, model expects {self.n_albedo}")
        return (self.albedo_mean + torch.einsum("vck,bk->bvc", self.albedo_basis, coeffs.to(self.albedo_basis.dtype))).clamp(0, 1)

    def summary(self) -> str:
        extent = (self.v_template.max(0).values - self.v_template.min(0).values) * 100
        std = self.shapedirs.pow(2).sum(1).sqrt().mean(0) * 1000  # mean per-vertex mm per unit
        return "\n".join([
            f"FaceModel ({'built-in stand-in' if self.is_builtin else 'FLAME file'}: {self.model_path})",
            f"  vertices {self.num_vertices}, faces {self.faces.shape[0]}, joints {len(self.parents)} (parents {self.parents})",
            f"  extent x/y/z: {extent[0]:.1f} x {extent[1]:.1f} x {extent[2]:.1f} cm",
            f"  shape components {self.n_shape} (mean |unit| first/last: {std[0]:.2f}/{std[self.n_shape - 1]:.3f} mm)"
            if self.n_shape else "  shape components 0",
            f"  expression components {self.n_expression}, albedo components {self.n_albedo}",
            f"  landmarks: 51 static + 17 dynamic contour ({self.dynamic_lmk_faces.shape[0]} yaw bins) -> 68 iBUG, 7 NoW",
        ])


def _default_embeddings(model_path: Path, static: str | None, dynamic: str | None) -> tuple[str, str | None]:
    """Embeddings given, or FLAME's / DECA's files next to the model."""
    if static is not None:
        return static, dynamic
    folder = model_path.parent
    if (folder / "flame_static_embedding.pkl").is_file():
        return str(folder / "flame_static_embedding.pkl"), dynamic or str(folder / "flame_dynamic_embedding.npy")
    if (folder / "landmark_embedding.npy").is_file():
        return str(folder / "landmark_embedding.npy"), None
    raise files.FaceModelFileError(
        f"no landmark embedding given for {model_path}: pass static_embedding_path (flame_static_embedding.pkl "
        "or DECA's landmark_embedding.npy) and dynamic_embedding_path, or put them next to the model")


def _flat_albedo(n_vertices: int) -> files.AlbedoArrays:
    """Fallback for FLAME files (FLAME's albedo is a UV texture): one skin tone + RGB tints."""
    mean = np.tile([0.75, 0.56, 0.47], (n_vertices, 1))
    basis = np.zeros((n_vertices, 3, 3))
    for c in range(3):
        basis[:, c, c] = 0.08
    return files.AlbedoArrays(mean=mean, basis=basis)

