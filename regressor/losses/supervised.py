"""Supervised terms for data with ground-truth parameters (synthetic faces, fitted scans).

Why two terms instead of one parameter loss: shape and expression coefficients differ by two
orders of magnitude in how far they move the surface (the built-in model's leading shape
component moves a vertex 1.3 mm per unit, its 100th 0.01 mm), so an equal-weight coefficient
loss spends the encoder's capacity on components nobody can see. ``shape_vertices`` compares
the *surfaces* the coefficients make, pose-free and on the face region that NoW scores, so
each component is weighted by its geometric effect. Pose and camera have no such surface
in a pose-free frame; ``pose_params`` supervises them directly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from regressor.losses import LossTerm, register_loss
from regressor.types import FaceParams, LossInputs


def _require_params(inputs: LossInputs, term: str) -> FaceParams:
    if inputs.batch.params is None:
        raise ValueError(f"loss term '{term}' needs ground-truth parameters (batch.params), but this batch has "
                         "none; use synthetic data (data source 'synthetic' or 'pool') or remove the term")
    return inputs.batch.params


def face_region_mask(face_model: nn.Module) -> Tensor:
    """(V,) bool: vertices of the mean face inside NoW's face sphere (``evaluation.now.crop_scan``)."""
    from regressor.evaluation.now import crop_scan

    with torch.no_grad():
        neutral = face_model(face_model.zero_params(1))
    return crop_scan(neutral.vertices[0], neutral.now_landmarks3d[0])


@register_loss("shape_vertices")
class ShapeVertexLoss(LossTerm):
    """Mean distance (mm) between the predicted and true *unposed* face surfaces.

    Both meshes are rebuilt by the face model from shape, expression and jaw only (global,
    neck and eye pose zero), so pose errors, which the landmark and ``pose_params`` terms own,
    cannot leak into this one: the built-in ``vertices`` term compares posed meshes and sends
    99.6% of its gradient to the global pose.

    Args:
        region: ``"face"`` (the vertices NoW scores) or ``"all"``.
        include_jaw: rebuild with the jaw pose (mouth opening is shape as NoW sees it).
    """

    needs_images = False

    def __init__(self, region: str = "face", include_jaw: bool = True) -> None:
        super().__init__()
        if region not in ("face", "all"):
            raise ValueError(f"shape_vertices: region must be 'face' or 'all', got {region!r}")
        self.region = region
        self.include_jaw = include_jaw
        self.face_model: nn.Module | None = None
        self.register_buffer("vertex_mask", torch.zeros(0, dtype=torch.bool), persistent=False)

    def bind_face_model(self, face_model: nn.Module) -> None:
        # Held outside the module tree: the face model belongs to the pipeline.
        self.__dict__["face_model"] = face_model
        mask = face_region_mask(face_model) if self.region == "face" else torch.ones(face_model.num_vertices, dtype=torch.bool)
        self.vertex_mask = mask.to(face_model.v_template.device)

    def _unposed(self, params: FaceParams) -> Tensor:
        neutral = self.face_model.zero_params(params.batch_size, device=params.shape.device)
        neutral.shape, neutral.expression = params.shape, params.expression
        if self.include_jaw:
            neutral.jaw_pose = params.jaw_pose
        return self.face_model(neutral).vertices[:, self.vertex_mask]

    def forward(self, inputs: LossInputs) -> Tensor:
        if self.face_model is None:
            raise RuntimeError("shape_vertices: no face model bound (LossStack.bind_face_model was not called)")
        truth = _require_params(inputs, self.name)
        predicted = self._unposed(inputs.params)
        with torch.no_grad():
            target = self._unposed(truth.to(predicted.device))
        return (predicted.float() - target.float()).norm(dim=-1).mean() * 1000.0


@register_loss("pose_params")
class PoseParamLoss(LossTerm):
    """L1 on global pose and jaw (radians), log camera scale and camera translation (metres), and
    optionally albedo coefficients and SH light.

    Default scales make one unit of loss about 6 degrees of head rotation, a 10% scale error
    or 1 cm of translation; at these, pose and camera converge before the surface does.
    ``albedo`` and ``light`` (default 0) teach the appearance heads without rendering, so a
    supervised run can skip the photometric term and its rasterisation.
    """

    needs_images = False

    def __init__(self, rotation: float = 10.0, jaw: float = 10.0, scale: float = 10.0, translation: float = 100.0,
                 albedo: float = 0.0, light: float = 0.0) -> None:
        super().__init__()
        self.weights = {"rotation": rotation, "jaw": jaw, "scale": scale, "translation": translation,
                        "albedo": albedo, "light": light}

    def forward(self, inputs: LossInputs) -> Tensor:
        truth = _require_params(inputs, self.name).to(inputs.params.camera.device)
        predicted = inputs.params
        w = self.weights
        total = w["rotation"] * (predicted.global_pose - truth.global_pose).abs().mean()
        total = total + w["jaw"] * (predicted.jaw_pose - truth.jaw_pose).abs().mean()
        scale_ratio = predicted.camera[:, 0].clamp_min(1e-6) / truth.camera[:, 0].clamp_min(1e-6)
        total = total + w["scale"] * scale_ratio.log().abs().mean()
        total = total + w["translation"] * (predicted.camera[:, 1:] - truth.camera[:, 1:]).abs().mean()
        if w["albedo"]:
            total = total + w["albedo"] * (predicted.albedo - truth.albedo).abs().mean()
        if w["light"]:
            total = total + w["light"] * (predicted.light - truth.light).abs().mean()
        return total
