"""``build_face_model``: the one way the project gets a face model.

Every entry point (CLIs, data, training, fitting, benchmarks, notebooks) asks this function,
whatever form its configuration takes:

==============================================  ===============================================
``spec``                                        face model
==============================================  ===============================================
``None``, ``{}`` or ``"builtin"``               the built-in stand-in (``FaceModel`` without a file)
a path to a FLAME ``generic_model.pkl``         that model; embeddings found next to it
a path to a ``.yaml`` / ``.yml`` file           the spec it holds (a config's top-level
                                                ``face_model``, or the spec itself)
``{class_path, init_args}``                     that class (any ``FaceModelProtocol``), as a
                                                LightningCLI config or a checkpoint names it
a dict of ``FaceModel`` arguments               ``FaceModel(**spec)`` (fitting configs'
                                                ``face_model: {model_path: ..., n_shape: ...}``)
an already built face model                     itself (no ``overrides`` allowed)
==============================================  ===============================================

``overrides`` are constructor arguments laid over the spec's (``n_shape=10`` for a small model).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from torch import nn

from regressor.components import build_component, is_spec
from regressor.face_model.flame import FaceModel
from regressor.face_model.protocol import FaceModelProtocol

BUILTIN = "builtin"
FaceModelSpec = Union[None, str, os.PathLike, dict, nn.Module]


def build_face_model(spec: FaceModelSpec = None, **overrides: Any) -> FaceModelProtocol:
    """The face model ``spec`` describes (see the module doc), with ``overrides`` applied."""
    if isinstance(spec, nn.Module):
        if overrides:
            raise TypeError(f"build_face_model: a built face model takes no overrides, got {sorted(overrides)}")
        return spec
    if spec is None or (isinstance(spec, str) and spec == BUILTIN):
        spec = {}
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if path.suffix.lower() in (".yaml", ".yml"):
            return build_face_model(_spec_from_yaml(path), **overrides)
        spec = {"model_path": str(path)}
    if not isinstance(spec, dict):
        raise TypeError(f"build_face_model: expected None, a path, a dict or a face model, got {type(spec).__name__}")
    if is_spec(spec):
        return build_component(spec, **overrides)
    arguments = {**spec, **overrides}
    if arguments.get("model_path") in (BUILTIN, ""):
        arguments["model_path"] = None
    return FaceModel(**arguments)


def _spec_from_yaml(path: Path) -> Any:
    import yaml

    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(content, dict) and "face_model" in content:
        return content["face_model"]
    return content
