"""Read any photo a user may have into one form: ``(H, W, 3) uint8`` RGB, upright.

Why a module of its own: Pillow opens nearly everything, but what it hands back differs
(grayscale ``L``, palette ``P``, ``RGBA``, ``CMYK`` JPEGs, 16-bit ``I;16``/``I`` PNGs, EXIF
orientation left unapplied, lazy decoding that fails only later on truncated files).
Every consumer (folder datasets, prediction, the landmark detector) goes through
``load_image`` so these cases are handled once and fail with one error type,
:class:`ImageReadError`, that names the file and the reason.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Pillow refuses images above 2 x Image.MAX_IMAGE_PIXELS (~179 MP) as "decompression bombs".
# Real photos from modern cameras reach ~100-200 MP, so we raise the ceiling to 250 MP
# (~750 MB as RGB uint8), and refuse anything larger with a clear error instead.
MAX_PIXELS = 250_000_000


class ImageReadError(ValueError):
    """An image file that cannot be turned into RGB pixels; ``path`` and ``reason`` are kept."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Temporarily set Pillow's bomb limit (it is a module global) so that its own check,
    which runs inside ``Image.open``, allows ``max_pixels`` but not more."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1  # Pillow errors at > 2 x the limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _to_uint8(values: np.ndarray, bit_depth_hint: int | None) -> np.ndarray:
    """Scale integer/float single-channel pixels to uint8.

    ``bit_depth_hint`` is 16 for Pillow's ``I;16*`` modes. Mode ``I`` (32-bit) is what older
    Pillows give for 16-bit PNGs, so its range is inferred from the data: <= 255 stays,
    <= 65535 is treated as 16-bit, anything else is min-max normalised. Mode ``F`` in [0, 1]
    is scaled by 255.
    """
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    high = float(finite.max()) if finite.size else 0.0
    low = float(finite.min()) if finite.size else 0.0
    if bit_depth_hint == 16 or (255.0 < high <= 65535.0 and low >= 0.0):
        scaled = values / 257.0
    elif low >= 0.0 and high <= 1.0 and values.dtype.kind == "f" and bit_depth_hint == 0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    else:
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb_array(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        hint = 16 if mode.startswith("I;16") else (0 if mode == "F" else None)
        gray = _to_uint8(np.asarray(image), hint)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba)
    rgb = image.convert("RGB")  # L, 1, P, CMYK (incl. Adobe-inverted), YCbCr, LAB, HSV
    return np.asarray(rgb, dtype=np.uint8).copy()


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Load ``path`` as an upright ``(H, W, 3) uint8`` RGB array.

    * EXIF orientation is applied (``ImageOps.exif_transpose``); a broken EXIF block is
      ignored with a warning rather than failing the image.
    * Grayscale, palette, CMYK and 16-bit images become RGB; 16-bit values are scaled
      (65535 -> 255). Transparent pixels are composited over ``background``.
    * The file is fully decoded here, so truncated files fail now, not later.

    Raises:
        ImageReadError: missing, unreadable, corrupt, truncated, or larger than ``max_pixels``.
    """
    return _load(Path(path), max_pixels, background, None)[0]


def load_image_reduced(
    path: str | os.PathLike,
    scale: float,
    *,
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (0, 0, 0),
) -> tuple[np.ndarray, float]:
    """Like ``load_image``, but decode at no less than ``scale`` x the full resolution when that
    is cheaper. Returns ``(pixels, actual_scale)``; a point ``p`` of the full image is at
    ``p * actual_scale`` in ``pixels`` (project pixel-corner convention, exact).

    Why: a face crop of 64-224 px from a 12-megapixel JPEG needs a fraction of its pixels, and
    JPEG can decode directly at 1/2, 1/4 or 1/8 size (DCT scaling, Pillow's ``draft``), about
    15x faster than a full decode here. Other formats decode in full (``actual_scale`` 1).
    """
    if not 0 < scale:
        raise ValueError(f"load_image_reduced: scale must be > 0, got {scale}")
    return _load(Path(path), max_pixels, background, min(float(scale), 1.0))


def _load(
    path: Path, max_pixels: int, background: tuple[int, int, int], scale: float | None
) -> tuple[np.ndarray, float]:
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        with _pixel_limit(max_pixels), Image.open(path) as image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageReadError(path, f"image has an empty size {width}x{height}")
            reduction = 1
            if scale is not None and scale < 0.5 and image.format == "JPEG":
                image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
                reduction = 2 ** round(math.log2(width / image.size[0]))  # DCT scaling: 1, 2, 4 or 8
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception as error:  # noqa: BLE001 - malformed EXIF must not lose the pixels
                warnings.warn(f"{path}: ignoring unreadable EXIF orientation ({error})", stacklevel=3)
            return _to_rgb_array(image, background), 1.0 / reduction
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError(path, f"image is larger than the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (corrupt or not an image)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError) as error:
        # Pillow signals truncation/corruption with OSError ("image file is truncated"),
        # SyntaxError (broken headers) or ValueError, depending on the plugin.
        raise ImageReadError(path, f"corrupt or truncated ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says: upright size (EXIF orientation applied) and Pillow mode."""

    width: int
    height: int
    mode: str

    @property
    def conversion(self) -> str | None:
        """Which conversion ``load_image`` will apply, for reporting; None for plain RGB."""
        if self.mode == "RGB":
            return None
        if self.mode.startswith("I;16") or self.mode in ("I", "F"):
            return "16-bit"
        if self.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            return "alpha"
        if self.mode in ("L", "1"):
            return "grayscale"
        return {"CMYK": "cmyk", "P": "palette"}.get(self.mode, self.mode)


_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def probe_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, verify: bool = True) -> ImageInfo:
    """Cheap check of an image file without decoding its pixels.

    Reads the header (size, mode, EXIF orientation) and, with ``verify``, runs Pillow's
    ``verify()`` (for PNG this checks every chunk's CRC, so truncated PNGs are caught here;
    for JPEG it checks little, and a truncated JPEG is only caught by ``load_image``).

    Raises:
        ImageReadError: as ``load_image`` would for a missing, unrecognised or oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        with _pixel_limit(max_pixels), Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - broken EXIF: load_image ignores it too
                orientation = 1
        if verify:  # verify() must come straight after open, hence a second open
            with _pixel_limit(max_pixels), Image.open(path) as image:
                image.verify()
    except Image.DecompressionBombError:
        raise ImageReadError(path, f"image is larger than the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (corrupt or not an image)") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as error:
        raise ImageReadError(path, f"corrupt or truncated ({type(error).__name__}: {error})") from None
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"image has an empty size {width}x{height}")
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(width=width, height=height, mode=mode)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name (deterministic order)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {directory} does not exist")
    return sorted(p for p in directory.iterdir() if p.is_file() and is_image_file(p))
