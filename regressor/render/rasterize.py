"""``rasterize``: screen-space meshes -> ``Fragments``, with two interchangeable backends.

* ``"torch"``: our vectorised z-buffer (``torch_raster``), fast on CPU, also runs on CUDA.
* ``"pytorch3d"``: pytorch3d's ``rasterize_meshes`` (binned and fast on CUDA, very slow on CPU).
* ``"auto"``: torch on CPU, pytorch3d on CUDA.

Both return pytorch3d's conventions for ``faces_per_pixel=1`` (see ``regressor.types.Fragments``).
Hard rasterization: barycentrics and depth are differentiable w.r.t. the vertices, but
*which* face covers a pixel (and hence the silhouette / mask) is not.
"""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.render.torch_raster import rasterize_torch
from regressor.types import Fragments

BACKENDS = ("auto", "torch", "pytorch3d")


def image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise ``image_size`` (int or (H, W)) to a checked ``(H, W)`` tuple."""
    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or a pair of ints (H, W), got {image_size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"image_size must be positive, got {hw}")
    return hw


def _validate(verts_screen: Tensor, faces: Tensor) -> None:
    if not isinstance(verts_screen, Tensor) or not isinstance(faces, Tensor):
        raise ValueError(
            f"rasterize: verts_screen and faces must be tensors, got {type(verts_screen).__name__} "
            f"and {type(faces).__name__}"
        )
    if verts_screen.dim() != 3 or verts_screen.shape[-1] != 3:
        raise ValueError(f"rasterize: verts_screen must be (B, V, 3), got shape {tuple(verts_screen.shape)}")
    if not verts_screen.is_floating_point():
        raise ValueError(f"rasterize: verts_screen must be a floating-point tensor, got {verts_screen.dtype}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be (F, 3), got shape {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"rasterize: faces must be an integer tensor (long), got {faces.dtype}")
    if faces.device != verts_screen.device:
        raise ValueError(f"rasterize: faces on {faces.device} but verts_screen on {verts_screen.device}")
    if faces.numel() > 0:
        low, high = int(faces.min()), int(faces.max())
        num_verts = verts_screen.shape[1]
        if low < 0 or high >= num_verts:
            raise ValueError(
                f"rasterize: face indices must lie in [0, {num_verts - 1}] (V={num_verts}), found [{low}, {high}]"
            )


def empty_fragments(batch: int, height: int, width: int, like: Tensor) -> Fragments:
    """All-background fragments (no face anywhere)."""
    return Fragments(
        pix_to_face=torch.full((batch, height, width, 1), -1, dtype=torch.int64, device=like.device),
        bary_coords=torch.full((batch, height, width, 1, 3), -1.0, dtype=like.dtype, device=like.device),
        zbuf=torch.full((batch, height, width, 1), -1.0, dtype=like.dtype, device=like.device),
    )


def screen_to_pytorch3d_ndc(verts_screen: Tensor, height: int, width: int) -> Tensor:
    """(B, V, 3) our pixels -> pytorch3d NDC (+X left, +Y up; the shorter side spans [-1, 1]).

    Pixel column i's centre maps to ``x_ndc = (W - 2i - 1) / min(H, W)``, i.e. ``1 - (2i+1)/W`` if square.
    """
    short = float(min(height, width))
    x = (width - 2.0 * verts_screen[..., 0]) / short
    y = (height - 2.0 * verts_screen[..., 1]) / short
    return torch.stack([x, y, verts_screen[..., 2]], dim=-1)


def rasterize_pytorch3d(
    verts_screen: Tensor, faces: Tensor, image_size: tuple[int, int], cull_backfaces: bool = False
) -> Fragments:
    """pytorch3d's rasterizer on our screen-space input (same output conventions)."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    height, width = image_size
    batch = verts_screen.shape[0]
    verts_ndc = screen_to_pytorch3d_ndc(verts_screen, height, width)
    # pytorch3d keeps faces that face the viewer in its own (+X left) NDC, which mirrors our
    # screen x; culling there therefore matches ours without re-winding the faces.
    meshes = Meshes(verts=verts_ndc.float(), faces=faces.long().expand(batch, -1, -1))
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=(height, width),
        blur_radius=0.0,
        faces_per_pixel=1,
        bin_size=None if verts_screen.is_cuda else 0,
        perspective_correct=False,
        clip_barycentric_coords=False,
        cull_backfaces=cull_backfaces,
    )
    return Fragments(pix_to_face=pix_to_face, bary_coords=bary.to(verts_screen.dtype), zbuf=zbuf.to(verts_screen.dtype))


def rasterize(
    verts_screen: Tensor,
    faces: Tensor,
    image_size: int | tuple[int, int],
    backend: str = "auto",
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize a batch of meshes with one topology into ``Fragments`` (``faces_per_pixel=1``).

    Args:
        verts_screen: (B, V, 3) float ``(x px, y px, depth)``; depth > 0, smaller = closer.
        faces: (F, 3) integer vertex indices shared by the batch.
        image_size: int or (H, W).
        backend: "auto" (torch on CPU, pytorch3d on CUDA), "torch" or "pytorch3d".
        cull_backfaces: skip faces pointing away from the camera (model-space CCW winding).
    Returns:
        ``Fragments``; faces off-screen, behind the camera, degenerate or non-finite simply
        produce no pixels, and an empty mesh gives all-background fragments.
    Raises:
        ValueError: wrong shapes, dtypes, devices, indices or an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    height, width = image_hw(image_size)
    _validate(verts_screen, faces)
    if backend == "auto":
        backend = "pytorch3d" if verts_screen.is_cuda else "torch"
    batch = verts_screen.shape[0]
    if batch == 0 or faces.shape[0] == 0 or verts_screen.shape[1] == 0:
        return empty_fragments(batch, height, width, verts_screen)
    faces = faces.long()
    if backend == "pytorch3d":
        return rasterize_pytorch3d(verts_screen, faces, (height, width), cull_backfaces)
    return rasterize_torch(verts_screen, faces, (height, width), cull_backfaces)
