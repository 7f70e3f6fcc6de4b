"""The registry of the critic's negative types: what a type file imports to register itself.

A negative type is one function decorated with ``register_negative`` in a file of
``regressor/critic/negative_types/`` (found automatically; the nine built-ins first, so their indices
stay fixed). This module holds only the registry and what a type reads (``NegativeContext``); it
imports nothing of the critic, so the type files sit below ``regressor.critic.negatives``, which
imports them (and so fills the registry) before anyone draws a negative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import Tensor

from regressor.registry import Registry
from regressor.types import FaceParams


@dataclass
class NegativeType:
    """A registered negative type: ``fn`` and the space it works in (see module doc)."""

    name: str
    space: Literal["params", "geometry"]
    fn: Callable[..., Any]


_NEGATIVES: Registry[NegativeType] = Registry("negative type", "a new one is one file in regressor/critic/negative_types/")


@dataclass
class NegativeContext:
    """What a negative type may read.

    Attributes:
        config: the ``PerturbationConfig`` (magnitudes at severity 1; ``options[name]`` for new types).
        params: (B) the true ``FaceParams``; ``k`` negatives per face (rows are face-major, B*K).
        draw: ``draw(*shape)`` -> (B*K, *shape) normal draws, one per (face, type), shared by that
            face's negatives of that type (graded severities move along one direction). Params
            types must call it in registration order (the built-ins do), keeping the random stream.
        smoother: ``MeshSmoother`` of the face model's mesh.
    """

    config: Any  # a regressor.critic.negatives.PerturbationConfig
    params: FaceParams
    k: int
    draw: Callable[..., Tensor]
    smoother: Any  # a regressor.critic.negatives.MeshSmoother


def register_negative(name: str, space: Literal["params", "geometry"]):
    """Decorator: register ``fn`` as negative type ``name``.

    * ``space="params"``: ``fn(flat: FaceParams (B*K), severity: (B*K, 1) zero outside this type's rows,
      context)`` changes ``flat`` in place;
    * ``space="geometry"``: ``fn(truth: (R, V, 3), severity: (R,), context) -> (R, V, 3)`` for this type's R rows.
    """
    if space not in ("params", "geometry"):
        raise ValueError(f"register_negative('{name}'): space must be 'params' or 'geometry', got {space!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _NEGATIVES.register(name, origin=fn)(NegativeType(name, space, fn))
        return fn
    return decorator


def negative_types() -> tuple[str, ...]:
    """Registered negative type names; a name's position is its ``CandidateSet.type_index``."""
    return _NEGATIVES.names()


def negative_type(name: str) -> NegativeType:
    return _NEGATIVES.get(name)
