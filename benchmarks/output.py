"""Where the benchmarks' figures go: one JSON writer, so every ``--json PATH`` behaves the same.

Every JSON also says which precision the encoder computes in on this machine and what the CPU
offers (``regressor.models.precision``): timings from a CPU with native bf16 and from one without
are not comparable, and a figure without that context misleads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def machine_figures() -> dict[str, Any]:
    """``precision`` (what the shipped ``bf16: true`` setting computes in on this CPU) and ``cpu_capability``."""
    from regressor.models.precision import precision_report

    report = precision_report(True, "cpu")
    return {"precision": report["precision"], "cpu_capability": report["cpu_capability"]}


def with_machine(figures: Any) -> Any:
    """``figures`` with ``machine_figures()`` added where absent (a dict, or each dict row of a list)."""
    machine = machine_figures()
    if isinstance(figures, dict):
        return {**figures, **{k: v for k, v in machine.items() if k not in figures}}
    if isinstance(figures, list):
        return [with_machine(row) if isinstance(row, dict) else row for row in figures]
    return figures


def write_json(path: str | os.PathLike | None, figures: Any, indent: int = 2) -> None:
    """Write ``figures`` to ``path`` (parents created; None = nothing to write), with the machine's
    precision and CPU capability added (``with_machine``)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(with_machine(figures), indent=indent) + "\n")
