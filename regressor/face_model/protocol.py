"""``FaceModelProtocol``: what the rest of the project asks of a face model.

The pipeline, the synthetic generator, the losses and the critic use only these members, so a
BFM-style model (another topology, its own landmark embedding) plugs in by implementing them in
one new file and naming its class in yaml::

    face_model:
      class_path: my_package.bfm.BFMModel
      init_args: {model_path: /data/01_MorphableModel.mat, n_shape: 80, n_expression: 64, n_albedo: 80}

``regressor.face_model.FaceModel`` (FLAME layout) is the implementation that ships.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Union, runtime_checkable

import torch
from torch import Tensor

from regressor.types import FaceMesh, FaceParams


@runtime_checkable
class FaceModelProtocol(Protocol):
    """A parametric head: ``FaceParams`` -> ``FaceMesh`` (an ``nn.Module``; ``model(params)`` calls ``forward``).

    Attributes:
        n_shape, n_expression, n_albedo: coefficient counts of ``FaceParams.shape`` / ``expression`` /
            ``albedo`` (the encoder's heads are sized from them).
        faces: (F, 3) long triangle indices (a buffer, so it follows ``.to(device)``).
        v_template: (V, 3) float mean-face vertices in metres (a buffer; its device is the model's).
        init_args: the constructor's keyword arguments, so a checkpoint can rebuild the model
            (``regressor.components.component_spec``).
    """

    n_shape: int
    n_expression: int
    n_albedo: int
    faces: Tensor
    v_template: Tensor
    init_args: dict[str, Any]

    @property
    def num_vertices(self) -> int:
        """V, the number of vertices of every mesh the model makes."""

    def forward(self, params: FaceParams) -> FaceMesh:
        """Posed mesh: vertices (B, V, 3) m, landmarks3d (B, 68, 3) iBUG, now_landmarks3d (B, 7, 3)."""

    def zero_params(self, batch_size: int, device: Optional[Union[torch.device, str]] = None) -> FaceParams:
        """``FaceParams`` of the mean face (B = ``batch_size``) on ``device`` (default: the model's)."""

    def albedo(self, coeffs: Tensor) -> Tensor:
        """(B, n_albedo) coefficients -> (B, V, 3) per-vertex albedo in [0, 1]."""
