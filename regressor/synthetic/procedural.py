"""Procedural image-space effects for synthetic faces: noise fields, backgrounds, hair strands,
occluders and camera degradations (blur, sensor noise, JPEG).

Why hand-written: these are a few lines each on top of torch ops, they must draw every random
number from a *per-sample* ``torch.Generator`` (so a sample is a function of its seed alone, in a
batch or not), and albumentations draws from global numpy state. JPEG uses Pillow's codec.

Every function works on one sample: images are ``(C, H, W)`` float in [0, 1].
"""
from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor


def stage_generator(seed: int, stage: str) -> torch.Generator:
    """A CPU generator for one (sample seed, named stage) pair.

    Each stage (pose, lighting, background, ...) has its own stream, so switching an effect
    off does not change the random numbers of any other stage: ``model_only`` and the full
    config give the same face for the same seed. ``crc32`` (not ``hash``) keeps it stable
    across processes.
    """
    mixed = (int(seed) * 1_000_003 + zlib.crc32(stage.encode())) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def uniform(g: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """Uniform samples in [low, high) (a float when no shape is given)."""
    value = torch.rand(*(shape or (1,)), generator=g) * (high - low) + low
    return value if shape else value.item()


def value_noise(g: torch.Generator, size: tuple[int, int], cells: int, channels: int = 1) -> Tensor:
    """(C, H, W) smooth noise in roughly [0, 1]: a random ``cells x cells`` grid, bicubic-upsampled."""
    grid = torch.rand(1, channels, cells + 1, cells + 1, generator=g)
    return F.interpolate(grid, size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def fractal_noise(g: torch.Generator, size: tuple[int, int], base_cells: int = 3, octaves: int = 4,
                  persistence: float = 0.5, channels: int = 1) -> Tensor:
    """(C, H, W) multi-octave value noise, normalised to [0, 1]."""
    total = torch.zeros(channels, *size)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(g, size, base_cells * 2**octave, channels)
        norm += amplitude
        amplitude *= persistence
    return total / norm


def _pixel_grid(size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (H, W) each, in [0, 1]."""
    h, w = size
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    return torch.meshgrid(ys, xs, indexing="ij")


def _muted(colour: Tensor, saturation: float) -> Tensor:
    """Pull an RGB colour towards its grey level (real scenes are rarely fully saturated)."""
    return colour.mean() + (colour - colour.mean()) * saturation


def cluttered_background(g: torch.Generator, size: tuple[int, int]) -> Tensor:
    """(3, H, W) a busy indoor/outdoor-ish scene: gradient, textured shapes, stripes, defocus."""
    y, x = _pixel_grid(size)
    top, bottom = _muted(torch.rand(3, generator=g), 0.5), _muted(torch.rand(3, generator=g), 0.5)
    image = top[:, None, None] * (1 - y) + bottom[:, None, None] * y
    image = image * (0.6 + 0.8 * fractal_noise(g, size, 2, 3, channels=1))
    for _ in range(int(torch.randint(3, 12, (1,), generator=g))):
        colour = _muted(torch.rand(3, generator=g), uniform(g, 0.2, 0.9))
        cx, cy, rx, ry = torch.rand(4, generator=g).tolist()
        rx, ry = 0.05 + 0.4 * rx, 0.05 + 0.4 * ry
        angle = uniform(g, 0.0, math.pi)
        u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
        v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
        kind = int(torch.randint(0, 3, (1,), generator=g))
        if kind == 0:  # rectangle
            shape = ((u.abs() < rx) & (v.abs() < ry)).float()
        elif kind == 1:  # ellipse
            shape = ((u / rx) ** 2 + (v / ry) ** 2 < 1).float()
        else:  # stripes inside a band
            period = uniform(g, 0.02, 0.12)
            shape = ((torch.sin(2 * math.pi * u / period) > 0) & (v.abs() < ry)).float()
        texture = 0.7 + 0.6 * value_noise(g, size, int(torch.randint(2, 16, (1,), generator=g)))
        image = image * (1 - shape) + (colour[:, None, None] * texture) * shape
    image = gaussian_blur(image, uniform(g, 0.3, 2.5) * size[0] / 128)
    return image.clamp(0, 1)


def plain_background(g: torch.Generator, size: tuple[int, int]) -> Tensor:
    """(3, H, W) a smooth studio-like backdrop (gradient plus faint noise)."""
    y, x = _pixel_grid(size)
    base = torch.rand(3, generator=g) * 0.8 + 0.1
    tilt = (torch.rand(2, generator=g) - 0.5) * 0.6
    shade = 1 + tilt[0] * (x - 0.5) + tilt[1] * (y - 0.5)
    return (base[:, None, None] * shade * (0.9 + 0.2 * value_noise(g, size, 3))).clamp(0, 1)


def _splat(points: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) max of ``values`` (N,) splatted at the nearest pixels of ``points`` (N, 2) px."""
    h, w = size
    col = points[:, 0].floor().long()
    row = points[:, 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = torch.zeros(h * w)
    flat.scatter_reduce_(0, (row * w + col)[inside], values[inside], reduce="amax")
    return flat.view(h, w)


def hair_strands(g: torch.Generator, size: tuple[int, int], face_box: Tensor, colour: Tensor) -> tuple[Tensor, Tensor]:
    """Loose strands falling from the top of the head over forehead and temples.

    Args:
        face_box: (4,) ``x0, y0, x1, y1`` pixels of the head in the image (from its mask).
        colour: (3,) hair colour.
    Returns:
        alpha (1, H, W) in [0, 1] and rgb (3, H, W).
    """
    x0, y0, x1, y1 = face_box.tolist()
    width, height = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    count = int(torch.randint(10, 60, (1,), generator=g))
    t = torch.linspace(0, 1, 4 * max(size))[None, :, None]  # dense enough to leave no gaps
    start = torch.stack([x0 + width * (0.15 + 0.7 * torch.rand(count, generator=g)),
                         y0 + height * (0.02 + 0.12 * torch.rand(count, generator=g))], -1)
    drop = height * (0.1 + 0.35 * torch.rand(count, generator=g))
    sway = width * 0.25 * (torch.rand(count, 2, generator=g) - 0.5)
    control = start + torch.stack([sway[:, 0], drop * 0.5], -1)
    end = start + torch.stack([sway[:, 1] * 2, drop], -1)
    curve = (1 - t) ** 2 * start[:, None] + 2 * (1 - t) * t * control[:, None] + t**2 * end[:, None]
    strength = (0.5 + 0.5 * torch.rand(count, generator=g))[:, None].expand(-1, curve.shape[1])
    fade = (1 - t[0, :, 0] ** 2)[None].expand(count, -1)  # tips thin out
    alpha = _splat(curve.reshape(-1, 2), (strength * fade).reshape(-1), size)
    alpha = gaussian_blur(alpha[None], 0.4 * size[0] / 128).clamp(0, 1)
    shade = 0.7 + 0.6 * value_noise(g, size, 8)
    return alpha, (colour[:, None, None] * shade).clamp(0, 1)


def occluder_patch(g: torch.Generator, size: tuple[int, int], face_box: Tensor) -> tuple[Tensor, Tensor]:
    """A textured blob entering from an image edge and covering part of the face (a hand, a cup, a scarf).

    Returns alpha (1, H, W) and rgb (3, H, W).
    """
    y, x = _pixel_grid(size)
    h, w = size
    x0, y0, x1, y1 = (face_box / torch.tensor([w, h, w, h])).tolist()
    side = int(torch.randint(0, 3, (1,), generator=g))  # 0 bottom, 1 left, 2 right
    reach = uniform(g, 0.15, 0.4)
    if side == 0:
        cx, cy = uniform(g, x0, x1), y1 + 0.1 - reach * (y1 - y0)
    elif side == 1:
        cx, cy = x0 - 0.1 + reach * (x1 - x0), uniform(g, y0 + 0.3 * (y1 - y0), y1)
    else:
        cx, cy = x1 + 0.1 - reach * (x1 - x0), uniform(g, y0 + 0.3 * (y1 - y0), y1)
    rx, ry = uniform(g, 0.12, 0.3), uniform(g, 0.12, 0.3)
    wobble = 1 + 0.15 * (value_noise(g, size, 4)[0] - 0.5)
    alpha = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < wobble).float()[None]
    alpha = gaussian_blur(alpha, 0.8 * h / 128)
    colour = torch.rand(3, generator=g) * 0.8 + 0.1
    rgb = colour[:, None, None] * (0.6 + 0.6 * fractal_noise(g, size, 3, 3))
    return alpha.clamp(0, 1), rgb.clamp(0, 1)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """(C, H, W) separable Gaussian blur; sigma in pixels (<= 0.05 returns the input)."""
    if sigma <= 0.05:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    x = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def motion_blur(image: Tensor, length: float, angle: float) -> Tensor:
    """(C, H, W) linear motion blur of ``length`` pixels along ``angle`` (radians)."""
    if length < 1.0:
        return image
    radius = int(math.ceil(length / 2))
    k = 2 * radius + 1
    yy, xx = torch.meshgrid(torch.arange(k) - radius, torch.arange(k) - radius, indexing="ij")
    distance = (-xx * math.sin(angle) + yy * math.cos(angle)).abs()
    along = (xx * math.cos(angle) + yy * math.sin(angle)).abs()
    kernel = ((distance < 0.6) & (along <= length / 2)).to(image.dtype)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    x = F.pad(image[None], (radius,) * 4, mode="replicate")
    return F.conv2d(x, kernel.expand(c, 1, k, k), groups=c)[0]


def sensor_noise(image: Tensor, g: torch.Generator, shot: float, read: float, chroma: float = 0.3) -> Tensor:
    """(3, H, W) signal-dependent (shot) plus constant (read) Gaussian noise, partly per channel."""
    std = (shot * image.clamp(min=0) + read**2).sqrt()
    luma = torch.randn(1, *image.shape[1:], generator=g)
    colour = torch.randn(image.shape, generator=g)
    return (image + std * ((1 - chroma) * luma + chroma * colour)).clamp(0, 1)


def jpeg_artifacts(image: Tensor, quality: int) -> Tensor:
    """(3, H, W) the image after a JPEG round trip at ``quality`` (1-100), with Pillow's codec
    (torchvision's would cost a multi-second import of torchvision in every worker)."""
    import io

    import numpy as np
    from PIL import Image

    as_bytes = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(as_bytes).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.device, image.dtype) / 255.0
