"""``Registry``: names -> things users add (negative types, data sources), refusing duplicates.

The pattern of ``register_loss``: a decorator registers under a name, a second registration of the
name by another object is an error naming the first (timm silently overwrites; we do not), and an
unknown name is an error listing the registered ones. Registration order is kept (some registries
use the position as a stable index).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def _identity(obj: object) -> tuple[str, str]:
    return getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))


class Registry(Generic[T]):
    """Args: what: the kind of thing, for messages (``"negative type"``); hint: where new ones go."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what, self.hint = what, hint
        self._items: dict[str, T] = {}
        self._origins: dict[str, tuple[str, str]] = {}

    def register(self, name: str, origin: object = None) -> Callable[[T], T]:
        """Decorator: make ``obj`` available as ``name``; another object under the same name is refused.
        ``origin``: the function or class that defines ``obj`` (default: ``obj``), named in the error."""
        def decorator(obj: T) -> T:
            where = _identity(origin if origin is not None else obj)
            if name in self._items and self._origins[name] != where:  # a module reload is fine
                raise ValueError(f"{self.what} '{name}' is already registered ({'.'.join(self._origins[name])})")
            self._items[name], self._origins[name] = obj, where
            return obj
        return decorator

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            hint = f" ({self.hint})" if self.hint else ""
            raise KeyError(f"unknown {self.what} '{name}'; registered: {list(self._items)}{hint}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items
