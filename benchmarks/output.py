"""Where the benchmarks' figures go: one JSON writer, so every ``--json PATH`` behaves the same."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike | None, figures: Any, indent: int = 2) -> None:
    """Write ``figures`` to ``path`` (parents created; None = nothing to write)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=indent) + "\n")
