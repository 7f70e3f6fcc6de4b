"""Negative types of the critic (``regressor.critic.negative_registry.register_negative``), one file each.

``builtin.py`` registers the nine shipped types first (their order is their ``type_index``); every
other module of this package is imported after it, so a new type is one new file here.
"""
import importlib
import pkgutil

from regressor.critic.negative_types import builtin  # noqa: F401 - first: fixes the built-in indices

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "builtin":
        importlib.import_module(f"{__name__}.{_module.name}")
