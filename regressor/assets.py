"""The files that ship with the package: the default regressor, the critic and the default configs.

    from regressor.assets import shipped_checkpoint, default_config, resolve_shipped
    shipped_checkpoint("regressor.ckpt")      # the pretrained regressor (``regressor predict``'s default)
    default_config("fitting/default.yaml")    # the fitting schedule ``regressor optimize`` runs by default
    resolve_shipped("checkpoints/critic.pt")  # a path as configs write it: the cwd's file, else the shipped one

**Where the files live.** In the repository they stay where users and the docs name them: the
top-level ``checkpoints/`` and ``configs/`` folders. The package reaches them through two
directory links, ``regressor/_assets/checkpoints -> ../../checkpoints`` and
``regressor/_assets/configs -> ../../configs``, and ``setup.cfg``'s ``[options.package_data]``
copies the shipped subset (``SHIPPED_CHECKPOINTS``, ``SHIPPED_CONFIGS``) into the wheel as plain
files under ``regressor/_assets/`` (setuptools follows the links when it builds). So one lookup,
``importlib.resources.files("regressor") / "_assets" / ...``, finds them however the code runs:

* a source checkout (``python -m regressor.cli`` in the repository, ``PYTHONPATH=<repo>``) or an
  editable install (``pip install -e .``): through the links, i.e. the top-level files themselves,
  so an edited config or a newly exported checkpoint is used at once;
* an installed wheel: the copies inside the installed package, wherever the working directory is.

Nothing here is a path relative to the repository, so ``regressor predict`` works from any folder.
Only the files named in ``setup.cfg`` are in a wheel (``tests/test_wheel.py`` builds one and checks);
the other files of ``checkpoints/`` (experiments) are reachable through the links in a checkout only.

**User paths win.** ``resolve_shipped`` keeps a path that exists as given (relative to the working
directory); only a path that does not exist *and* names a shipped file as the repository lays it
out (``checkpoints/critic.pt``, ``configs/fitting/default.yaml``) falls back to the shipped copy.
That is how the shipped configs' own references (``checkpoint: checkpoints/critic.pt``,
``init_checkpoint: checkpoints/regressor.ckpt``) keep working outside the repository.
"""
from __future__ import annotations

import atexit
import contextlib
import fnmatch
import os
from importlib import resources
from pathlib import Path, PurePosixPath

ASSETS = "_assets"
#: checkpoint files in the wheel (``checkpoints/<name>`` in the repository)
SHIPPED_CHECKPOINTS = ("regressor.ckpt", "regressor.json", "critic.pt", "critic.json")
#: config files in the wheel, as globs relative to ``configs/`` (``setup.cfg`` lists the same)
SHIPPED_CONFIGS = ("fitting/*.yaml", "regressor/*.yaml", "critic/default.yaml")

_extracted = contextlib.ExitStack()  # only used when the package is not on a file system (a zip)
atexit.register(_extracted.close)


def _asset(folder: str, relative: str) -> Path:
    """``regressor/_assets/<folder>/<relative>`` as a file-system path."""
    parts = PurePosixPath(relative.replace(os.sep, "/")).parts
    if not parts or ".." in parts or PurePosixPath(relative).is_absolute():
        raise ValueError(f"expected a path inside {folder}/, got {relative!r}")
    resource = resources.files("regressor").joinpath(ASSETS, folder, *parts)
    if isinstance(resource, Path):
        return resource.resolve()  # in a checkout: the top-level file the link points at, as messages should name it
    return Path(_extracted.enter_context(resources.as_file(resource)))


def is_shipped_checkpoint(name: str) -> bool:
    return name in SHIPPED_CHECKPOINTS


def is_shipped_config(relative: str) -> bool:
    parts = relative.replace(os.sep, "/").split("/")
    return any(len(parts) == len(pattern.split("/"))
               and all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, pattern.split("/")))
               for pattern in SHIPPED_CONFIGS)


def shipped_checkpoint(name: str) -> Path:
    """The shipped ``checkpoints/<name>`` (``regressor.ckpt``, ``critic.pt`` or their ``.json`` records)."""
    if not is_shipped_checkpoint(name):
        raise ValueError(f"{name!r} is not a shipped checkpoint (shipped: {', '.join(SHIPPED_CHECKPOINTS)})")
    return _asset("checkpoints", name)


def default_config(relative: str) -> Path:
    """The shipped ``configs/<relative>``, e.g. ``default_config("fitting/default.yaml")``."""
    relative = relative.replace(os.sep, "/")
    if not is_shipped_config(relative):
        raise ValueError(f"configs/{relative} is not a shipped config (shipped: {', '.join(SHIPPED_CONFIGS)})")
    return _asset("configs", relative)


def shipped_counterpart(path: str | os.PathLike) -> Path | None:
    """The shipped file a relative ``checkpoints/<name>`` or ``configs/<relative>`` names, else None."""
    path = Path(path)
    if path.is_absolute():
        return None
    parts = PurePosixPath(path.as_posix()).parts
    if parts and parts[0] == ".":
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "checkpoints" and is_shipped_checkpoint(parts[1]):
        return shipped_checkpoint(parts[1])
    if len(parts) >= 2 and parts[0] == "configs" and is_shipped_config("/".join(parts[1:])):
        return default_config("/".join(parts[1:]))
    return None


def resolve_shipped(path: str | os.PathLike) -> Path:
    """``path`` as given when it exists (relative to the working directory); else the shipped file it
    names (``checkpoints/critic.pt``, ``configs/fitting/default.yaml``) when there is one; else
    ``path`` unchanged, so the caller's "does not exist" error names what the user wrote."""
    given = Path(path).expanduser()
    if given.exists():
        return given
    shipped = shipped_counterpart(given)
    return shipped if shipped is not None and shipped.exists() else given
