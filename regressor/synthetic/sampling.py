"""Random face parameters, crop cameras and lights for synthetic samples.

Every function draws from per-sample generators (``procedural.stage_generator``) and stacks
the results, so a sample depends on its seed only, never on its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pytorch3d.transforms import euler_angles_to_matrix, matrix_to_axis_angle
from torch import Tensor

from regressor.synthetic.procedural import stage_generator, uniform
from regressor.synthetic.config import SyntheticConfig
from regressor.render.shading import sh_basis
from regressor.types import TensorDataclass, FaceParams

JAW_OPEN_SIGN = 1.0  # positive x-rotation of the jaw opens the mouth (types.FaceParams)


def _rotations(euler_deg: Tensor) -> Tensor:
    """(N, 3) ``(pitch, yaw, roll)`` degrees -> (N, 3) axis-angle of R = Rz(roll) Ry(yaw) Rx(pitch)."""
    zyx = euler_deg.flip(-1) * (math.pi / 180.0)
    return matrix_to_axis_angle(euler_angles_to_matrix(zyx, "ZYX"))


def sample_face_params(seeds: list[int], config: SyntheticConfig, n_shape: int, n_expression: int,
                       n_albedo: int) -> FaceParams:
    """Identity, expression, pose and albedo for each seed; camera and light are placeholders
    (the generator sets the crop camera from the posed mesh and the SH fit of the lights)."""
    rows = []
    for seed in seeds:
        g = stage_generator(seed, "params")
        c = config
        shape = torch.randn(n_shape, generator=g) * c.shape_std
        expression = torch.randn(n_expression, generator=g) * c.expression_std * uniform(g, 0.2, 1.2)
        yaw = uniform(g, -c.yaw_max_deg, c.yaw_max_deg)
        pitch = uniform(g, -c.pitch_max_deg, c.pitch_max_deg)
        roll = uniform(g, -c.roll_max_deg, c.roll_max_deg)
        neck = torch.randn(3, generator=g) * c.neck_std_deg
        open_mouth = uniform(g, 0.0, 1.0) < c.jaw_open_probability
        jaw_open = uniform(g, *c.jaw_open_range_deg) if open_mouth else uniform(g, 0.0, c.jaw_small_max_deg)
        jaw_side = torch.randn(2, generator=g) * c.jaw_side_std_deg
        gaze = (torch.rand(2, generator=g) * 2 - 1) * c.gaze_max_deg  # pitch, yaw shared by both eyes
        albedo = torch.randn(n_albedo, generator=g) * c.albedo_std
        if c.shape_scale_range is not None:  # drawn last: every other parameter stays as without it
            shape = shape * uniform(g, *c.shape_scale_range)
        rows.append(dict(
            shape=shape, expression=expression,
            global_pose=torch.tensor([pitch, yaw, roll]), neck_pose=neck,
            eye_pose=torch.cat([gaze, torch.zeros(1)]),
            jaw_pose=torch.tensor([JAW_OPEN_SIGN * jaw_open, float(jaw_side[0]), float(jaw_side[1])]) * (math.pi / 180),
            albedo=albedo,
        ))
    stacked = {k: torch.stack([r[k] for r in rows]).float() for k in rows[0]}
    for name in ("global_pose", "neck_pose", "eye_pose"):  # Euler degrees -> axis-angle
        stacked[name] = _rotations(stacked[name])
    stacked["eye_pose"] = stacked["eye_pose"].repeat(1, 2)  # both eyes look the same way
    batch = len(seeds)
    camera = torch.zeros(batch, 3)
    light = torch.zeros(batch, 9, 3)
    light[:, 0] = 1.0
    return FaceParams(camera=camera, light=light, **stacked)


def crop_camera(seeds: list[int], landmarks3d: Tensor, config: SyntheticConfig) -> Tensor:
    """(B, 3) weak-perspective cameras that frame the posed face like a face-detector crop.

    The 68-landmark box (model XY, metres) gets side ``face_fraction`` of the image and a
    centre jittered by ``crop_jitter`` of the image; the crop centre sits a little above the
    landmark centre so that the forehead is in the picture, as detector boxes do.
    """
    cams = []
    for b, seed in enumerate(seeds):
        g = stage_generator(seed, "camera")
        fraction = uniform(g, *config.face_fraction)
        jitter = (torch.rand(2, generator=g) * 2 - 1) * config.crop_jitter
        xy = landmarks3d[b, :, :2].detach().cpu().double()
        low, high = xy.min(0).values, xy.max(0).values
        side = float((high - low).max())
        centre = (low + high) / 2
        scale = 2.0 * fraction / side  # NDC spans 2 units across the image
        target = jitter * 2.0 + torch.tensor([0.0, -0.12 * fraction], dtype=torch.float64)  # NDC, y up
        translation = target / scale - centre
        cams.append(torch.tensor([scale, float(translation[0]), float(translation[1])]))
    return torch.stack(cams).float().to(landmarks3d.device)


@dataclass
class Lighting(TensorDataclass):
    """Directional lights plus ambient, per sample; L = config.max_lights (unused lights have 0 intensity).

    Attributes:
        directions: (B, L, 3) unit vectors towards the lights (model axes, +Z to the camera).
        colours: (B, L, 3) light RGB (intensity included).
        ambient: (B, 3) ambient RGB.
        white_balance: (B, 3) per-channel camera gains (colour cast).
        specular_strength: (B,), shininess: (B,) Blinn-Phong parameters.
        exposure: (B,), gamma: (B,) tone curve ``(exposure * x) ** (1 / gamma)``.
    """

    directions: Tensor
    colours: Tensor
    ambient: Tensor
    white_balance: Tensor
    specular_strength: Tensor
    shininess: Tensor
    exposure: Tensor
    gamma: Tensor


def _direction(azimuth_deg: float, elevation_deg: float) -> Tensor:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def _tint(g: torch.Generator, strength: float) -> Tensor:
    """An RGB multiplier along the warm-cool (colour temperature) axis plus a little green-magenta."""
    t, m = uniform(g, -1.0, 1.0), uniform(g, -1.0, 1.0)
    return torch.tensor([1 + 0.18 * t, 1 + 0.05 * m, 1 - 0.22 * t]) ** strength


def sample_lighting(seeds: list[int], config: SyntheticConfig) -> Lighting:
    """Key light in front of the face, up to ``max_lights - 1`` fill/rim lights, ambient, camera."""
    rows = []
    n_max = config.max_lights
    for seed in seeds:
        g = stage_generator(seed, "lighting")
        count = int(torch.randint(1, n_max + 1, (1,), generator=g)) if config.multi_light else 1
        directions, colours = torch.zeros(n_max, 3), torch.zeros(n_max, 3)
        cast = 1.0 if config.colour_cast else 0.0
        for k in range(n_max):
            if k == 0:
                direction = _direction(uniform(g, -70, 70), uniform(g, -15, 60))
                intensity = uniform(g, *config.key_intensity_range)
            else:
                direction = _direction(uniform(g, -150, 150), uniform(g, -30, 70))
                intensity = uniform(g, 0.1, 0.5) * float(colours[0].mean())
            tint = _tint(g, cast)
            if k < count:
                directions[k], colours[k] = direction, intensity * tint
            else:
                directions[k] = direction
        ambient = uniform(g, *config.ambient_range) * _tint(g, cast)
        total = float(ambient.mean() + colours.mean(-1).sum())
        brightest = uniform(g, 0.95, 1.25)  # ambient + all lights head-on: avoid blown-out faces
        if total > brightest:
            colours, ambient = colours * (brightest / total), ambient * (brightest / total)
        white_balance = torch.exp(torch.randn(3, generator=g) * 0.07 * cast)
        rows.append(dict(
            directions=directions, colours=colours, ambient=ambient, white_balance=white_balance,
            specular_strength=torch.tensor(uniform(g, 0.05, 0.35)), shininess=torch.tensor(uniform(g, 8.0, 48.0)),
            exposure=torch.tensor(uniform(g, 0.85, 1.15)), gamma=torch.tensor(uniform(g, 1.0, 1.5)),
        ))
    return Lighting(**{k: torch.stack([r[k] for r in rows]).float() for k in rows[0]})


def _fibonacci_directions(count: int = 2000) -> Tensor:
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / count
    r = (1 - z**2).sqrt()
    phi = math.pi * (1 + 5**0.5) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def lambert_irradiance(normals: Tensor, lighting: Lighting) -> Tensor:
    """(B, N, 3) ``white_balance * (ambient + sum_k colour_k max(0, n . l_k))`` for normals (B, N, 3)."""
    cosines = torch.einsum("bnc,blc->bnl", normals, lighting.directions).clamp(min=0)
    diffuse = lighting.ambient[:, None] + torch.einsum("bnl,blc->bnc", cosines, lighting.colours)
    return diffuse * lighting.white_balance[:, None]


def fit_sh_light(lighting: Lighting) -> Tensor:
    """(B, 9, 3) the least-squares SH (``regressor.render.shading`` convention) of the diffuse lighting.

    Fitted over normals that can face the camera (n_z > -0.3); this is the ground-truth
    ``FaceParams.light``, the best the albedo x SH model can do with these lights.
    """
    normals = _fibonacci_directions()
    normals = normals[normals[:, 2] > -0.3]
    basis = sh_basis(normals.T[None, :, :, None])[0, :, :, 0].T  # (N, 9)
    target = lambert_irradiance(normals[None].float().expand(lighting.ambient.shape[0], -1, -1), lighting)
    pinv = torch.linalg.pinv(basis).float()  # (9, N)
    return torch.einsum("kn,bnc->bkc", pinv, target.cpu()).to(lighting.ambient.device)
