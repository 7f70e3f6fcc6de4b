"""Surface appearance of synthetic faces beyond basis albedo x SH: painted features (brows, lips,
eyes, hair cap), skin detail, specular highlights, ambient occlusion and cast shadows.

Painting and skin detail are evaluated per pixel at the *template-space* position of the
surface point (interpolated from ``v_template``), so they stick to the skin under any pose or
expression and do not depend on the mesh resolution. Images are (B, C, H, W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.synthetic.procedural import stage_generator, uniform
from regressor.types import TensorDataclass

HAIR_COLOURS = torch.tensor([  # linear-ish RGB: black, dark brown, brown, auburn, blond, grey
    [0.03, 0.025, 0.02], [0.09, 0.05, 0.03], [0.2, 0.11, 0.06], [0.3, 0.1, 0.04], [0.55, 0.42, 0.25], [0.5, 0.48, 0.46],
])
IRIS_COLOURS = torch.tensor([[0.25, 0.13, 0.05], [0.12, 0.07, 0.04], [0.2, 0.3, 0.45], [0.25, 0.32, 0.2]])


@dataclass
class FeatureStyle(TensorDataclass):
    """Per-sample random look of the painted features (all (B, ...))."""

    hair_colour: Tensor  # (B, 3)
    hairline: Tensor  # (B, 3): height above the brows (m), curvature, bald flag (0/1)
    iris_colour: Tensor  # (B, 3)
    brow: Tensor  # (B, 2): half-thickness (m), darkness [0, 1]
    lip_tint: Tensor  # (B, 3) multiplier
    detail: Tensor  # (B, 4): blotch, freckle density, freckle strength, pore strength
    lattice: Tensor  # (B, 3, N, N, N) random value lattices for blotches, freckles, pores


def sample_feature_style(seeds: list[int], lattice_size: int = 16) -> FeatureStyle:
    rows = []
    for seed in seeds:
        g = stage_generator(seed, "features")
        hair = HAIR_COLOURS[int(torch.randint(0, len(HAIR_COLOURS), (1,), generator=g))]
        hair = hair * uniform(g, 0.8, 1.25)
        bald = 1.0 if uniform(g, 0, 1) < 0.1 else 0.0
        iris = IRIS_COLOURS[int(torch.randint(0, len(IRIS_COLOURS), (1,), generator=g))] * uniform(g, 0.7, 1.2)
        rows.append(dict(
            hair_colour=hair, hairline=torch.tensor([uniform(g, 0.025, 0.045), uniform(g, -0.3, 1.0), bald]),
            iris_colour=iris, brow=torch.tensor([uniform(g, 0.003, 0.006), uniform(g, 0.6, 0.95)]),
            lip_tint=torch.tensor([uniform(g, 0.85, 1.0), uniform(g, 0.55, 0.75), uniform(g, 0.6, 0.8)]),
            detail=torch.tensor([uniform(g, 0.05, 0.25), uniform(g, 0.0, 0.25), uniform(g, 0.1, 0.5),
                                 uniform(g, 0.02, 0.08)]),
            lattice=torch.rand(3, lattice_size, lattice_size, lattice_size, generator=g),
        ))
    return FeatureStyle(**{k: torch.stack([r[k] for r in rows]).float() for k in rows[0]})


def _inside_polygon(points: Tensor, polygon: Tensor) -> Tensor:
    """(..., 2) points, (P, 2) polygon -> (...) bool (even-odd rule)."""
    x, y = points[..., 0:1], points[..., 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = polygon.roll(-1, 0)[:, 0], polygon.roll(-1, 0)[:, 1]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
    return crosses.sum(-1) % 2 == 1


def _distance_to_polyline(points: Tensor, line: Tensor) -> Tensor:
    """(..., 2) points, (P, 2) polyline -> (...) Euclidean distance."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = (((points[..., None, :] - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    nearest = a + t[..., None] * ab
    return (points[..., None, :] - nearest).norm(dim=-1).min(-1).values


class FeatureAtlas:
    """Painted-feature maps of the mean face, precomputed on a template-XY grid.

    Per-pixel painting then costs one ``grid_sample`` at each pixel's template position.
    Channels: lips (0/1), brow distance (m), eye opening (0/1), distance to the nearest eye
    centre relative to the eye height, upper-lid distance (m), nostrils (0/1).

    Args:
        landmarks: (68, 3) neutral template-space landmarks of the mean face.
        texel: atlas resolution in metres.
    """

    CHANNELS = ("lips", "brow_distance", "eye", "eye_radius", "lid_distance", "nostril")
    _cache: dict[bytes, "FeatureAtlas"] = {}

    @classmethod
    def for_landmarks(cls, landmarks: Tensor) -> "FeatureAtlas":
        """The atlas of these landmarks, built once per process (building takes ~0.5 s)."""
        key = landmarks.detach().float().cpu().numpy().tobytes()
        if key not in cls._cache:
            cls._cache[key] = cls(landmarks)
        return cls._cache[key]

    def __init__(self, landmarks: Tensor, texel: float = 0.0004):
        lm = landmarks.detach().float().cpu()
        self.landmarks = lm
        low = lm[:, :2].min(0).values - 0.02
        high = lm[:, :2].max(0).values + 0.02
        self.low, self.high = low, high
        nx, ny = (((high - low) / texel).ceil().long() + 1).tolist()
        xs = torch.linspace(float(low[0]), float(high[0]), nx)
        ys = torch.linspace(float(low[1]), float(high[1]), ny)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        xy = torch.stack([xx, yy], -1)  # (ny, nx, 2)
        lips = _inside_polygon(xy, lm[48:60, :2]).float()
        brow = torch.minimum(_distance_to_polyline(xy, lm[17:22, :2]), _distance_to_polyline(xy, lm[22:27, :2]))
        eye = torch.zeros_like(lips)
        radius = torch.full_like(lips, 10.0)
        lid = torch.full_like(lips, 1.0)
        for contour in (lm[36:42, :2], lm[42:48, :2]):
            eye = torch.maximum(eye, _inside_polygon(xy, contour).float())
            height = (contour[[1, 2], 1].mean() - contour[[4, 5], 1].mean()).abs().clamp(min=0.004)
            radius = torch.minimum(radius, (xy - contour.mean(0)).norm(dim=-1) / height)
            lid = torch.minimum(lid, _distance_to_polyline(xy, contour[0:4]))
        nostril = torch.zeros_like(lips)
        for side in (lm[32, :2], lm[34, :2]):
            nostril = torch.maximum(nostril, (((xy - side) / torch.tensor([0.004, 0.0022])).norm(dim=-1) < 1).float())
        self.maps = torch.stack([lips, brow, eye, radius, lid, nostril])[None]  # (1, C, ny, nx)

    def sample(self, template: Tensor) -> dict[str, Tensor]:
        """Channel name -> (B, 1, H, W) at template positions (B, 3, H, W); outside the atlas: far away."""
        grid = ((template[:, :2] - self.low.to(template)[None, :, None, None])
                / (self.high - self.low).to(template)[None, :, None, None] * 2 - 1).permute(0, 2, 3, 1)
        maps = self.maps.to(template).expand(template.shape[0], -1, -1, -1)
        values = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)
        outside = (grid.abs() > 1).any(-1)[:, None]
        far = torch.tensor([0.0, 1.0, 0.0, 10.0, 1.0, 0.0], device=template.device, dtype=template.dtype)
        values = torch.where(outside, far[None, :, None, None], values)
        return {name: values[:, i:i + 1] for i, name in enumerate(self.CHANNELS)}


def paint_features(albedo: Tensor, template: Tensor, covered: Tensor, atlas: FeatureAtlas, style: FeatureStyle) -> tuple[Tensor, Tensor]:
    """Brows, lips, eyes (sclera, iris, pupil, lid line), nostrils and a hair cap on the albedo.

    Args:
        albedo: (B, 3, H, W) per-pixel albedo; template: (B, 3, H, W) template-space position of
        each pixel's surface point; covered: (B, 1, H, W) 0/1; atlas: the mean face's feature maps.
    Returns:
        painted albedo (B, 3, H, W) and the hair map (B, 1, H, W) (no skin detail there).
    """
    lm = atlas.landmarks.to(albedo)
    tx, ty, tz = template[:, 0:1], template[:, 1:2], template[:, 2:3]
    front = (tz > lm[:, 2].min() - 0.01).to(albedo) * covered
    f = atlas.sample(template)
    col = lambda t: t[:, :, None, None]  # noqa: E731  (B, C) -> (B, C, 1, 1)
    out = albedo

    lips = f["lips"] * front
    out = out * (1 - lips + lips * col(style.lip_tint))

    width = col(style.brow[:, :1])
    stroke = ((1 - f["brow_distance"] / width).clamp(0, 1) * 3).clamp(max=1) * front
    dark = stroke * col(style.brow[:, 1:2])
    out = out * (1 - dark) + col(style.hair_colour) * dark

    eye = f["eye"] * front
    sclera = torch.tensor([0.75, 0.7, 0.65], device=out.device, dtype=out.dtype)[None, :, None, None]
    out = out * (1 - eye) + sclera * eye
    iris = ((1.0 - f["eye_radius"]) / 0.1).clamp(0, 1) * eye
    out = out * (1 - iris) + col(style.iris_colour) * iris
    pupil = ((0.4 - f["eye_radius"]) / 0.1).clamp(0, 1) * eye
    out = out * (1 - pupil) + 0.02 * pupil
    lid = ((0.0014 - f["lid_distance"]) / 0.0006).clamp(0, 1) * front
    out = out * (1 - 0.8 * lid)
    out = out * (1 - 0.7 * f["nostril"] * front)

    # hair cap: above a (curved) hairline, and over the back/top of the head
    brow_y = lm[17:27, 1].mean()
    half_width = (lm[16, 0] - lm[0, 0]).abs() / 2
    height, curve, bald = (style.hairline[:, i, None, None, None] for i in range(3))
    hairline = brow_y + height + curve * 0.03 * (tx / half_width) ** 2 + bald * 0.05
    top = ((ty - hairline) / 0.003).clamp(0, 1)
    ear_y, ear_z = lm[[0, 16], 1].mean(), lm[[0, 16], 2].mean()
    front_edge = ear_z + 0.015 + 0.6 * (ty - brow_y).clamp(min=0)
    temples = ((front_edge - tz) / 0.008).clamp(0, 1) * ((ty - brow_y + 0.005) / 0.008).clamp(0, 1)
    back = ((ear_z - 0.02 - tz) / 0.01).clamp(0, 1) * ((ty - ear_y + 0.04) / 0.01).clamp(0, 1)
    hair = torch.maximum(torch.maximum(top, temples), back) * covered
    streaks = 0.75 + 0.5 * _value_noise_1d(tx, 0.004, style.lattice[:, 2])
    out = out * (1 - hair) + col(style.hair_colour) * streaks * hair
    return out, hair


def _value_noise_1d(coordinate: Tensor, cell: float, lattice: Tensor) -> Tensor:
    """(B, 1, H, W) smooth noise along one coordinate (hair streaks), from the lattice's first row."""
    row = lattice[:, 0, 0]  # (B, N)
    n = row.shape[-1]
    u = (coordinate / cell) % n
    i0 = u.floor().long() % n
    i1 = (i0 + 1) % n
    frac = u - u.floor()
    frac = frac * frac * (3 - 2 * frac)
    b = coordinate.shape[0]
    v0 = torch.gather(row, 1, i0.view(b, -1)).view_as(coordinate)
    v1 = torch.gather(row, 1, i1.view(b, -1)).view_as(coordinate)
    return v0 * (1 - frac) + v1 * frac


def lattice_noise_3d(template: Tensor, lattice: Tensor, cell: float) -> Tensor:
    """(B, 1, H, W) periodic trilinear value noise at template positions (B, 3, H, W), cell in metres.

    Args:
        lattice: (B, N, N, N) random values in [0, 1] (one periodic lattice per sample).
    """
    b, n = lattice.shape[0], lattice.shape[-1]
    periodic = F.pad(lattice[:, None], (0, 1, 0, 1, 0, 1), mode="circular")  # (B, 1, N+1, N+1, N+1)
    u = torch.frac(template / (cell * n) + 10.0)  # in [0, 1), periodic with N cells
    grid = (u * 2 - 1).permute(0, 2, 3, 1)[:, None]  # (B, 1, H, W, 3), x->W, y->H, z->D of the lattice
    return F.grid_sample(periodic, grid, mode="bilinear", align_corners=True)[:, :, 0]


def skin_detail(albedo: Tensor, template: Tensor, skin: Tensor, style: FeatureStyle) -> Tensor:
    """Blotches (1.5 cm), freckles (3 mm spots) and pores (1.5 mm grain, about a pixel at 128 px) on the skin."""
    blotch_amount, freckle_density, freckle_strength, pore_amount = (style.detail[:, i, None, None, None] for i in range(4))
    blotch = lattice_noise_3d(template, style.lattice[:, 0], 0.015) - 0.5
    redness = torch.tensor([0.6, -0.5, -0.4], device=albedo.device)[None, :, None, None]
    out = albedo * (1 + blotch_amount * blotch * (1 + redness))
    freckle_field = lattice_noise_3d(template, style.lattice[:, 1], 0.003)
    spots = ((freckle_field - (1 - freckle_density)) / 0.08).clamp(0, 1)
    brown = torch.tensor([0.35, 0.55, 0.75], device=albedo.device)[None, :, None, None]
    out = out * (1 - freckle_strength * spots * brown)
    pores = lattice_noise_3d(template + 0.37, style.lattice[:, 2], 0.0015) - 0.5  # ~ a pixel at 128 px
    out = out * (1 + pore_amount * pores)
    return albedo * (1 - skin) + out * skin


def blinn_phong(normals: Tensor, directions: Tensor, colours: Tensor, strength: Tensor, shininess: Tensor,
                shadow: Tensor | None = None) -> Tensor:
    """(B, 3, H, W) specular highlights for an orthographic view along -Z.

    normals (B, 3, H, W); directions (B, L, 3); colours (B, L, 3); strength, shininess (B,);
    shadow (B, 1, H, W) visibility of light 0 (the key light), or None.
    """
    view = torch.tensor([0.0, 0.0, 1.0], device=normals.device, dtype=normals.dtype)
    halfway = F.normalize(directions + view, dim=-1)  # (B, L, 3)
    cosine = torch.einsum("bchw,blc->blhw", normals, halfway).clamp(min=0)
    lit = torch.einsum("bchw,blc->blhw", normals, directions) > 0
    highlight = cosine ** shininess[:, None, None, None] * lit
    if shadow is not None:
        highlight = torch.cat([highlight[:, :1] * shadow, highlight[:, 1:]], 1)
    normalisation = (shininess + 8) / (8 * math.pi)  # energy-conserving Blinn-Phong
    spec = torch.einsum("blhw,blc->bchw", highlight, colours)
    return spec * (strength * normalisation)[:, None, None, None]


def screen_space_occlusion(depth: Tensor, covered: Tensor, pixels_per_metre: float) -> Tensor:
    """(B, 1, H, W) ambient visibility in [0.35, 1]: pixels deeper than their surroundings are occluded.

    depth: (B, 1, H, W) metres (larger = farther); covered: (B, 1, H, W) 0/1;
    pixels_per_metre: the nominal image scale (one value per batch, so a sample does not
    depend on its batch). Two scales, 6 mm and 15 mm.
    """
    from regressor.synthetic.procedural import gaussian_blur

    visibility = torch.ones_like(depth)
    b = depth.shape[0]
    for radius_m, weight in ((0.006, 0.5), (0.015, 0.5)):
        sigma = min(max(radius_m * pixels_per_metre, 0.5), 12.0)
        stacked = torch.cat([depth * covered, covered], 1).flatten(0, 1)  # (2B, H, W) as channels
        blurred = gaussian_blur(stacked, sigma).view(b, 2, *depth.shape[-2:])
        local = blurred[:, :1] / blurred[:, 1:].clamp(min=1e-6)
        occlusion = ((depth - local) / (radius_m * 0.8)).clamp(0, 1)
        visibility = visibility - weight * 0.65 * occlusion
    return torch.where(covered > 0, visibility, torch.ones_like(visibility))
