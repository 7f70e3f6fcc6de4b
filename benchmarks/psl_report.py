"""Markdown tables and the cumulative-error plot of ``benchmarks.psl_effect``."""
from __future__ import annotations

from pathlib import Path

import torch

from regressor.evaluation.now import REGIONS, cumulative_error_curve

MODES = ("fitting", "regression")


def _percent(value: float) -> str:
    return f"{-100.0 * value:+.1f}%"


def markdown(results: dict) -> str:
    """The headline table (median / mean / std, with and without) and the per-region breakdown."""
    lines = [
        "| mode | without PSL: median / mean / std (mm) | with PSL: median / mean / std (mm) | median change | mean change |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        if mode not in results:
            continue
        r = results[mode]
        interval = ""
        if "reduction_ci90" in r:
            low, high = r["reduction_ci90"]
            interval = f" (90% CI {_percent(high)} .. {_percent(low)})"
        lines.append(
            f"| {mode} | {r['median_mm_without']:.3f} / {r['mean_mm_without']:.3f} / {r['std_mm_without']:.3f} "
            f"| {r['median_mm_with']:.3f} / {r['mean_mm_with']:.3f} / {r['std_mm_with']:.3f} "
            f"| {_percent(r['reduction'])}{interval} | {_percent(r['mean_reduction'])} |"
        )
    lines += ["", "| mode | condition | " + " | ".join(f"{name} median (mm)" for name in REGIONS) + " |",
              "|---|---|" + "---|" * len(REGIONS)]
    for mode in MODES:
        if mode not in results:
            continue
        for condition in ("without", "with"):
            summary = results[mode][condition]
            cells = " | ".join(f"{summary.get(f'{name}_median_mm', float('nan')):.3f}" for name in REGIONS)
            lines.append(f"| {mode} | {condition} | {cells} |")
    if "regression" in results and len(results["regression"].get("seeds", {})) > 1:
        lines += ["", "| regression seed | median without (mm) | median with (mm) | change |", "|---|---|---|---|"]
        for seed, r in results["regression"]["seeds"].items():
            lines.append(f"| {seed} | {r['median_mm_without']:.3f} | {r['median_mm_with']:.3f} | {_percent(r['reduction'])} |")
    return "\n".join(lines) + "\n"


def plot_cumulative(errors: dict[str, dict[str, torch.Tensor]], path: str | Path, title: str = "",
                    max_mm: float | None = None) -> None:
    """NoW-paper-style cumulative error curves: one panel per mode, with and without the term.

    ``errors``: mode -> condition label -> pooled per-point errors (mm). ``max_mm`` fixes the x range;
    default per panel, 1.5x the 98th percentile of the panel's best curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(errors), figsize=(5 * len(errors), 3.8), squeeze=False)
    styles = {"without": ("tab:blue", "-"), "with": ("tab:red", "-"), "mean face": ("grey", ":")}
    for axis, (mode, conditions) in zip(axes[0], errors.items()):
        # per panel: up to where the *best* curve of the panel is nearly complete
        limit = max_mm or 1.5 * min(float(v.quantile(0.98)) for v in conditions.values())
        for label, values in conditions.items():
            thresholds, fraction = cumulative_error_curve(values, max_mm=limit, bins=200)
            colour, line = styles.get(label, (None, "--"))
            median = float(values.median())
            axis.plot(thresholds, 100 * fraction, color=colour, linestyle=line,
                      label=f"{label} PSL (median {median:.2f} mm)" if label != "mean face" else f"{label} ({median:.2f} mm)")
        axis.set_title(mode)
        axis.set_xlabel("scan-to-mesh error (mm)")
        axis.set_ylabel("% of scan points")
        axis.set_xlim(0, limit)
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
