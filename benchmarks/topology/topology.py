"""Meshes of other families and coverage, each with its same-topology negatives.

The critic works in image space, so it should judge any mesh: a face-only mask, a decimated scan,
a denser head, a head with open eyes or mouth. The builders here turn one true head (vertices in
metres, posed, with its 68 and 7 NoW landmarks) into such a ``Surface``:

* ``crop``: keep the part of the head inside a box of the face frame spanned by the NoW landmarks
  (``CropSpec``: forehead cut, ears, neck, back of the head);
* ``remesh``: quadric decimation with ``fast-simplification`` (PyPI; the maintained wrapper of
  Sven Forstmann's Fast-Quadric-Mesh-Simplification, used by PyVista: numpy in, numpy out, one
  small wheel, no GUI or CUDA stack as ``open3d`` would bring); the vertices move to the quadric
  optimum, so the result is a genuinely different triangulation of the surface;
* ``subdivide``: pytorch3d's ``SubdivideMeshes`` (4x the triangles, same surface);
* ``with_holes``: triangles around the eyes and/or the mouth removed.

``surface_candidates`` then builds the positive and graded negatives on the surface's *own*
topology (``benchmarks.topology.geometry_negatives``), with the aligned face-region error of
``regressor.critic.target`` measured against the unperturbed surface. ``TRAIN_VARIANTS`` are used by
critic training; ``BENCHMARK_VARIANTS`` are other crops and another decimation, never trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.topology import geometry_negatives
from regressor.critic.target import aligned_face_error_mm, face_region
from regressor.evaluation.now import face_frame  # noqa: F401 - re-exported: the crops are boxes in this frame


@dataclass
class Surface:
    """One mesh: vertices (V, 3) metres, faces (F, 3) long; ``kind`` names the variant that made it."""

    vertices: Tensor
    faces: Tensor
    kind: str


@dataclass(frozen=True)
class CropSpec:
    """A face-frame box (see ``face_frame``): u across (outer-eye distances), v up from the nose bottom
    (nose-to-eye-line distances), w out of the face (outer-eye distances)."""

    forehead_v: float = 2.6
    ears_u: float = 1.0
    neck_v: float = -1.6
    back_w: float = -1.2


def keep_vertices(vertices: Tensor, faces: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """The triangles whose three corners are kept, with unused vertices dropped and indices remapped."""
    faces = faces[keep[faces].all(dim=1)]
    used = torch.zeros(len(vertices), dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    return vertices[used], remap[faces]


def crop(vertices: Tensor, faces: Tensor, now_landmarks: Tensor, spec: CropSpec) -> tuple[Tensor, Tensor]:
    u, v, w = face_frame(vertices, now_landmarks)
    keep = (v <= spec.forehead_v) & (u.abs() <= spec.ears_u) & (v >= spec.neck_v) & (w >= spec.back_w)
    return keep_vertices(vertices, faces, keep)


def remesh(vertices: Tensor, faces: Tensor, reduction: float) -> tuple[Tensor, Tensor]:
    """Quadric decimation removing the fraction ``reduction`` of the triangles (``fast-simplification``)."""
    import fast_simplification

    points, triangles = fast_simplification.simplify(vertices.detach().double().cpu().numpy(),
                                                     faces.cpu().numpy().astype("int64"), target_reduction=reduction)
    return (torch.as_tensor(points, dtype=vertices.dtype, device=vertices.device),
            torch.as_tensor(triangles, dtype=torch.long, device=vertices.device))


def subdivide(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    from pytorch3d.ops import SubdivideMeshes
    from pytorch3d.structures import Meshes

    mesh = SubdivideMeshes()(Meshes(verts=[vertices], faces=[faces]))
    return mesh.verts_list()[0], mesh.faces_list()[0]


def with_holes(vertices: Tensor, faces: Tensor, landmarks: Tensor, eyes: bool = True, mouth: bool = True,
               scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Remove the triangles whose centroid lies in an ellipse-like ball around the eyes / the mouth.

    ``landmarks``: (68, 3) iBUG points; radii follow the eye (36-41, 42-47) and mouth (48-59) outlines.
    """
    centroid = vertices[faces].mean(dim=1)
    drop = torch.zeros(len(faces), dtype=torch.bool, device=faces.device)
    groups = ([range(36, 42), range(42, 48)] if eyes else []) + ([range(48, 60)] if mouth else [])
    for group in groups:
        points = landmarks[list(group)]
        centre = points.mean(0)
        radius = scale * (points - centre).norm(dim=1).max() * 0.8
        drop |= (centroid - centre).norm(dim=1) < radius
    return keep_vertices(vertices, faces[~drop], torch.ones(len(vertices), dtype=torch.bool, device=vertices.device))


def build_variant(kind: str, vertices: Tensor, faces: Tensor, now_landmarks: Tensor, landmarks: Tensor) -> Surface:
    """One named variant (``TRAIN_VARIANTS`` / ``BENCHMARK_VARIANTS``) of a (V, 3) head."""
    recipe = VARIANTS[kind]
    out_vertices, out_faces = vertices, faces
    for step, argument in recipe:
        if step == "crop":
            out_vertices, out_faces = crop(out_vertices, out_faces, now_landmarks, argument)
        elif step == "remesh":
            out_vertices, out_faces = remesh(out_vertices, out_faces, argument)
        elif step == "subdivide":
            out_vertices, out_faces = subdivide(out_vertices, out_faces)
        elif step == "holes":
            out_vertices, out_faces = with_holes(out_vertices, out_faces, landmarks, **argument)
        else:  # pragma: no cover - VARIANTS is fixed here
            raise ValueError(f"unknown topology step {step!r}")
    return Surface(out_vertices, out_faces, kind)


VARIANTS: dict[str, tuple] = {
    "head": (),
    "crop_wide": (("crop", CropSpec(2.6, 1.0, -1.6, -1.2)),),
    "crop_forehead_cut": (("crop", CropSpec(1.7, 1.3, -2.5, -1.6)),),
    "crop_tight": (("crop", CropSpec(2.2, 0.72, -1.15, -0.8)),),
    "remesh_50": (("remesh", 0.5),),
    "remesh_80": (("remesh", 0.8),),
    "subdivided": (("subdivide", None),),
    "holes": (("holes", {"eyes": True, "mouth": True}),),
    "crop_remesh": (("crop", CropSpec(2.4, 0.9, -1.4, -1.0)), ("remesh", 0.6)),
    # benchmark only: boundaries and a decimation never used in training
    "face_mask": (("crop", CropSpec(2.0, 0.85, -1.3, -0.9)),),
    "remeshed": (("remesh", 0.7),),
}
TRAIN_VARIANTS = ("head", "crop_wide", "crop_forehead_cut", "crop_tight", "remesh_50", "remesh_80", "subdivided",
                  "holes", "crop_remesh")
BENCHMARK_VARIANTS = ("face_mask", "remeshed")


def anchors(landmarks: Tensor) -> dict[str, Tensor]:
    """Centres of local bumps and dents from (68, 3) iBUG landmarks: nose tip, cheeks, chin."""
    return {"nose": landmarks[30], "chin": 0.5 * (landmarks[8] + landmarks[57]),
            "left_cheek": 0.5 * (landmarks[45] + landmarks[54]), "right_cheek": 0.5 * (landmarks[36] + landmarks[48])}


@dataclass
class SurfaceCandidates:
    """Positive (column 0) and negatives on one surface's topology.

    Attributes: vertices (C, V, 3); faces (F, 3); error_mm (C,) aligned face-region error;
    type_index (C,) index into ``geometry_negative_types()`` (-1 = the positive); severity (C,).
    """

    vertices: Tensor
    faces: Tensor
    error_mm: Tensor
    type_index: Tensor
    severity: Tensor
    kind: str


def surface_candidates(surface: Surface, now_landmarks: Tensor, landmarks: Tensor, types: list[str],
                       severity: Tensor, generator: torch.Generator) -> SurfaceCandidates:
    """The surface (positive) and one negative per (type, severity) pair, errors against the surface."""
    known = geometry_negatives.geometry_negative_types()
    truth = surface.vertices
    pieces = [truth[None]]
    local = anchors(landmarks)
    for name, s in zip(types, severity.tolist()):
        pieces.append(geometry_negatives.perturb(name, truth[None], surface.faces, torch.tensor([s]), generator, local))
    vertices = torch.cat(pieces)
    region = face_region(truth[None], now_landmarks[None])
    if int(region.sum()) < 3:  # a tiny crop: measure on all of it
        region = torch.ones_like(region)
    error = aligned_face_error_mm(vertices[None], truth[None], region)[0]
    error[0] = 0.0
    type_index = torch.tensor([-1] + [known.index(t) for t in types])
    return SurfaceCandidates(vertices, surface.faces, error, type_index,
                             torch.cat([torch.zeros(1), severity.float().cpu()]), surface.kind)
