"""Whether to compute in bfloat16: only where the hardware does bf16 arithmetic natively.

Why: bf16 autocast halves the memory traffic of a convolution and, on CPUs with AVX512-BF16 or
AMX (and on CUDA GPUs from Ampere on), runs it on dedicated units. Everywhere else the arithmetic
is emulated: on an AVX2-only CPU (AMD EPYC, 2 cores) a bf16 matmul took 105 ms against 1.4 ms in
fp32 and a bf16-autocast conv 559 ms against 17 ms, and the shipped training recipe ran at
6.8 img/s instead of ~100. So ``FaceEncoder(bf16=True)`` means "bf16 where supported", decided
here at run time for the device the input is on, and logged once per device kind.

* ``cpu_capability()``: what this CPU offers (torch's kernel level, e.g. ``AVX2``/``AVX512``,
  and the native bf16 flags from ``/proc/cpuinfo``); every benchmark JSON records it
  (``benchmarks.output.write_json``).
* ``bf16_supported(device)``: CUDA: ``torch.cuda.is_bf16_supported()``; CPU: the CPU has
  ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (AArch64); anything else: False.
* ``use_bf16(setting, device)``: the decision for a ``bf16`` setting (``False``: never;
  ``True`` / ``"auto"``: where supported; ``"always"``: even where emulated, for measurements).
"""
from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path
from typing import Any, Literal, Union

import torch

logger = logging.getLogger(__name__)

#: /proc/cpuinfo flags that mean native bf16 arithmetic (x86: AVX512-BF16, AMX-BF16; AArch64: BF16).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: Related flags worth recording beside them.
RELATED_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8", "sve", "asimd")

Bf16Setting = Union[bool, Literal["auto", "always"]]
_logged: set[tuple[Any, str]] = set()


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo's first processor; ("", {}) where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86: flags; AArch64: Features
            flags = frozenset(value.split())
    return model, flags


def cpu_bf16_flags() -> list[str]:
    """The native bf16 flags this CPU reports (empty: none, or /proc/cpuinfo unreadable)."""
    return [flag for flag in NATIVE_BF16_FLAGS if flag in _cpuinfo()[1]]


@functools.lru_cache(maxsize=None)
def cpu_capability() -> dict[str, Any]:
    """What this CPU offers for the choice of precision (JSON-ready)."""
    model, flags = _cpuinfo()
    try:
        kernels = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch or an unusual build: record that it is unknown
        kernels = "unknown"
    return {
        "model": model or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "torch_cpu_capability": kernels,
        "flags": [flag for flag in RELATED_FLAGS if flag in flags],
        "native_bf16_flags": cpu_bf16_flags(),
        "bf16_supported": bool(cpu_bf16_flags()),
    }


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` does bf16 arithmetic natively (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def check_setting(setting: Bf16Setting) -> Bf16Setting:
    if setting not in (True, False, "auto", "always"):
        raise ValueError(f"bf16 must be true/false, 'auto' or 'always', got {setting!r}")
    return setting


def use_bf16(setting: Bf16Setting, device: torch.device | str) -> bool:
    """Whether a ``bf16`` setting computes in bf16 on ``device``; the first decision per setting
    and device kind is logged (INFO, or WARNING when bf16 was asked for and is not used)."""
    device = torch.device(device)
    if setting is False:
        return False
    decided = setting == "always" or bf16_supported(device)
    key = (setting, device.type)
    if key not in _logged:
        _logged.add(key)
        message = f"encoder precision on {device.type}: {precision_name(decided)} (bf16={setting!r}; {describe(device)})"
        logger.log(logging.INFO if decided or setting == "always" else logging.WARNING, message)
    return decided


def precision_name(bf16: bool) -> str:
    return "bf16-autocast" if bf16 else "fp32"


def describe(device: torch.device | str = "cpu") -> str:
    """One line: the device's bf16 capability, for logs."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "unavailable"
        return f"CUDA {name}, native bf16: {'yes' if bf16_supported(device) else 'no'}"
    if device.type == "cpu":
        cap = cpu_capability()
        native = ", ".join(cap["native_bf16_flags"]) or "none"
        return f"CPU {cap['model']}, kernels {cap['torch_cpu_capability']}, native bf16: {native}"
    return f"{device.type}: bf16 not used"


def precision_report(setting: Bf16Setting = True, device: torch.device | str = "cpu") -> dict[str, Any]:
    """JSON-ready: the precision a ``bf16`` setting gives on ``device`` and the CPU's capability."""
    device = torch.device(device)
    report = {"precision": precision_name(use_bf16(setting, device)), "bf16_setting": setting,
              "device": device.type, "cpu_capability": cpu_capability()}
    if device.type == "cuda":
        report["cuda_bf16_supported"] = bf16_supported(device)
    return report
