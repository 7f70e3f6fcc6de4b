"""ShapeCritic: scores how well a grey shaded render of a geometry explains a face image.

The critic sees the RGB image and the albedo-free, light-fixed grey render of a candidate
geometry (``Renders.shaded``), concatenated as 4 channels, and returns one scalar per sample:
HIGHER = the geometry explains the image's shading better. It is trained (see
``regressor.training.critic``) so that its score approximates ``-log(1 + err / 1 mm)`` of the
mean vertex error ``err``: the score is monotone in the error and does not saturate, which is what
a loss needs (a saturated real/fake discriminator gives the regressor no gradient).

Checkpoints are a plain dict of tensors and primitive types (``torch.save``), loaded with
``torch.load(weights_only=True)`` so that a malicious pickle cannot run code, and carry the
constructor config so that ``ShapeCritic.from_checkpoint`` rebuilds the network without the
training code.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regressor.render.renderer import DEFAULT_LIGHT_DIRECTION

#: the errors a critic's score may be calibrated to (stored in its checkpoint as ``error_target``;
#: ``regressor.critic.target`` computes them): the whole-head vertex error in the true camera, or the
#: Procrustes-aligned face-region error that NoW measures
CAMERA_WHOLE_HEAD = "camera_whole_head"
ALIGNED_FACE_REGION = "aligned_face_region"
TARGETS = (CAMERA_WHOLE_HEAD, ALIGNED_FACE_REGION)

CHECKPOINT_FORMAT = "face-psl/shape-critic"
CHECKPOINT_VERSION = 1
# Config keys of files written before the architecture step (2026-11-30): old -> new.
LEGACY_CONFIG_KEYS = {"error_scale_mm": "error_unit_mm"}


class CriticCheckpointError(ValueError):
    """A file that is not a loadable ShapeCritic checkpoint; the message says why."""


class CriticRenderMismatchError(ValueError):
    """A renderer whose grey ``shaded`` render differs from the one the critic was trained to score."""


@dataclass(frozen=True)
class CriticRenderSettings:
    """How the grey ``shaded`` renders the critic scores are drawn (stored in its checkpoint).

    Files without these fields (written before the architecture step) get these defaults, which are the
    settings every shipped critic was trained and measured with.

    Attributes:
        light_direction: the loss-time light (``Renderer.light_direction``).
        image_size: the render size used in training; renders of another size are resized to the
            critic's input size (``ShapeCritic.prepare``), so a mismatch is applied, not refused.
        background / background_value: the ``Renderer`` background of the grey render at loss time.
        extra_light_directions: fixed lights whose grey renders join the main one as more input
            channels (``Renderer(extra_light_directions=...)``; () = one channel, every critic before
            2026-11-30, 3030234). The set must be closed under mirroring x (a flipped training pair permutes
            the channels, ``mirror_order``). At loss time a one-channel render is completed from its
            normals (``complete``), so a fitting or training renderer needs no change.
    """

    light_direction: tuple[float, float, float] = DEFAULT_LIGHT_DIRECTION
    image_size: int = 64
    background: str = "constant"
    background_value: float = 0.0
    extra_light_directions: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "light_direction", tuple(float(v) for v in self.light_direction))
        extra = tuple(tuple(float(v) for v in light) for light in self.extra_light_directions)
        object.__setattr__(self, "extra_light_directions", extra)
        self.mirror_order()  # refuses a set that is not closed under mirroring
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "background_value", float(self.background_value))

    def renderer(self, **overrides: Any):
        """A ``Renderer`` that draws the grey render these settings describe (``overrides``: e.g. backend)."""
        from regressor.render import Renderer

        return Renderer(**{**self.renderer_kwargs(), **overrides})

    def renderer_kwargs(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "light_direction": self.light_direction,
                "background": self.background, "background_value": self.background_value,
                "extra_light_directions": self.extra_light_directions}

    @property
    def shaded_channels(self) -> int:
        return 1 + len(self.extra_light_directions)

    def mirror_order(self) -> list[int]:
        """Channel order of a horizontally mirrored render: extra light k becomes the one with x negated."""
        extra = self.extra_light_directions
        order = [0]
        for x, y, z in extra:
            mirrored = (-x, y, z)
            if mirrored not in extra:
                raise ValueError(f"CriticRenderSettings: extra lights {extra} are not closed under mirroring x "
                                 f"({(x, y, z)} has no partner {mirrored})")
            order.append(1 + extra.index(mirrored))
        return order

    def complete(self, shaded: Tensor, normals: Tensor, mask: Tensor) -> Tensor:
        """A one-channel render (B,1,H,W) with the extra lights' channels added from its normals and mask
        (its own background behind them); renders that already have them are returned as they are."""
        if shaded.shape[1] == self.shaded_channels:
            return shaded
        if shaded.shape[1] != 1:
            raise ValueError(f"shaded render has {shaded.shape[1]} channels; "
                             f"the critic takes 1 or {self.shaded_channels}")
        from regressor.render.shading import lambert_channels

        extra = lambert_channels(normals, self.extra_light_directions) * mask + shaded * (1 - mask)
        return torch.cat([shaded, extra], dim=1)

    def check(self, renderer: Any) -> None:
        """Raise ``CriticRenderMismatchError`` when ``renderer`` shades differently from these settings."""
        wanted = {"light_direction": self.light_direction, "background": self.background,
                  "background_value": self.background_value}
        found = {name: getattr(renderer, name) for name in wanted}
        found["light_direction"] = tuple(float(v) for v in found["light_direction"])
        wrong = {name: (found[name], wanted[name]) for name in wanted if found[name] != wanted[name]}
        if wrong:
            details = ", ".join(f"{name} {got!r} (critic: {want!r})" for name, (got, want) in wrong.items())
            raise CriticRenderMismatchError(
                f"the renderer's grey shaded render differs from the one the critic was trained on: {details}; "
                "set the renderer's settings to the critic's (ShapeCritic.render_settings) or use another critic")


class ShapeCritic(nn.Module):
    """Image + grey shaded render -> scalar score (higher = better geometry).

    Args:
        backbone: any timm model name, built with ``pretrained=False`` and ``in_chans`` = 3 image channels
            + the render's (1, plus one per extra light of ``render``).
        image_size: working resolution; inputs of other sizes are resized (bilinear, antialiased).
        backbone_kwargs: extra ``timm.create_model`` kwargs, e.g. ``{"channels": [24, 48, 96, 192]}``
            for a narrow ResNet.
        error_unit_mm: the error unit of the score's calibration, ``score ~ -log(1 + err/unit)``;
            the critic's objective is built with it (``CriticModule``), and it is stored in the
            checkpoint (older files call it ``error_scale_mm``).
        render: ``CriticRenderSettings`` (or its fields as a dict) of the grey renders it scores.
        error_target: which error the score is calibrated to (``TARGETS``; computed by ``regressor.critic.target``):
            ``camera_whole_head`` (the shipped critic, and files without the key) or
            ``aligned_face_region`` (NoW-like: Procrustes-aligned face-region vertex error).
        activation: the backbone's activation (``relu``, ``silu``, ``gelu``: any timm ``get_act_layer``
            name; files without the key are ``relu``). A critic whose *input gradient* is trained
            (``regressor.critic.gradient``) needs a smooth one: through ReLU the first layer's weights
            reach that gradient only via on/off masks, so their second-order gradient is exactly zero.
            It has no weights, so a ReLU critic's file can start a SiLU one.
    """

    def __init__(
        self,
        backbone: str = "resnet10t",
        image_size: int = 64,
        backbone_kwargs: dict[str, Any] | None = None,
        error_unit_mm: float = 1.0,
        render: CriticRenderSettings | dict[str, Any] | None = None,
        error_target: str = CAMERA_WHOLE_HEAD,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if error_target not in TARGETS:
            raise ValueError(f"ShapeCritic: error_target must be one of {TARGETS}, got {error_target!r}")
        self.error_target = error_target
        self.activation = str(activation)
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.backbone_kwargs = _to_plain(dict(backbone_kwargs or {}))
        self.error_unit_mm = float(error_unit_mm)
        self.render_settings = render if isinstance(render, CriticRenderSettings) else CriticRenderSettings(**(render or {}))
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.backbone_kwargs.items()}
        in_chans = 3 + self.render_settings.shaded_channels
        if self.activation != "relu":
            kwargs["act_layer"] = self.activation
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
        self.head = nn.Linear(self.backbone.num_features, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1e-3)

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments that shape the weights (what fine-tuning must keep)."""
        return {"backbone": self.backbone_name, "image_size": self.image_size, "backbone_kwargs": self.backbone_kwargs}

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain types): what a checkpoint needs to rebuild the network."""
        return {
            **self.architecture,
            "error_unit_mm": self.error_unit_mm,
            "error_target": self.error_target,
            "activation": self.activation,
            "render": _to_plain(asdict(self.render_settings)),
        }

    def prepare(self, image: Tensor, shaded: Tensor) -> Tensor:
        """(B,3,H,W) image + (B,C,H',W') render in [0,1] -> (B,3+C,S,S) centred network input."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"ShapeCritic: image must be (B,3,H,W), got {tuple(image.shape)}")
        channels = self.render_settings.shaded_channels
        if shaded.ndim != 4 or shaded.shape[1] != channels:
            raise ValueError(f"ShapeCritic: shaded must be (B,{channels},H,W) (1 + its extra lights), "
                             f"got {tuple(shaded.shape)}")
        if image.shape[0] != shaded.shape[0]:
            raise ValueError(f"ShapeCritic: batch sizes differ: image {image.shape[0]}, shaded {shaded.shape[0]}")
        x = torch.cat([self._resize(image), self._resize(shaded)], dim=1)
        return x - 0.5

    def forward(self, image: Tensor, shaded: Tensor) -> Tensor:
        """Score each (image, shaded) pair: (B,) higher = the geometry explains the image better."""
        return self.head(self.backbone(self.prepare(image, shaded))).squeeze(-1)

    def _resize(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (self.image_size, self.image_size):
            return x
        return F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=True)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write ``{format, version, config, state_dict, metadata}`` atomically (tmp file + os.replace).

        ``metadata`` must hold plain types only (str/int/float/bool/None/list/dict) so that the file
        loads with ``weights_only=True``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            "metadata": _to_plain(dict(metadata or {})),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "ShapeCritic":
        """Rebuild a critic from ``save_checkpoint``'s file (or a CriticModule training checkpoint).

        Returns the critic in eval mode. Raises ``FileNotFoundError`` for a missing file and
        ``CriticCheckpointError`` for anything else that is not a ShapeCritic checkpoint.
        """
        payload = load_critic_payload(path, map_location)
        config = {LEGACY_CONFIG_KEYS.get(key, key): value for key, value in payload["config"].items()}
        head = config.pop("head", "score")  # files of 2026-12-07 name their head; only the score head remains
        if head != "score":
            raise CriticCheckpointError(f"{path}: a {head!r}-head critic; that experimental head was removed (its "
                                        "record: docs/results/HISTORY.md, commit a6c5885), only score critics load")
        try:
            critic = cls(**config)
        except TypeError as error:
            raise CriticCheckpointError(f"{path}: its config {payload['config']} does not fit ShapeCritic: {error}") from None
        try:
            critic.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as error:
            raise CriticCheckpointError(
                f"{path}: weights do not match the architecture in its config {payload['config']}: {error}"
            ) from None
        critic.checkpoint_metadata = payload.get("metadata", {})
        return critic.eval()


def load_critic_payload(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a critic checkpoint -> ``{config, state_dict, metadata}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"critic checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        text = str(error)
        if "weights_only" in text or "Unsupported global" in text:
            reason = ("it contains Python objects other than tensors and plain types, and is refused "
                      "because unpickling it could execute code")
        else:
            reason = f"it is not a readable torch file ({type(error).__name__}: {text.splitlines()[0] if text else ''})"
        raise CriticCheckpointError(f"cannot load critic checkpoint {path}: {reason}") from None
    if not isinstance(payload, dict):
        raise CriticCheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    if payload.get("format") == CHECKPOINT_FORMAT:
        version = payload.get("version")
        if version != CHECKPOINT_VERSION:
            raise CriticCheckpointError(f"{path}: critic checkpoint version {version}, expected {CHECKPOINT_VERSION}")
        for key in ("config", "state_dict"):
            if not isinstance(payload.get(key), dict):
                raise CriticCheckpointError(f"{path}: critic checkpoint has no '{key}' dict")
        return payload
    if "state_dict" in payload:
        return _payload_from_trainer_checkpoint(path, payload)
    raise CriticCheckpointError(
        f"{path}: not a ShapeCritic checkpoint (no format '{CHECKPOINT_FORMAT}'; keys: {sorted(payload)[:8]})"
    )


def _payload_from_trainer_checkpoint(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Accept a CriticModule training checkpoint (``.ckpt``): weights under ``critic.``, config in hparams."""
    state = payload.get("state_dict") or {}
    prefix = "critic."
    critic_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    hparams = payload.get("hyper_parameters") or {}
    config = hparams.get("critic_config") if isinstance(hparams, dict) else None
    if not critic_state or not isinstance(config, dict):
        raise CriticCheckpointError(
            f"{path}: a training checkpoint of another module, not a CriticModule "
            f"(no 'critic.*' weights with a 'critic_config' hyper-parameter)"
        )
    return {"config": config, "state_dict": critic_state, "metadata": {"source": "training checkpoint", "path": str(path)}}


def _to_plain(value: Any) -> Any:
    """Recursively convert tuples/OmegaConf-ish containers to lists/dicts of plain types."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"critic checkpoint metadata must hold plain types, found {type(value).__name__}")
