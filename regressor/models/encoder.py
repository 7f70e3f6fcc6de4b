"""Image → ``FaceParams``: a timm backbone with one small head per parameter group.

The backbone comes from ``timm.create_model(name, pretrained=False, num_classes=0)``, so any
timm model name works and the pooled feature width is read from the model itself. Weights
are only ever read from a local file (``weights_path``); nothing is fetched from a hub.

The last layer of every head is zero-initialised and the outputs are mapped so that a zero
output *is* the mean face, frontal and centred, with the default camera and light of
``FaceParams.zeros``. Training therefore starts from a sensible render instead of a random
mesh thrown off-screen.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from regressor.models.precision import Bf16Setting, check_setting, use_bf16
from regressor.types import DEFAULT_CAMERA_SCALE, NUM_SH_COEFFS, FaceParams


class EncoderWeightsError(RuntimeError):
    """A ``weights_path`` that cannot be read or does not fit the backbone."""


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a local weights file (``.safetensors`` or a torch pickle, weights only)."""
    if not path.is_file():
        raise EncoderWeightsError(f"encoder weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise EncoderWeightsError(f"cannot read encoder weights {path}: {error}") from error
    # Common wrappers: {"state_dict": ...} (Lightning / timm train), {"model": ...}.
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise EncoderWeightsError(
            f"encoder weights {path} do not hold a state dict of tensors (found {type(state).__name__})"
        )
    return state


class FaceEncoder(nn.Module):
    """Regress ``FaceParams`` from an image.

    Args:
        backbone: any timm model name (e.g. ``mobilenetv3_small_100``, ``resnet50``).
        n_shape, n_expression, n_albedo: sizes of the coefficient vectors (match the FaceModel).
        weights_path: optional local backbone weights (a timm/torchvision-style state dict,
            ``.pth``/``.pt``/``.bin`` or ``.safetensors``); a classifier head in the file is ignored.
        hidden_dim: width of the hidden layer of each head.
        translation_scale: metres per unit of the camera-translation output (conditioning).
        normalize: apply the backbone's ImageNet mean/std to the [0, 1] input.
        neck: ``"pool"`` (global average pool of the last feature map) or ``"spatial"``: a 1x1
            conv to ``neck_channels`` on the last feature map, adaptively pooled to a
            ``neck_grid`` x ``neck_grid`` grid and flattened, so the heads see *where* things are.
            Why: at 64-128 px the last map is only 2x2-4x4 cells, and averaging it throws away
            the layout that pose, jaw opening and face proportions are read from.
        bf16: run the backbone and neck under bfloat16 autocast (channels-last) where the hardware
            does bf16 natively; the heads, the face model and the renderer stay fp32. ``True`` (or
            ``"auto"``): decided at run time for the input's device (``regressor.models.precision``:
            CPUs with AVX512-BF16/AMX, bf16-capable GPUs), fp32 elsewhere, the choice logged once;
            ``False``: always fp32; ``"always"``: bf16 even where emulated (for measurements only:
            on an AVX2-only CPU that is ~15x slower than fp32). Where supported this is what makes
            128 px training affordable on 2 cores.
    """

    def __init__(
        self,
        backbone: str = "mobilenetv3_small_100",
        n_shape: int = 100,
        n_expression: int = 50,
        n_albedo: int = 10,
        weights_path: str | None = None,
        hidden_dim: int = 256,
        translation_scale: float = 0.1,
        normalize: bool = True,
        neck: str = "pool",
        neck_channels: int = 64,
        neck_grid: int = 4,
        bf16: Bf16Setting = False,
    ) -> None:
        super().__init__()
        self.init_args = dict(backbone=backbone, n_shape=n_shape, n_expression=n_expression, n_albedo=n_albedo,
                              weights_path=weights_path, hidden_dim=hidden_dim, translation_scale=translation_scale,
                              normalize=normalize, neck=neck, neck_channels=neck_channels, neck_grid=neck_grid,
                              bf16=bf16)  # see regressor.components
        if neck not in ("pool", "spatial"):
            raise ValueError(f"FaceEncoder: neck must be 'pool' or 'spatial', got {neck!r}")
        self.backbone_name = backbone
        self.neck_kind = neck
        self.bf16 = check_setting(bf16)
        self.n_shape, self.n_expression, self.n_albedo = n_shape, n_expression, n_albedo
        if neck == "pool":
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        else:
            self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(-1,))
        if weights_path is not None:
            self.load_backbone_weights(weights_path)
        if neck == "pool":
            self.neck = nn.Identity()
            width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        else:
            channels = self.backbone.feature_info.channels()[-1]
            self.neck = nn.Sequential(
                nn.Conv2d(channels, neck_channels, 1), nn.BatchNorm2d(neck_channels), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(neck_grid), nn.Flatten(),
            )
            width = neck_channels * neck_grid * neck_grid
        self.translation_scale = translation_scale
        self.normalize = normalize
        #: heads whose outputs are held at zero (the mean face) while still in the graph; see ``mute_heads``
        self.muted_heads: frozenset[str] = frozenset()
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, 3, 1, 1), persistent=False)

        self.output_dims = OrderedDict(
            shape=n_shape, expression=n_expression, global_pose=3, neck_pose=3, jaw_pose=3,
            eye_pose=6, camera=3, albedo=n_albedo, light=NUM_SH_COEFFS * 3,
        )
        self.heads = nn.ModuleDict({
            name: self._make_head(width, hidden_dim, dim) for name, dim in self.output_dims.items()
        })

    @staticmethod
    def _make_head(width: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
        head = nn.Sequential(nn.Linear(width, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
        # Zero last layer: the first prediction is exactly the mean face (see module docstring).
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
        return head

    def load_backbone_weights(self, weights_path: str | Path) -> None:
        """Load a local state dict into the backbone (strict; classifier weights are dropped)."""
        path = Path(weights_path)
        state = _read_state_dict(path)
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        own = self.backbone.state_dict()
        classifier = (getattr(self.backbone, "pretrained_cfg", {}) or {}).get("classifier")
        classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier] if classifier else []
        state = {k: v for k, v in state.items()
                 if k in own or not any(k.startswith(f"{c}.") for c in classifiers)}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong_shape:
            def show(items: list[str]) -> str:
                return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

            problems = []
            if missing:
                problems.append(f"missing keys: {show(missing)}")
            if unexpected:
                problems.append(f"unexpected keys: {show(unexpected)}")
            if wrong_shape:
                problems.append(f"shape mismatch: {show(wrong_shape)}")
            raise EncoderWeightsError(
                f"encoder weights {path} do not fit backbone '{self.backbone_name}': " + "; ".join(problems)
            )
        self.backbone.load_state_dict(state, strict=True)

    def forward(self, image: Tensor) -> FaceParams:
        """image: (B, 3, H, W) in [0, 1] → FaceParams with batch size B."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"FaceEncoder expects images (B, 3, H, W), got {tuple(image.shape)}")
        if self.normalize:
            image = (image - self.pixel_mean.to(image.dtype)) / self.pixel_std.to(image.dtype)
        bf16 = use_bf16(self.bf16, image.device)
        if bf16:
            with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16):
                features = self.backbone(image.contiguous(memory_format=torch.channels_last))
        else:
            features = self.backbone(image)
        if isinstance(features, (list, tuple)):  # features_only backbones return one map per level
            features = features[-1]
        with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=bf16):
            features = self.neck(features)
        # Heads run in fp32 even under bf16 autocast: they are tiny, and the camera scale is exp() of one.
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.float()
            raw = {name: head(features) for name, head in self.heads.items()}
            for name in self.muted_heads:
                raw[name] = raw[name] * 0.0
        return self.to_params(raw)

    def mute_heads(self, names: frozenset[str] | set[str]) -> None:
        """Hold these heads' outputs at zero (``FaceParams.zeros``: the mean face, closed jaw).

        Why multiply by zero instead of detaching: the heads stay in the autograd graph, so DDP
        sees every parameter used and their gradients are exactly zero (no drift from noise).
        """
        unknown = set(names) - set(self.heads)
        if unknown:
            raise ValueError(f"mute_heads: unknown heads {sorted(unknown)}; known: {list(self.heads)}")
        self.muted_heads = frozenset(names)

    def to_params(self, raw: dict[str, Tensor]) -> FaceParams:
        """Map raw head outputs to FaceParams; all-zero outputs give ``FaceParams.zeros``."""
        camera_raw = raw["camera"]
        scale = DEFAULT_CAMERA_SCALE * torch.exp(camera_raw[:, :1])
        translation = self.translation_scale * camera_raw[:, 1:]
        light = raw["light"].view(-1, NUM_SH_COEFFS, 3)
        ambient = torch.zeros_like(light)
        ambient[:, 0, :] = 1.0  # same default light as FaceParams.zeros
        return FaceParams(
            shape=raw["shape"], expression=raw["expression"], global_pose=raw["global_pose"],
            neck_pose=raw["neck_pose"], jaw_pose=raw["jaw_pose"], eye_pose=raw["eye_pose"],
            camera=torch.cat([scale, translation], dim=1), albedo=raw["albedo"], light=ambient + light,
        )
