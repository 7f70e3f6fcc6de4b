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


def build_pipeline(
    backbone: str = "mobilenetv3_small_100",
    n_shape: int = 100,
    n_expression: int = 50,
    n_albedo: int = 10,
    image_size: int = 64,
    encoder: Optional[dict[str, Any]] = None,
    face_model: Optional[dict[str, Any]] = None,
    renderer: Optional[dict[str, Any]] = None,
) -> ReconstructionPipeline:
    """Build the pipeline from the (yaml-friendly) hyper-parameters of ``RegressorModule``."""
    from regressor.face_model import FaceModel
    from regressor.models.encoder import FaceEncoder
    from regressor.render import Renderer

    sizes = dict(n_shape=n_shape, n_expression=n_expression, n_albedo=n_albedo)
    return ReconstructionPipeline(
        encoder=FaceEncoder(backbone=backbone, **sizes, **(encoder or {})),
        face_model=FaceModel(**sizes, **(face_model or {})),
        renderer=Renderer(image_size=image_size, **(renderer or {})),
        image_size=image_size,
    )
