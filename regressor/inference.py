"""Reconstruct faces from images with a trained regressor, without Lightning or the training config.

    from regressor.inference import Reconstructor
    reconstructor = Reconstructor.from_checkpoint("outputs/quickstart/checkpoints/last.ckpt")
    result = reconstructor.predict(["a.png", "b.jpg"])     # or a (B, 3, H, W) tensor in [0, 1]
    result.params, result.mesh, result.renders

The checkpoint is the Lightning ``.ckpt`` that ``regressor fit`` writes: its
``hyper_parameters`` (saved by ``RegressorModule.save_hyperparameters``) say how to rebuild
the encoder, face model and renderer, and its ``state_dict`` holds their weights. The loss
stack (and the critic inside it) is not needed and not built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from regressor.assets import resolve_shipped, shipped_checkpoint
from regressor.pipeline import Reconstruction, ReconstructionPipeline, build_pipeline
from regressor.types import FaceMesh, FaceParams, Renders

PIPELINE_PREFIX = "pipeline."
# The RegressorModule hyper-parameters that define the pipeline (everything else is training-only).
PIPELINE_HPARAMS = ("backbone", "n_shape", "n_expression", "n_albedo", "image_size", "encoder", "face_model", "renderer")


#: The pretrained regressor that ships with the project (an exported file, see regressor.io.regressor_file);
#: package data, found through ``importlib.resources`` (``regressor.assets``), so also in an installed wheel.
SHIPPED_REGRESSOR = shipped_checkpoint("regressor.ckpt")


class CheckpointKindError(ValueError):
    """A file that is not a regressor checkpoint (a critic checkpoint, a random file, ...)."""


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK":  # torch.save writes a zip archive since PyTorch 1.6
        raise CheckpointKindError(f"{path} is not a PyTorch checkpoint (not a torch.save zip archive; first bytes {magic!r})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointKindError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointKindError(f"{path} holds a {type(checkpoint).__name__}, expected a Lightning checkpoint dict")
    return checkpoint


def regressor_hparams(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The pipeline hyper-parameters of a ``RegressorModule`` checkpoint, or a ``CheckpointKindError``."""
    state = checkpoint.get("state_dict")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(state, dict) or not isinstance(hparams, dict):
        found = sorted(str(k) for k in checkpoint)[:12]
        hint = " (it looks like a ShapeCritic checkpoint; load it with ShapeCritic.from_checkpoint)" if "critic" in str(found).lower() or "architecture" in found or "metadata" in found else ""
        raise CheckpointKindError(
            f"{path} is not a RegressorModule Lightning checkpoint: expected keys 'state_dict' and "
            f"'hyper_parameters', found {found}{hint}"
        )
    if not any(key.startswith(PIPELINE_PREFIX + "encoder.") for key in state):
        some = sorted(state)[:5]
        raise CheckpointKindError(
            f"{path} is a Lightning checkpoint but not of a RegressorModule: no '{PIPELINE_PREFIX}encoder.*' "
            f"weights (first keys: {some}); was it written by another module, e.g. the critic's?"
        )
    return {key: hparams[key] for key in PIPELINE_HPARAMS if key in hparams}


def load_pipeline(path: str | Path) -> ReconstructionPipeline:
    """A ``ReconstructionPipeline`` with the weights of a Lightning ``.ckpt`` or an exported regressor file.

    ``path`` is read as given (relative to the working directory); ``checkpoints/regressor.ckpt`` that is
    not there (outside the repository) is the shipped file (``regressor.assets.resolve_shipped``)."""
    from regressor.io.regressor_file import is_regressor_file, read_regressor_file

    path = resolve_shipped(path)
    checkpoint = load_checkpoint_file(path)
    if is_regressor_file(checkpoint):
        hparams, state = read_regressor_file(checkpoint, path)
    else:
        hparams = regressor_hparams(checkpoint, path)
        state = {k[len(PIPELINE_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PIPELINE_PREFIX)}
    pipeline = build_pipeline(**hparams)
    missing, unexpected = pipeline.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointKindError(
            f"{path}: weights do not fit the pipeline described by its hyper-parameters "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return pipeline


def export_training_checkpoint(ckpt: str | Path, out: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the pipeline of a ``regressor fit`` checkpoint as an exported regressor file (int8 weights)."""
    from regressor.io.regressor_file import export_regressor

    checkpoint = load_checkpoint_file(ckpt)
    hparams = regressor_hparams(checkpoint, ckpt)
    state = {k[len(PIPELINE_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PIPELINE_PREFIX)}
    info = {"source": str(ckpt), "global_step": checkpoint.get("global_step")}
    info.update(metadata or {})
    return export_regressor(state, hparams, out, info)


def _square_resize(image: Tensor, size: int) -> Tensor:
    """(3, H, W) -> (3, size, size): centre square crop, then antialiased resize."""
    _, height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[:, top : top + side, left : left + side]
    if side != size:
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return image.clamp(0, 1)


def load_images(paths: Sequence[str | Path], size: int) -> Tensor:
    """Read image files (any format ``load_image`` handles) as a (B, 3, size, size) batch in [0, 1].

    Images are expected to be face crops; non-square ones are centre-cropped to a square.
    """
    from regressor.data.image_io import load_image

    batch = []
    for path in paths:
        pixels = torch.from_numpy(load_image(path)).permute(2, 0, 1).float() / 255.0
        batch.append(_square_resize(pixels, size))
    return torch.stack(batch)


class Reconstructor:
    """Inference wrapper: a ``ReconstructionPipeline`` in eval mode on one device."""

    def __init__(self, pipeline: ReconstructionPipeline, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.pipeline = pipeline.to(self.device).eval()
        self.image_size = pipeline.image_size

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "Reconstructor":
        """Rebuild the pipeline from a checkpoint alone (no yaml needed): a ``regressor fit`` Lightning
        ``.ckpt`` or an exported regressor file; ``None`` = the shipped ``checkpoints/regressor.ckpt``."""
        return cls(load_pipeline(SHIPPED_REGRESSOR if path is None else path), device)

    @torch.no_grad()
    def predict(self, images: Tensor | Sequence[str | Path], batch_size: int = 16) -> Reconstruction:
        """Reconstruct ``images``: a (B, 3, H, W) tensor (float in [0, 1] or uint8) or a list of file paths.

        Inputs of another size are centre-cropped to a square and resized to the model's size.
        """
        names: Optional[list[str]] = None
        if isinstance(images, Tensor):
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected an image tensor of shape (B, 3, H, W), got {tuple(images.shape)}")
            images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                images = torch.stack([_square_resize(image, self.image_size) for image in images])
        else:
            paths = [Path(p) for p in ([images] if isinstance(images, (str, Path)) else images)]
            if not paths:
                raise ValueError("predict() got an empty list of images")
            names = [p.stem for p in paths]
            images = load_images(paths, self.image_size)
        if not torch.isfinite(images).all():
            raise ValueError("input images contain NaN or infinite values")
        chunks = [self.pipeline(chunk.to(self.device)) for chunk in images.split(batch_size)]
        result = Reconstruction(
            params=FaceParams.cat([c.params for c in chunks]),
            mesh=FaceMesh.cat([c.mesh for c in chunks]),
            renders=Renders(**{name: torch.cat([getattr(c.renders, name) for c in chunks]) for name, _ in chunks[0].renders.items()}),
            images=torch.cat([c.images for c in chunks]),
            names=names,
        )
        return result
