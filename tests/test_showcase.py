"""docs/showcase/make_showcase.py (a documentation script outside the package) composes its sheet."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from regressor.data.landmarks_io import save_pts

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "showcase" / "make_showcase.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_showcase", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_showcase_composes_landmarks_fit_and_two_mesh_views(tmp_path):
    from regressor.face_model import build_face_model

    showcase = _script()
    (tmp_path / "landmarks" / "preview").mkdir(parents=True)
    (tmp_path / "fit").mkdir()
    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "landmarks" / "preview" / "face.png")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "fit" / "face_render.png")
    save_pts(tmp_path / "landmarks" / "face.pts", 60 + 80 * np.random.default_rng(0).random((68, 2)))
    zero = build_face_model().zero_params(1)
    np.savez(tmp_path / "fit" / "face.npz", **{k: v[0].numpy() for k, v in vars(zero).items()})

    sheet = showcase.compose(tmp_path, "face", {})
    assert sheet == tmp_path / "showcase.png"
    assert Image.open(sheet).size == (4 * showcase.PANEL, showcase.PANEL)
