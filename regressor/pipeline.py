"""params -> mesh -> renders, once: the pipeline shared by training, inference, fitting, critic and benchmarks.

``ReconstructionPipeline``: image -> encoder -> ``FaceParams`` -> face model -> ``FaceMesh`` ->
renderer -> ``Renders``. Plain PyTorch, no Lightning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor, nn

from regressor.types import FaceMesh, FaceParams, Renders


@dataclass
class Reconstruction:
    """What the regressor makes of a batch of B images.

    Attributes:
        params: predicted ``FaceParams`` (B, ...).
        mesh: the face model's ``FaceMesh`` for them (vertices in metres, model space).
        renders: ``Renders`` at the pipeline's image size.
        images: (B, 3, H, W) the network input in [0, 1] (after resizing), for overlays.
        names: optional per-image names (file stems) for writing outputs.
    """

    params: FaceParams
    mesh: FaceMesh
    renders: Renders
    images: Optional[Tensor] = None
    names: Optional[list[str]] = None

    def to(self, device) -> "Reconstruction":
        images = None if self.images is None else self.images.to(device)
        return Reconstruction(self.params.to(device), self.mesh.to(device), self.renders.to(device), images, self.names)


def render_params(face_model: nn.Module, renderer: nn.Module, params: FaceParams) -> tuple[FaceMesh, Renders]:
    """``FaceParams`` -> (``FaceMesh``, ``Renders``): the face model, then the renderer with the
    params' camera, albedo and SH light. The one params -> renders step: training, inference,
    fitting and the benchmarks all call it (or ``ReconstructionPipeline.render_params``).
    """
    mesh = face_model(params)
    renders = renderer(mesh, params.camera, albedo=face_model.albedo(params.albedo), light=params.light)
    return mesh, renders


def project_params(face_model: nn.Module, renderer: nn.Module, params: FaceParams) -> tuple[FaceMesh, Renders]:
    """Like ``render_params`` but without rasterising: only ``landmarks2d``/``now_landmarks2d`` are
    filled, the image fields are empty (B, C, 0, 0). Why: a training step whose loss terms read
    no pixels (supervised and landmark terms) would otherwise spend half its time rendering.
    """
    from regressor.render import project_weak_perspective

    mesh = face_model(params)
    size = renderer.image_size
    landmarks2d = project_weak_perspective(mesh.landmarks3d, params.camera, size)[..., :2]
    now_landmarks2d = project_weak_perspective(mesh.now_landmarks3d, params.camera, size)[..., :2]
    batch = landmarks2d.shape[0]

    def empty(channels: int) -> Tensor:
        return landmarks2d.new_zeros(batch, channels, 0, 0)

    return mesh, Renders(shaded=empty(1), albedo_shaded=empty(3), mask=empty(1), normals=empty(3), depth=empty(1),
                         landmarks2d=landmarks2d, now_landmarks2d=now_landmarks2d)


class ReconstructionPipeline(nn.Module):
    """image -> encoder -> ``FaceParams`` -> face model -> ``FaceMesh`` -> renderer -> ``Renders``.

    Plain PyTorch, shared by ``RegressorModule`` (training) and ``Reconstructor`` (inference).
    """

    def __init__(self, encoder: nn.Module, face_model: nn.Module, renderer: nn.Module, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.face_model = face_model
        self.renderer = renderer
        self.image_size = image_size

    def forward(self, images: Tensor, render_images: bool = True) -> Reconstruction:
        """images: (B, 3, image_size, image_size) float in [0, 1]. ``render_images=False`` projects
        the landmarks only (see ``project_params``)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images (the model's image_size), "
                f"got {images.shape[-2]}x{images.shape[-1]}"
            )
        params = self.encoder(images)
        if render_images:
            mesh, renders = self.render_params(params)
        else:
            mesh, renders = project_params(self.face_model, self.renderer, params)
        return Reconstruction(params=params, mesh=mesh, renders=renders, images=images)

    def render_params(self, params: FaceParams) -> tuple[FaceMesh, Renders]:
        """``FaceParams`` -> (``FaceMesh``, ``Renders``) with this pipeline's face model and renderer."""
        return render_params(self.face_model, self.renderer, params)


ENCODER_CLASS = "regressor.models.encoder.FaceEncoder"
FACE_MODEL_CLASS = "regressor.face_model.FaceModel"
RENDERER_CLASS = "regressor.render.Renderer"
LEGACY_SIZE_KEYS = ("backbone", "n_shape", "n_expression", "n_albedo")


def pipeline_specs(
    image_size: int = 64,
    encoder: Optional[dict[str, Any]] = None,
    face_model: Optional[dict[str, Any]] = None,
    renderer: Optional[dict[str, Any]] = None,
    **legacy: Any,
) -> dict[str, Any]:
    """The pipeline description as ``{image_size, encoder, face_model, renderer}`` component specs.

    Accepts both forms that checkpoints and exported regressor files hold:

    * typed (written since the architecture step): each component a ``{class_path, init_args}`` spec;
    * flat (before it): ``backbone``, ``n_shape``, ``n_expression``, ``n_albedo`` plus plain kwargs
      dicts for ``FaceEncoder``, ``FaceModel`` and ``Renderer``.
    """
    from regressor.components import is_spec

    unknown = sorted(set(legacy) - set(LEGACY_SIZE_KEYS))
    if unknown:
        raise TypeError(f"pipeline description: unknown keys {unknown}")
    sizes = {key: legacy[key] for key in ("n_shape", "n_expression", "n_albedo") if legacy.get(key) is not None}
    typed = [is_spec(value) for value in (encoder, face_model, renderer) if value is not None]
    if any(typed) and legacy:
        raise TypeError(f"pipeline description mixes typed components with the old flat keys {sorted(legacy)}; "
                        "the typed form takes them from the components' init_args")

    def spec(value: Optional[dict[str, Any]], class_path: str, defaults: dict[str, Any]) -> dict[str, Any]:
        if is_spec(value):
            return {"class_path": value["class_path"], "init_args": dict(value.get("init_args") or {})}
        return {"class_path": class_path, "init_args": {**defaults, **(value or {})}}

    backbone = legacy.get("backbone") or "mobilenetv3_small_100"
    return {
        "image_size": int(image_size),
        "encoder": spec(encoder, ENCODER_CLASS, {"backbone": backbone, **sizes}),
        "face_model": spec(face_model, FACE_MODEL_CLASS, dict(sizes)),
        "renderer": spec(renderer, RENDERER_CLASS, {}),
    }


def assemble_pipeline(encoder: Optional[nn.Module], face_model: Optional[nn.Module], renderer: Optional[nn.Module],
                      image_size: int) -> ReconstructionPipeline:
    """Built components -> pipeline. Missing ones get their defaults; the encoder's head sizes
    (``n_shape``, ``n_expression``, ``n_albedo``) are the face model's, and the renderer's size is
    ``image_size`` (a component configured otherwise is rebuilt with them: the face model and the
    data module's image size are each declared once)."""
    from regressor.components import with_init_args
    from regressor.face_model import build_face_model
    from regressor.models.encoder import FaceEncoder
    from regressor.render import Renderer

    face_model = face_model if face_model is not None else build_face_model()
    sizes = dict(n_shape=face_model.n_shape, n_expression=face_model.n_expression, n_albedo=face_model.n_albedo)
    encoder = with_init_args(encoder, **sizes) if encoder is not None else FaceEncoder(**sizes)
    renderer = with_init_args(renderer, image_size=image_size) if renderer is not None else Renderer(image_size=image_size)
    return ReconstructionPipeline(encoder, face_model, renderer, image_size)


def build_pipeline(image_size: int = 64, encoder: Optional[dict[str, Any]] = None,
                   face_model: Optional[dict[str, Any]] = None, renderer: Optional[dict[str, Any]] = None,
                   **legacy: Any) -> ReconstructionPipeline:
    """Build the pipeline from a stored description (checkpoint hyper-parameters or an exported
    regressor file's ``pipeline``), typed or flat (see ``pipeline_specs``)."""
    from regressor.components import build_component
    from regressor.face_model import build_face_model

    specs = pipeline_specs(image_size, encoder, face_model, renderer, **legacy)
    return assemble_pipeline(build_component(specs["encoder"]), build_face_model(specs["face_model"]),
                             build_component(specs["renderer"]), specs["image_size"])


def pipeline_description(pipeline: ReconstructionPipeline) -> dict[str, Any]:
    """The typed description of a built pipeline (what checkpoints store; ``build_pipeline`` reads it)."""
    from regressor.components import component_spec

    return {"image_size": pipeline.image_size, "encoder": component_spec(pipeline.encoder),
            "face_model": component_spec(pipeline.face_model), "renderer": component_spec(pipeline.renderer)}
