"""Typed boundaries between the pipeline stages.

Every stage hands the next one a dataclass with named, documented fields instead of
a loose tuple, so that stages stay swappable (e.g. the two rasterizer backends) and
shape bugs surface at the boundary.

Conventions (stated once, here):

* **Units.** Geometry is in metres.
* **Model space.** FLAME's: +X towards the subject's left (viewer's right in a frontal
  image), +Y up, +Z out of the face towards the camera. Faces are wound
  counter-clockwise seen from outside.
* **Screen space.** Pixels, origin at the top-left corner of the image, x to the right,
  y down. Pixel ``(col, row)`` has its centre at ``(col + 0.5, row + 0.5)``. Screen-space
  vertices are ``(B, V, 3)`` = ``(x, y, depth)`` with depth > 0 and *smaller = closer*.
* **Images.** Float tensors ``(B, C, H, W)`` with values in ``[0, 1]``.
* **Landmarks.** 68 iBUG points (0-based: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
  mouth 48-67). The 7 NoW points are, in order: right eye outer, right eye inner,
  left eye inner, left eye outer, nose bottom (subnasale), right mouth corner, left mouth
  corner ("right" = the subject's right).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Optional, TypeVar

import torch
from torch import Tensor

T = TypeVar("T", bound="TensorDataclass")

NUM_LANDMARKS = 68
NUM_NOW_LANDMARKS = 7
NUM_SH_COEFFS = 9
POSE_DIM = 15  # global(3) + neck(3) + jaw(3) + eyes(6), axis-angle
DEFAULT_CAMERA_SCALE = 8.0  # weak-perspective scale: NDC units per metre for a face crop


class TensorDataclass:
    """Mixin: generic tensor plumbing for dataclasses whose fields are tensors (or None)."""

    def _map(self: T, fn) -> T:
        kwargs = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = fn(value)
            elif isinstance(value, TensorDataclass):
                value = value._map(fn)
            kwargs[f.name] = value
        return type(self)(**kwargs)

    def to(self: T, *args, **kwargs) -> T:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self: T) -> T:
        return self._map(lambda t: t.detach())

    def clone(self: T) -> T:
        return self._map(lambda t: t.clone())

    def items(self) -> Iterator[tuple[str, Any]]:
        for f in fields(self):  # type: ignore[arg-type]
            yield f.name, getattr(self, f.name)

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.as_dict() if isinstance(v, TensorDataclass) else v) for k, v in self.items()}


@dataclass
class FaceParams(TensorDataclass):
    """FLAME-style parameters of a batch of B faces.

    Attributes:
        shape: (B, n_shape) identity coefficients, in units of the basis' std (N(0, 1) prior).
        expression: (B, n_expression) expression coefficients, same units.
        global_pose: (B, 3) axis-angle rotation of the root joint.
        neck_pose: (B, 3) axis-angle rotation of the neck joint.
        jaw_pose: (B, 3) axis-angle rotation of the jaw joint (x-rotation opens the mouth).
        eye_pose: (B, 6) axis-angle rotations of the left then the right eye.
        camera: (B, 3) weak-perspective camera ``[scale, tx, ty]``:
            ``x_ndc = scale * (X + tx)``, ``y_ndc = scale * (Y + ty)`` (NDC in [-1, 1], y up).
        albedo: (B, n_albedo) albedo-basis coefficients (N(0, 1) prior).
        light: (B, 9, 3) second-order spherical-harmonics lighting, per RGB channel.
    """

    shape: Tensor
    expression: Tensor
    global_pose: Tensor
    neck_pose: Tensor
    jaw_pose: Tensor
    eye_pose: Tensor
    camera: Tensor
    albedo: Tensor
    light: Tensor

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    @property
    def pose(self) -> Tensor:
        """(B, 15) FLAME pose vector: global, neck, jaw, eyes."""
        return torch.cat([self.global_pose, self.neck_pose, self.jaw_pose, self.eye_pose], dim=-1)

    @classmethod
    def zeros(
        cls,
        batch_size: int,
        n_shape: int = 100,
        n_expression: int = 50,
        n_albedo: int = 10,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "FaceParams":
        """The mean face, frontal, centred, with a default camera and ambient white light."""
        z = lambda *s: torch.zeros(batch_size, *s, device=device, dtype=dtype)  # noqa: E731
        camera = z(3)
        camera[:, 0] = DEFAULT_CAMERA_SCALE
        light = z(NUM_SH_COEFFS, 3)
        light[:, 0, :] = 1.0
        return cls(
            shape=z(n_shape), expression=z(n_expression), global_pose=z(3), neck_pose=z(3),
            jaw_pose=z(3), eye_pose=z(6), camera=camera, albedo=z(n_albedo), light=light,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> "FaceParams":
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise KeyError(f"FaceParams.from_dict: missing keys {missing}; got {sorted(d)}")
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def __getitem__(self, index) -> "FaceParams":
        """Select samples along the batch dimension (int, slice, index tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(items: list["FaceParams"]) -> "FaceParams":
        return FaceParams(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(FaceParams)})


@dataclass
class FaceMesh(TensorDataclass):
    """Output of the face model.

    Attributes:
        vertices: (B, V, 3) posed vertices, metres, model space.
        faces: (F, 3) long vertex indices, shared by the batch.
        landmarks3d: (B, 68, 3) iBUG landmarks on the surface (static 51 + dynamic contour 17).
        now_landmarks3d: (B, 7, 3) the NoW alignment landmarks (order in the module docstring).
    """

    vertices: Tensor
    faces: Tensor
    landmarks3d: Tensor
    now_landmarks3d: Tensor

    @property
    def batch_size(self) -> int:
        return self.vertices.shape[0]

    def __getitem__(self, index) -> "FaceMesh":
        """Select meshes along the batch dimension (int, slice, index tensor); ``faces`` stay shared."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return FaceMesh(self.vertices[index], self.faces, self.landmarks3d[index], self.now_landmarks3d[index])

    @staticmethod
    def cat(items: list["FaceMesh"]) -> "FaceMesh":
        """Concatenate batches of the same topology (``faces`` of the first; a different one is refused)."""
        faces = items[0].faces
        for item in items[1:]:
            if item.faces is not faces and not torch.equal(item.faces, faces):
                raise ValueError("FaceMesh.cat: meshes have different faces (topologies)")
        return FaceMesh(torch.cat([m.vertices for m in items]), faces, torch.cat([m.landmarks3d for m in items]),
                        torch.cat([m.now_landmarks3d for m in items]))


@dataclass
class Fragments(TensorDataclass):
    """Rasterizer output, pytorch3d's ``rasterize_meshes`` conventions with ``faces_per_pixel=1``.

    Attributes:
        pix_to_face: (B, H, W, 1) long, *packed* face index ``b * F + f`` of the nearest face,
            -1 where the pixel is background.
        bary_coords: (B, H, W, 1, 3) barycentric coordinates of the pixel centre in that face
            (differentiable w.r.t. the screen-space vertices); -1 on background.
        zbuf: (B, H, W, 1) depth of the nearest surface, -1 on background.
    """

    pix_to_face: Tensor
    bary_coords: Tensor
    zbuf: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a face covers the pixel."""
        return self.pix_to_face[..., 0] >= 0


@dataclass
class Renders(TensorDataclass):
    """Renderer output; every image is (B, C, H, W).

    Attributes:
        shaded: (B, 1, H, W) grey Lambertian shading of the geometry, no albedo, fixed light;
            background filled per the renderer's setting. The critic's input.
        albedo_shaded: (B, 3, H, W) per-vertex albedo x 9-band SH shading (photometric loss).
        mask: (B, 1, H, W) float, 1 on the rendered face.
        normals: (B, 3, H, W) unit normals in model-space axes (+Z to camera), 0 on background.
        depth: (B, 1, H, W) screen depth, 0 on background.
        landmarks2d: (B, 68, 2) projected landmarks, pixels.
        now_landmarks2d: (B, 7, 2) projected NoW landmarks, pixels.
    """

    shaded: Tensor
    albedo_shaded: Tensor
    mask: Tensor
    normals: Tensor
    depth: Tensor
    landmarks2d: Tensor
    now_landmarks2d: Tensor


@dataclass
class FaceBatch(TensorDataclass):
    """What a DataLoader gives the model (datasets yield dicts with these keys; see ``from_dict``).

    Attributes:
        image: (B, 3, H, W) float in [0, 1].
        landmarks: (B, 68, 2) target landmarks, pixels of ``image``.
        landmarks_valid: (B, 68) float, 1 where the landmark is known/visible, else 0.
        mask: optional (B, 1, H, W) face mask.
        vertices: optional (B, V, 3) ground-truth vertices (metres), for metrics.
        params: optional ground-truth ``FaceParams`` (synthetic data only).
        index: optional (B,) long, sample index / seed for traceability.
    """

    image: Tensor
    landmarks: Tensor
    landmarks_valid: Tensor
    mask: Optional[Tensor] = None
    vertices: Optional[Tensor] = None
    params: Optional[FaceParams] = None
    index: Optional[Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceBatch":
        """Build from a collated dict; unknown keys (e.g. ``name``) are ignored."""
        if isinstance(d, FaceBatch):
            return d
        params = d.get("params")
        if isinstance(params, dict):
            params = FaceParams.from_dict(params)
        landmarks = d["landmarks"]
        valid = d.get("landmarks_valid")
        if valid is None:
            valid = torch.ones(landmarks.shape[:-1], dtype=landmarks.dtype, device=landmarks.device)
        return cls(
            image=d["image"], landmarks=landmarks, landmarks_valid=valid.to(landmarks.dtype),
            mask=d.get("mask"), vertices=d.get("vertices"), params=params, index=d.get("index"),
        )


@dataclass
class LossInputs:
    """Everything a loss term may look at; every term gets the same typed inputs."""

    batch: FaceBatch
    params: FaceParams
    mesh: FaceMesh
    renders: Renders
    step: int = 0


def replace(obj, **changes):
    """``dataclasses.replace`` re-exported for convenience."""
    return dataclasses.replace(obj, **changes)
