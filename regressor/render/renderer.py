"""``Renderer``: FaceMesh + weak-perspective camera -> ``Renders`` (shaded, albedo_shaded, ...).

Composition only: project (``camera``) -> rasterize (either backend) -> shade (``shading``).
Everything is differentiable w.r.t. the vertices *inside* the silhouette (through the
barycentrics, normals and depth); the silhouette itself is not, because the rasterizer is
hard (which face covers a pixel is a discrete choice). That is enough for shading-based
losses and the critic, which look at the shading inside the face.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from regressor.render.camera import project_weak_perspective
from regressor.render.rasterize import BACKENDS, image_hw, rasterize
from regressor.render.shading import interpolate, lambert, lambert_channels, sh_shading, vertex_normals
from regressor.types import FaceMesh, Renders

BACKGROUNDS = ("constant", "noise")
# The loss-time light of the grey ``shaded`` render (towards the light; +Z to the camera). The shipped
# critic was trained around it and is scored with it: the one place it is written.
DEFAULT_LIGHT_DIRECTION: tuple[float, float, float] = (0.0, 0.4, 1.0)
DEFAULT_ALBEDO = 0.7  # grey albedo used for ``albedo_shaded`` when none is given


def mesh_for_rendering(vertices: Tensor, faces: Tensor) -> FaceMesh:
    """(N, V, 3) vertices of any mesh -> a ``FaceMesh`` the renderer accepts (dummy landmarks: only the
    surface is drawn). Scans, crops and candidates of the critic are rendered through it."""
    zeros = vertices.new_zeros
    n = vertices.shape[0]
    return FaceMesh(vertices=vertices, faces=faces, landmarks3d=zeros(n, 68, 3), now_landmarks3d=zeros(n, 7, 3))


class Renderer(nn.Module):
    """Renders a batch of face meshes; stateless apart from its settings.

    Args:
        image_size: int or (H, W) of the output images.
        backend: rasterizer backend, see ``regressor.render.rasterize``.
        light_direction: default direction towards the light for the grey ``shaded`` render
            (model axes; +Z to the camera), normalised internally.
        ambient: ambient term of the grey shading; the diffuse weight is ``1 - ambient``.
        background: "constant" (``background_value``) or "noise" (uniform [0, 1] per pixel)
            behind the grey ``shaded`` render; other images are 0 on background.
        background_value: the constant background level.
        cull_backfaces: skip faces pointing away from the camera (faster, and hides the
            inside of the mouth/eyes from behind).
        extra_light_directions: more fixed lights; each adds a grey channel to ``shaded`` (so it is
            (B, 1 + K, H, W)). One Lambert render leaves the normal's component across the light
            unknown; three or more lights pin the normal down, so a critic can relate the image's
            shading under *any* light to the geometry (``CriticRenderSettings.extra_light_directions``).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 64,
        backend: str = "auto",
        light_direction: tuple[float, float, float] = DEFAULT_LIGHT_DIRECTION,
        ambient: float = 0.25,
        background: str = "constant",
        background_value: float = 0.0,
        cull_backfaces: bool = True,
        extra_light_directions: tuple[tuple[float, float, float], ...] = (),
    ) -> None:
        super().__init__()
        self.init_args = dict(image_size=image_size, backend=backend, light_direction=tuple(light_direction),
                              ambient=ambient, background=background, background_value=background_value,
                              cull_backfaces=cull_backfaces)  # see regressor.components
        self.extra_light_directions = tuple(tuple(float(v) for v in light) for light in extra_light_directions)
        if any(len(light) != 3 for light in self.extra_light_directions):
            raise ValueError(f"Renderer: each extra light direction needs 3 components, got {extra_light_directions!r}")
        if self.extra_light_directions:
            self.init_args["extra_light_directions"] = self.extra_light_directions
        if backend not in BACKENDS:
            raise ValueError(f"Renderer: backend must be one of {BACKENDS}, got {backend!r}")
        if background not in BACKGROUNDS:
            raise ValueError(f"Renderer: background must be one of {BACKGROUNDS}, got {background!r}")
        if len(tuple(light_direction)) != 3:
            raise ValueError(f"Renderer: light_direction must have 3 components, got {light_direction!r}")
        self.image_size = image_hw(image_size)
        self.backend = backend
        self.light_direction = tuple(float(v) for v in light_direction)
        self.ambient = float(ambient)
        self.background = background
        self.background_value = float(background_value)
        self.cull_backfaces = cull_backfaces

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, backend={self.backend!r}, background={self.background!r}, "
                f"cull_backfaces={self.cull_backfaces}")

    def forward(
        self,
        mesh: FaceMesh,
        camera: Tensor,
        albedo: Optional[Tensor] = None,
        light: Optional[Tensor] = None,
        light_direction: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Renders:
        """Render ``mesh`` seen through the weak-perspective ``camera``.

        Args:
            mesh: FaceMesh with (B, V, 3) vertices.
            camera: (B, 3) ``[scale, tx, ty]``.
            albedo: (B, V, 3) per-vertex albedo in [0, 1]; default uniform grey 0.7.
            light: (B, 9, 3) SH lighting for ``albedo_shaded``; default ambient white.
            light_direction: (B, 3) per-sample light for the grey ``shaded`` render
                (e.g. randomised during critic training); default the renderer's.
            generator: RNG for the noise background (deterministic renders per seed).
        Returns:
            Renders (see ``regressor.types.Renders``).
        """
        vertices, faces = mesh.vertices, mesh.faces
        batch = vertices.shape[0]
        height, width = self.image_size
        verts_screen = project_weak_perspective(vertices, camera, self.image_size)
        fragments = rasterize(verts_screen, faces, self.image_size, self.backend, self.cull_backfaces)
        mask = fragments.mask[:, None].to(vertices.dtype)  # (B, 1, H, W)

        if albedo is None:
            albedo = torch.full_like(vertices, DEFAULT_ALBEDO)
        if albedo.shape != vertices.shape:
            raise ValueError(f"Renderer: albedo must be (B, V, 3) = {tuple(vertices.shape)}, got {tuple(albedo.shape)}")
        # One interpolation pass for normals and albedo together.
        attributes = interpolate(fragments, faces, torch.cat([vertex_normals(vertices, faces), albedo.to(vertices)], -1))
        normals, albedo_image = attributes[:, :3], attributes[:, 3:]
        normals = torch.nn.functional.normalize(normals, dim=1, eps=1e-12) * mask

        if light_direction is None:
            light_direction = torch.tensor(self.light_direction, dtype=vertices.dtype, device=vertices.device)
        grey = lambert(normals, light_direction, ambient=self.ambient)
        if self.background == "noise":
            noise_device = generator.device if generator is not None else vertices.device
            backdrop = torch.rand((batch, 1, height, width), generator=generator, dtype=vertices.dtype,
                                  device=noise_device).to(vertices.device)
        else:
            backdrop = torch.full_like(mask, self.background_value)
        if self.extra_light_directions:
            grey = torch.cat([grey, lambert_channels(normals, self.extra_light_directions, self.ambient)], dim=1)
        shaded = grey * mask + backdrop * (1.0 - mask)

        if light is None:
            light = torch.zeros(batch, 9, 3, dtype=vertices.dtype, device=vertices.device)
            light[:, 0] = 1.0
        albedo_shaded = albedo_image * sh_shading(normals, light) * mask

        depth = fragments.zbuf[..., 0][:, None].clamp(min=0.0) * mask
        landmarks2d = project_weak_perspective(mesh.landmarks3d, camera, self.image_size)[..., :2]
        now_landmarks2d = project_weak_perspective(mesh.now_landmarks3d, camera, self.image_size)[..., :2]
        return Renders(
            shaded=shaded, albedo_shaded=albedo_shaded, mask=mask, normals=normals, depth=depth,
            landmarks2d=landmarks2d, now_landmarks2d=now_landmarks2d,
        )
