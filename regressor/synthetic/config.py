"""``SyntheticConfig``: the distributions and switches of the synthetic face generator.

Plain types only (floats, ints, bools, strings, 2-tuples for ranges) so it round-trips through
yaml / LightningCLI. Angles are in degrees, lengths in millimetres where the name says so.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

BACKGROUNDS = ("constant", "plain", "cluttered", "mixed")


@dataclass
class SyntheticConfig:
    """Distributions of the face parameters and the appearance effects of synthetic images.

    Effects marked *outside the model* are things the photometric model (per-vertex basis
    albedo x 9-band SH shading) cannot explain; ``model_only()`` switches all of them off.
    """

    # --- identity and expression (coefficients in units of the basis std) -------------------
    shape_std: float = 1.0
    # per-face identity scale: each face's shape coefficients are multiplied by U(lo, hi) (None = off). Why: a
    # critic trained on faces of one identity spread can rank by how far from the mean a shape is (fits are
    # shrunk), a prior; with faces of every spread only the image says how much identity a face has.
    shape_scale_range: tuple[float, float] | None = None
    expression_std: float = 0.6
    albedo_std: float = 1.0
    # --- articulation (degrees) ---------------------------------------------------------------
    yaw_max_deg: float = 45.0  # head yaw ~ U(-max, max)
    pitch_max_deg: float = 15.0
    roll_max_deg: float = 10.0
    neck_std_deg: float = 3.0
    jaw_small_max_deg: float = 3.0  # usual case: mouth nearly closed
    jaw_open_probability: float = 0.25
    jaw_open_range_deg: tuple[float, float] = (5.0, 22.0)
    jaw_side_std_deg: float = 1.0
    gaze_max_deg: float = 10.0
    # --- camera: a face-detector-like crop ----------------------------------------------------
    # side of the 68-landmark box as a fraction of the image side, and centre jitter (fraction).
    face_fraction: tuple[float, float] = (0.55, 0.72)
    crop_jitter: float = 0.04
    # --- lighting -----------------------------------------------------------------------------
    max_lights: int = 3
    ambient_range: tuple[float, float] = (0.15, 0.45)
    key_intensity_range: tuple[float, float] = (0.6, 1.0)
    # --- geometry beyond the model (outside the model) ----------------------------------------
    extra_geometry: bool = True
    displacement_mm: tuple[float, float] = (1.0, 3.0)  # peak |displacement| per identity
    displacement_bumps: tuple[int, int] = (3, 8)
    # --- appearance outside the model -----------------------------------------------------------
    facial_features: bool = True  # painted brows, lips, hair cap, irises (not in the albedo basis)
    skin_detail: bool = True  # blotches, freckles, pores (surface-attached 3D noise)
    multi_light: bool = True  # 1..max_lights clamped-cosine lights (else: render the SH of params.light)
    specular: bool = True  # Blinn-Phong
    ambient_occlusion: bool = True  # screen-space, from the depth buffer
    shadows: bool = True  # shadow map from the key light (acts only with multi_light: the SH render has no key light)
    colour_cast: bool = True  # light colours and camera white balance
    tone_curve: bool = True  # exposure and gamma (non-linear in the shading)
    mouth_interior: bool = True  # dark inside of the mouth instead of a see-through hole
    # --- scene and camera degradations ------------------------------------------------------------
    background: str = "mixed"  # constant | plain | cluttered | mixed (plain or cluttered)
    background_value: float = 0.0  # grey level of the "constant" background
    hair_strand_probability: float = 0.35
    occluder_probability: float = 0.15
    blur: bool = True
    sensor_noise: bool = True
    jpeg: bool = True
    jpeg_quality: tuple[int, int] = (35, 95)

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"SyntheticConfig.background must be one of {BACKGROUNDS}, got {self.background!r}")
        if not 1 <= self.max_lights <= 8:
            raise ValueError(f"SyntheticConfig.max_lights must be in [1, 8], got {self.max_lights}")
        for f in fields(self):  # yaml gives lists; keep tuples
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        if self.shape_scale_range is not None and not 0 <= self.shape_scale_range[0] <= self.shape_scale_range[1]:
            raise ValueError(f"SyntheticConfig.shape_scale_range must be (lo, hi) with 0 <= lo <= hi, "
                             f"got {self.shape_scale_range}")

    # Every switch that adds something the albedo x SH model cannot explain.
    OUTSIDE_MODEL_SWITCHES = (
        "extra_geometry", "facial_features", "skin_detail", "multi_light", "specular", "ambient_occlusion",
        "shadows", "colour_cast", "tone_curve", "mouth_interior", "blur", "sensor_noise", "jpeg",
    )

    @classmethod
    def model_only(cls, **overrides: Any) -> "SyntheticConfig":
        """Images exactly explained by basis albedo x SH of ``params.light`` on a constant background.

        Used by fitting tests: the true parameters reproduce such an image up to rasterization.
        """
        off = {name: False for name in cls.OUTSIDE_MODEL_SWITCHES}
        off.update(background="constant", hair_strand_probability=0.0, occluder_probability=0.0)
        off.update(overrides)
        return cls(**off)

    @classmethod
    def preset(cls, name: str) -> "SyntheticConfig":
        """A named image distribution for benchmarks' ``--synthetic``: ``default``, ``default-<switch>[-<switch>...]``
        (some ``OUTSIDE_MODEL_SWITCHES`` off), ``model_only`` or ``model_only+<switch>[+<switch>...]`` (some on again).

        Why: switching effects on or off one at a time says which of them hides the shape from the image.
        """
        base, sign = ("default", "-") if name.startswith("default") else ("model_only", "+")
        first, *switches = name.split(sign)
        unknown = [s for s in switches if s not in cls.OUTSIDE_MODEL_SWITCHES]
        if first != base or unknown:
            raise ValueError(f"synthetic preset {name!r}: expected 'default[-<switch>...]' or 'model_only[+<switch>...]' "
                             f"with switches from {list(cls.OUTSIDE_MODEL_SWITCHES)}")
        if base == "default":
            return cls(**{s: False for s in switches})
        return cls.model_only(**{s: True for s in switches})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SyntheticConfig":
        """Build from a (yaml) dict; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"SyntheticConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
