"""Data sources of ``FaceDataModule``: a registry, one file per source.

A source turns the data module's settings into the ``Dataset`` of one stage (``train``, ``val``,
``test``). yaml names it (``train_source: folder``); a new dataset is one new file in this
package with one decorated class, found automatically::

    @register_data_source("celeba")
    class CelebASource(DataSource):
        stages = ("train", "val")
        def build(self, data, stage):          # data: SourceSettings (the FaceDataModule)
            return CelebA(data.hparams.source_args["celeba"]["root"], data.image_size, split=stage)

The sample dict every dataset yields is the project's (``regressor.types.FaceBatch.from_dict``).
A duplicate name is refused, as ``register_loss`` refuses one.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Optional, Protocol

from torch.utils.data import Dataset

from regressor.registry import Registry

_REGISTRY: Registry[type["DataSource"]] = Registry("data source")


class SourceSettings(Protocol):
    """What a source reads from the data module that asks it (``FaceDataModule`` is one); the sources sit
    below the data module and never import it."""

    hparams: Any  # the data module's constructor arguments, by name
    image_size: int
    face_model: Any  # a ``FaceModelProtocol`` or None (the built-in stand-in)

    def landmark_provider(self, folder: str, predicting: bool = False) -> Any: ...


class DataSource:
    """One way of getting face samples. Subclasses set ``stages`` and implement ``build``.

    Attributes:
        name: the registered name (set by ``register_data_source``).
        stages: the stages it can serve (``train``, ``val``, ``test``).
    """

    name: str = ""
    stages: tuple[str, ...] = ("train", "val", "test")

    def check(self, data: SourceSettings, stage: str) -> None:
        """Raise a ``ValueError`` naming the missing setting, before any file is read."""

    def build(self, data: SourceSettings, stage: str) -> Optional[Dataset]:
        raise NotImplementedError


def register_data_source(name: str):
    """Class decorator: make a ``DataSource`` subclass available to yaml as ``name``."""

    def decorator(cls: type[DataSource]) -> type[DataSource]:
        if not (isinstance(cls, type) and issubclass(cls, DataSource)):
            raise TypeError(f"@register_data_source('{name}') expects a DataSource subclass, got {cls!r}")
        cls = _REGISTRY.register(name)(cls)
        cls.name = name
        return cls

    return decorator


def registered_data_sources() -> list[str]:
    return sorted(_REGISTRY.names())


def data_source(name: str, stage: str) -> DataSource:
    """The registered source ``name`` for ``stage``, or a ``ValueError`` listing what exists."""
    if name not in _REGISTRY:
        raise ValueError(f"FaceDataModule: unknown {stage}_source {name!r}; registered: {registered_data_sources()} "
                         "(a new source is one file in regressor/training/sources/)")
    source = _REGISTRY.get(name)()
    if stage not in source.stages:
        raise ValueError(f"FaceDataModule: {stage}_source {name!r} cannot serve {stage}; it serves {list(source.stages)}")
    return source


def _import_source_modules() -> None:
    """Import every module of this package so their ``@register_data_source`` decorators run."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_source_modules()
