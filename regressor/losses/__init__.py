"""Pluggable loss terms chosen by name from yaml.

A term is one class in one file of this package, registered with ``@register_loss("name")``.
Every module of the package is imported here automatically, so adding a term needs no
other edit::

    @register_loss("my_term")
    class MyTerm(LossTerm):
        def forward(self, inputs: LossInputs) -> Tensor:  # scalar
            ...

``LossStack([{"name": "photometric", "weight": 1.0, "norm": "l1"}, ...])`` builds the terms
(extra keys are the term's constructor kwargs) and returns every weighted term plus ``total``.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from regressor.types import LossInputs

__all__ = ["LossTerm", "LossStack", "NonFiniteLossError", "register_loss", "registered_losses", "build_loss"]

_REGISTRY: dict[str, type["LossTerm"]] = {}


class NonFiniteLossError(FloatingPointError):
    """A loss term returned NaN or Inf; ``term`` and ``step`` say which and when."""

    def __init__(self, term: str, value: float, step: int) -> None:
        kind = "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
        super().__init__(f"loss term '{term}' is {kind} at step {step}")
        self.term = term
        self.value = value
        self.step = step


class LossTerm(nn.Module):
    """Base class: ``forward(inputs: LossInputs) -> Tensor`` (a scalar, unweighted)."""

    name: str = "unnamed"
    #: False for terms that read no rendered pixels (landmarks, priors, supervision): when no
    #: active term needs them, training skips rasterisation.
    needs_images: bool = True

    def forward(self, inputs: LossInputs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_active(self, step: int) -> bool:
        """Whether the term contributes at ``step`` (warm-up schedules override this)."""
        return True

    def check_renderer(self, renderer: nn.Module) -> None:
        """Raise if this term cannot score renders of ``renderer`` (the perceptual term checks its critic's)."""

    def bind_face_model(self, face_model: nn.Module) -> None:
        """Called once with the pipeline's face model, for terms that rebuild meshes (``shape_vertices``)."""


def _identity(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def register_loss(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    """Class decorator: make a ``LossTerm`` subclass available to yaml as ``name``."""

    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"@register_loss('{name}') expects a LossTerm subclass, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and _identity(existing) != _identity(cls):  # a module reload is fine
            raise ValueError(f"loss term name '{name}' is already registered by {'.'.join(_identity(existing))}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_losses() -> list[str]:
    """Sorted names of every registered term."""
    return sorted(_REGISTRY)


def build_loss(name: str, **kwargs: Any) -> LossTerm:
    """Instantiate the registered term ``name`` with its constructor kwargs."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown loss term '{name}'; known terms: {', '.join(registered_losses())}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as error:
        raise TypeError(f"loss term '{name}': bad arguments {sorted(kwargs)}: {error}") from error


class LossStack(nn.Module):
    """Weighted sum of registered terms, configured as a list of ``{name, weight, **kwargs}``.

    An optional ``label`` key names the output (and log) entry, so one term type can be used
    twice with different settings. Terms with weight 0, or inactive at this step (warm-up),
    are not evaluated and report 0.

    Returns (from ``forward``): ``{label: weight * term(inputs), ..., "total": sum}``.
    Raises ``NonFiniteLossError`` naming the first term whose value is NaN/Inf.
    """

    def __init__(self, terms: list[Mapping[str, Any]]) -> None:
        super().__init__()
        if not isinstance(terms, (list, tuple)) or not terms:
            raise ValueError(f"LossStack needs a non-empty list of {{name, weight, ...}} dicts, got {terms!r}")
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for index, spec in enumerate(terms):
            spec = dict(spec)
            if "name" not in spec:
                raise ValueError(f"loss term #{index} has no 'name' (got keys {sorted(spec)})")
            name = spec.pop("name")
            weight = float(spec.pop("weight", 1.0))
            label = str(spec.pop("label", name))
            if label in self.terms or label == "total":
                raise ValueError(f"loss term label '{label}' is used twice; give one a distinct 'label'")
            self.terms[label] = build_loss(name, **spec)
            self.weights[label] = weight

    def forward(self, inputs: LossInputs) -> dict[str, Tensor]:
        device = inputs.batch.image.device
        dtype = inputs.batch.image.dtype
        values: dict[str, Tensor] = {}
        total = torch.zeros((), device=device, dtype=dtype)
        for label, term in self.terms.items():
            weight = self.weights[label]
            if weight == 0.0 or not term.is_active(inputs.step):
                values[label] = torch.zeros((), device=device, dtype=dtype)
                continue
            value = term(inputs)
            if value.dim() != 0:
                raise ValueError(f"loss term '{label}' must return a scalar, got shape {tuple(value.shape)}")
            if not torch.isfinite(value):
                raise NonFiniteLossError(label, float(value.detach()), inputs.step)
            values[label] = weight * value
            total = total + values[label]
        values["total"] = total
        return values

    def check_renderer(self, renderer: nn.Module) -> None:
        """Let every term refuse a renderer whose output it cannot score (see ``LossTerm.check_renderer``)."""
        for term in self.terms.values():
            term.check_renderer(renderer)

    def needs_images(self, step: int) -> bool:
        """Whether any term active at ``step`` reads rendered pixels."""
        return any(term.needs_images for label, term in self.terms.items()
                   if self.weights[label] != 0.0 and term.is_active(step))

    def bind_face_model(self, face_model: nn.Module) -> None:
        """Hand the pipeline's face model to every term that needs one (see ``LossTerm.bind_face_model``)."""
        for term in self.terms.values():
            term.bind_face_model(face_model)

    def extra_repr(self) -> str:
        return ", ".join(f"{label}={weight:g}" for label, weight in self.weights.items())


def _import_term_modules() -> None:
    """Import every module of this package so their ``@register_loss`` decorators run."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_term_modules()
