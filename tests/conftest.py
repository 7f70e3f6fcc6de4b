"""Fixtures shared by several test files (helpers that are plain functions live in ``tests/regression_helpers.py``
and ``tests/face_folder_fixtures.py``).

* ``face_model``: the built-in face model (session-wide: treat it as read-only; a file that needs its own,
  or a seeded one, defines a ``face_model`` fixture of its own, which takes precedence);
* ``tiny_critic_file``: a random 32 px ``ShapeCritic`` checkpoint, small enough for any test;
* ``tiny_regressor``: a random 32 px regressor with non-zero heads (so not the mean face), exported as
  the shipped ``checkpoints/regressor.ckpt`` is: ``.path``, ``.pipeline`` (the original, float
  weights), ``.description`` (``build_pipeline`` arguments).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

TINY_CRITIC_ARCHITECTURE = dict(backbone="resnet10t", image_size=32,
                                backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8})
TINY_REGRESSOR = dict(backbone="resnet10t", n_shape=10, n_expression=5, n_albedo=3, image_size=32,
                      encoder={"neck": "spatial"})


class TinyRegressor(NamedTuple):
    path: Path
    pipeline: Any
    description: dict


@pytest.fixture(scope="session")
def face_model():
    from regressor.face_model import build_face_model

    return build_face_model()


@pytest.fixture(scope="session")
def tiny_critic_file(tmp_path_factory) -> Path:
    from regressor.models.critic import ShapeCritic

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_critic") / "critic.pt"
    ShapeCritic(**TINY_CRITIC_ARCHITECTURE).save_checkpoint(path, {"note": "random tiny critic for tests"})
    return path


@pytest.fixture(scope="session")
def tiny_regressor(tmp_path_factory) -> TinyRegressor:
    from regressor.io.regressor_file import export_regressor
    from regressor.pipeline import build_pipeline

    torch.manual_seed(0)
    pipeline = build_pipeline(**TINY_REGRESSOR)
    for parameter in pipeline.encoder.parameters():  # non-zero heads, so a wrong load would show
        parameter.data.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("tiny_regressor") / "regressor.ckpt"
    export_regressor(pipeline.state_dict(), TINY_REGRESSOR, path, {"note": "test"})
    return TinyRegressor(path, pipeline, dict(TINY_REGRESSOR))
