"""docs/configs.md documents every key of every yaml in configs/, so the reference cannot drift."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOCS = REPO_ROOT / "docs" / "configs.md"


def key_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every key; ``[]`` stands for every item of a list."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            found |= key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            found |= key_paths(item, prefix + "[]")
    return found


def documented_paths() -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", CONFIG_DOCS.read_text()))


def test_key_paths_walk_nested_dicts_and_lists():
    config = {"a": {"b": 1, "c": [{"d": 2}, {"e": {"f": 3}}]}}
    assert key_paths(config) == {"a", "a.b", "a.c", "a.c[].d", "a.c[].e", "a.c[].e.f"}


def test_every_config_key_is_documented_in_docs_configs_md():
    configs = sorted((REPO_ROOT / "configs").rglob("*.yaml"))
    assert len(configs) >= 4
    documented = documented_paths()
    missing = {}
    for path in configs:
        for key in sorted(key_paths(yaml.safe_load(path.read_text()) or {}) - documented):
            missing.setdefault(key, []).append(str(path.relative_to(REPO_ROOT)))
    assert not missing, "keys missing from docs/configs.md (add a row `key` | meaning):\n" + "\n".join(
        f"  {key}  ({', '.join(files)})" for key, files in sorted(missing.items())
    )


EXPERIMENTS = REPO_ROOT / "configs" / "experiments"


def test_every_config_file_is_listed_in_docs_configs_md():
    """Product configs in the file table of docs/configs.md; experiments in configs/experiments/README.md."""
    documented = documented_paths()
    experiments = set(re.findall(r"`([^`\s]+)`", (EXPERIMENTS / "README.md").read_text()))
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        if path.parent == EXPERIMENTS:
            assert path.name in experiments, f"{path.name} is not listed in configs/experiments/README.md"
        else:
            assert str(path.relative_to(REPO_ROOT)) in documented, f"{path.name} is not in the file table of docs/configs.md"


def test_every_documented_key_still_exists_in_some_config():
    """The other direction: a row for a key that was removed from every yaml is stale."""
    rows = re.findall(r"^\| `([^`\s]+)` \|", CONFIG_DOCS.read_text(), flags=re.MULTILINE)
    keys = set()
    for path in (REPO_ROOT / "configs").rglob("*.yaml"):
        keys |= key_paths(yaml.safe_load(path.read_text()) or {})
    assert len(rows) > 50, "the key tables of docs/configs.md were not found"
    stale = [row for row in rows if not row.startswith("configs/") and row not in keys]
    assert not stale, f"docs/configs.md documents keys no config has any more: {stale}"
