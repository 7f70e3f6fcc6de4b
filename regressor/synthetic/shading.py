"""Image formation of a synthetic face: rasterized geometry -> linear radiance -> camera pixels.

``shade_faces`` composes the switchable effects of ``SyntheticConfig`` on one batch. With
``SyntheticConfig.model_only()`` it reduces to ``basis albedo x sh_shading(normals, light)`` on
a constant background - exactly the ``Renderer``'s ``albedo_shaded``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.synthetic import procedural as proc
from regressor.synthetic.appearance import (
    FeatureAtlas, FeatureStyle, blinn_phong, paint_features, screen_space_occlusion, skin_detail,
)
from regressor.synthetic.sampling import Lighting
from regressor.synthetic.shadows import key_light_visibility
from regressor.synthetic.config import SyntheticConfig
from regressor.render.shading import interpolate, sh_shading, vertex_normals
from regressor.types import Fragments

MOUTH_COLOUR = (0.22, 0.06, 0.06)
TEETH_COLOUR = (0.75, 0.72, 0.62)


@dataclass
class SceneGeometry:
    """What shading needs from the rasterized ground-truth mesh (one batch).

    vertices (B, V, 3) model space; faces (F, 3); fragments; template (V, 3) template vertices;
    atlas: the mean face's painted-feature maps; mouth_faces (F,) bool (faces that open into the mouth);
    jaw_weight (V,) in [0, 1] (how much each vertex follows the jaw);
    pixels_per_metre: nominal image scale of the face (per batch, from the image size only).
    """

    vertices: Tensor
    faces: Tensor
    fragments: Fragments
    template: Tensor
    atlas: FeatureAtlas
    mouth_faces: Tensor
    jaw_weight: Tensor
    pixels_per_metre: float


def shade_faces(scene: SceneGeometry, vertex_albedo: Tensor, light: Tensor, lighting: Lighting,
                style: FeatureStyle, config: SyntheticConfig) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) linear-to-display face colour (unclamped outside the face: 0) and the coverage (B, 1, H, W).

    vertex_albedo: (B, V, 3) basis albedo; light: (B, 9, 3) ground-truth SH (used when not multi_light).
    """
    fragments, faces, vertices = scene.fragments, scene.faces, scene.vertices
    batch = vertices.shape[0]
    covered = fragments.mask[:, None].to(vertices.dtype)
    attributes = torch.cat([vertex_normals(vertices, faces), vertex_albedo, scene.template.expand(batch, -1, -1).to(vertices),
                            vertices, scene.jaw_weight.to(vertices)[None, :, None].expand(batch, -1, 1)], -1)
    normals, albedo, template, points, jaw = interpolate(fragments, faces, attributes).split([3, 3, 3, 3, 1], dim=1)
    normals = F.normalize(normals, dim=1, eps=1e-12) * covered
    hair = torch.zeros_like(covered)
    if config.facial_features:
        albedo, hair = paint_features(albedo, template, covered, scene.atlas, style)
    if config.skin_detail:
        albedo = skin_detail(albedo, template, covered * (1 - hair), style)

    occlusion = torch.ones_like(covered)
    if config.ambient_occlusion:
        depth = torch.where(covered > 0, fragments.zbuf[..., 0][:, None], torch.zeros_like(covered))
        occlusion = screen_space_occlusion(depth, covered, scene.pixels_per_metre)

    shadow = None
    if config.multi_light:
        if config.shadows:
            shadow = key_light_visibility(vertices, faces, points, normals, lighting.directions[:, 0],
                                          map_size=max(64, int(0.75 * fragments.zbuf.shape[1])))
        cosines = torch.einsum("bchw,blc->blhw", normals, lighting.directions).clamp(min=0)
        if shadow is not None:
            cosines = torch.cat([cosines[:, :1] * shadow, cosines[:, 1:]], 1)
        direct = torch.einsum("blhw,blc->bchw", cosines, lighting.colours)
        ambient = lighting.ambient[:, :, None, None] * occlusion
        irradiance = (ambient + direct * (0.6 + 0.4 * occlusion)) * lighting.white_balance[:, :, None, None]
    else:
        irradiance = sh_shading(normals, light) * occlusion
    colour = albedo * irradiance

    if config.specular:
        oily = 1.0 - hair * 0.8
        spec = blinn_phong(normals, lighting.directions, lighting.colours, lighting.specular_strength,
                           lighting.shininess, shadow)
        colour = colour + spec * oily * occlusion * lighting.white_balance[:, :, None, None]

    if config.mouth_interior:
        colour = _mouth_interior(colour, scene, normals, jaw, irradiance, covered)
    if config.tone_curve:
        exposure, gamma = lighting.exposure[:, None, None, None], lighting.gamma[:, None, None, None]
        colour = (colour * exposure).clamp(min=0) ** (1.0 / gamma)
    return colour * covered, covered


def _mouth_interior(colour: Tensor, scene: SceneGeometry, normals: Tensor, jaw: Tensor, irradiance: Tensor,
                    covered: Tensor) -> Tensor:
    """Dark mouth with teeth where the lips part: faces flagged as mouth faces, or back faces seen
    through a hole (FLAME-like open meshes)."""
    fragments, faces = scene.fragments, scene.faces
    pix = fragments.pix_to_face[..., 0]
    num_faces = faces.shape[0]
    face_id = torch.where(pix >= 0, pix % num_faces, torch.zeros_like(pix))
    inside = (scene.mouth_faces.to(pix.device)[face_id] & (pix >= 0))[:, None].to(colour.dtype)
    backface = (normals[:, 2:3] < -0.05).to(colour.dtype) * covered
    inside = torch.maximum(inside, backface)
    if inside.sum() == 0:
        return colour
    teeth = ((jaw < 0.3) | (jaw > 0.8)).to(colour.dtype) * 0.85
    dark = torch.tensor(MOUTH_COLOUR, dtype=colour.dtype, device=colour.device)[None, :, None, None]
    white = torch.tensor(TEETH_COLOUR, dtype=colour.dtype, device=colour.device)[None, :, None, None]
    brightness = irradiance.mean(1, keepdim=True).clamp(0, 1.5) * 0.5
    interior = (dark * (1 - teeth) + white * teeth) * brightness
    return colour * (1 - inside) + interior * inside


def finish_image(face: Tensor, covered: Tensor, seeds: list[int], config: SyntheticConfig,
                 hair_colour: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1]: background, strands/occluders, then blur, sensor noise and JPEG per sample."""
    size = tuple(face.shape[-2:])
    scale = size[0] / 128.0
    images = []
    for b, seed in enumerate(seeds):
        g = proc.stage_generator(seed, "background")
        kind = config.background
        if kind == "mixed":
            kind = "cluttered" if proc.uniform(g, 0, 1) < 0.6 else "plain"
        if kind == "constant":
            backdrop = torch.full((3, *size), config.background_value)
        elif kind == "plain":
            backdrop = proc.plain_background(g, size)
        else:
            backdrop = proc.cluttered_background(g, size)
        m = covered[b].cpu()
        image = face[b].cpu() * m + backdrop * (1 - m)

        g = proc.stage_generator(seed, "occluders")
        box = _box(m[0])
        if box is not None and proc.uniform(g, 0, 1) < config.hair_strand_probability:
            alpha, rgb = proc.hair_strands(g, size, box, hair_colour[b].cpu() ** (1 / 1.3))
            image = image * (1 - alpha) + rgb * alpha
        if box is not None and proc.uniform(g, 0, 1) < config.occluder_probability:
            alpha, rgb = proc.occluder_patch(g, size, box)
            image = image * (1 - alpha) + rgb * alpha

        g = proc.stage_generator(seed, "camera_effects")
        draws = torch.rand(8, generator=g).tolist()  # fixed count: effects switch without shifting others
        if config.blur:
            image = proc.gaussian_blur(image, (0.3 + draws[0]) * scale)  # real photos are never pixel-sharp
            if draws[1] < 0.15:
                image = proc.motion_blur(image, (1 + 3 * draws[2]) * scale, draws[3] * 3.1416)
        if config.sensor_noise:
            image = proc.sensor_noise(image.clamp(0, 1), g, shot=0.006 * draws[4], read=0.002 + 0.012 * draws[5])
        if config.jpeg and draws[6] < 0.8:
            low, high = config.jpeg_quality
            image = proc.jpeg_artifacts(image, int(round(low + (high - low) * draws[7])))
        images.append(image.clamp(0, 1))
    return torch.stack(images).to(face.device)


def _box(mask: Tensor) -> Tensor | None:
    """(4,) x0, y0, x1, y1 of the non-zero pixels of an (H, W) mask, or None if empty."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    if rows.numel() == 0:
        return None
    return torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
