"""Typed pipeline components (encoder, face model, renderer) as ``class_path``/``init_args`` specs.

In yaml a component is a jsonargparse object::

    encoder:
      class_path: regressor.models.encoder.FaceEncoder
      init_args: {backbone: resnet18, neck: spatial}

Every component records its constructor keyword arguments in ``init_args`` (a plain dict), so a
checkpoint stores the same ``{"class_path", "init_args"}`` spec and ``build_component`` rebuilds the
object from it without the training config. Plain PyTorch, no Lightning.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

from torch import nn


class ComponentSpecError(ValueError):
    """A component spec that cannot be built (unknown class, missing ``init_args``, ...)."""


def component_spec(component: nn.Module) -> dict[str, Any]:
    """``{"class_path": "pkg.module.Class", "init_args": {...}}`` of a built component."""
    init_args = getattr(component, "init_args", None)
    if not isinstance(init_args, dict):
        raise ComponentSpecError(f"{type(component).__qualname__} does not record its constructor arguments: set "
                                 "self.init_args = {...} in __init__ (see regressor.components)")
    cls = type(component)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}


def is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def build_component(spec: dict[str, Any], **overrides: Any) -> nn.Module:
    """Instantiate ``spec`` (``init_args`` updated with ``overrides``)."""
    if not is_spec(spec):
        raise ComponentSpecError(f"expected a {{class_path, init_args}} component spec, got {spec!r}")
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ComponentSpecError(f"component class_path {spec['class_path']!r} cannot be imported: {error}") from None
    init_args = dict(spec.get("init_args") or {})
    init_args.update(overrides)
    return cls(**init_args)


def with_init_args(component: nn.Module, **changes: Any) -> nn.Module:
    """``component`` itself when its ``init_args`` already hold ``changes``, else a rebuilt copy with them."""
    spec = component_spec(component)
    if all(spec["init_args"].get(key) == value for key, value in changes.items()):
        return component
    return build_component(spec, **changes)


def as_component(value: Any, where: str) -> Optional[nn.Module]:
    """A built component, or None: builds a ``{class_path, init_args}`` spec (what a checkpoint's
    hyper-parameters hold); a plain kwargs dict, the form before typed components, is refused."""
    if value is None or isinstance(value, nn.Module):
        return value
    if is_spec(value):
        return build_component(value)
    raise ComponentSpecError(f"{where} must be a component ({{class_path: ..., init_args: {{...}}}}), got {value!r}; "
                             "plain kwargs dicts are the form before the typed components (see docs/configs.md)")
