"""Markdown tables and the cumulative-error plot of ``benchmarks.psl_effect``."""
from __future__ import annotations

from pathlib import Path

import torch

from regressor.evaluation.now import REGIONS, cumulative_error_curve

MODES = ("fitting", "regression")


def _percent(value: float) -> str:
    return f"{-100.0 * value:+.1f}%"


def arms(results: dict) -> list[tuple[str, dict]]:
    """(row label, report) of every mode that ran: the benchmark set's, then the shifted set's."""
    found = []
    for prefix, source in (("", results), ("shifted ", results.get("shifted") or {})):
        for mode in MODES:
            report = source.get(mode)
            if isinstance(report, dict) and "median_mm_without" in report:
                found.append((prefix + mode, report))
    return found


def markdown(results: dict) -> str:
    """The headline table (median / mean / std, with and without), the per-region breakdown, the
    fine-tuned regressors' baseline and seeds, and any arm that was skipped (with why)."""
    lines = [
        "| mode | without PSL: median / mean / std (mm) | with PSL: median / mean / std (mm) | median change | mean change |",
        "|---|---|---|---|---|",
    ]
    for label, r in arms(results):
        interval = ""
        if "reduction_ci90" in r:
            low, high = r["reduction_ci90"]
            interval = f" (90% CI {_percent(high)} .. {_percent(low)})"
        lines.append(
            f"| {label} | {r['median_mm_without']:.3f} / {r['mean_mm_without']:.3f} / {r['std_mm_without']:.3f} "
            f"| {r['median_mm_with']:.3f} / {r['mean_mm_with']:.3f} / {r['std_mm_with']:.3f} "
            f"| {_percent(r['reduction'])}{interval} | {_percent(r['mean_reduction'])} |"
        )
    for mode in MODES:
        if isinstance(results.get(mode), dict) and "skipped" in results[mode]:
            lines.append(f"| {mode} | skipped: {results[mode]['skipped']} | | | |")
    lines += ["", "| mode | condition | " + " | ".join(f"{name} median (mm)" for name in REGIONS) + " |",
              "|---|---|" + "---|" * len(REGIONS)]
    for label, report in arms(results):
        for condition in ("without", "with"):
            summary = report[condition]
            cells = " | ".join(f"{summary.get(f'{name}_median_mm', float('nan')):.3f}" for name in REGIONS)
            lines.append(f"| {label} | {condition} | {cells} |")
    baselines = [(label, r["baseline"]) for label, r in arms(results) if "baseline" in r]
    if baselines:
        lines += ["", "| regression test set | baseline before fine-tuning: median / mean (mm) | mean face median (mm) |",
                  "|---|---|---|"]
        for label, base in baselines:
            mean_face = (results.get("shifted", {}) if label.startswith("shifted") else results).get("mean_face", {})
            lines.append(f"| {label} | {base['median_mm']:.3f} / {base['mean_mm']:.3f} "
                         f"| {mean_face.get('median_mm', float('nan')):.3f} |")
    for label, r in arms(results):
        if label.endswith("regression") and len(r.get("seeds", {})) > 1:
            lines += ["", f"| {label} seed | median without (mm) | median with (mm) | change |", "|---|---|---|---|"]
            for seed, s in r["seeds"].items():
                lines.append(f"| {seed} | {s['median_mm_without']:.3f} | {s['median_mm_with']:.3f} | {_percent(s['reduction'])} |")
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

    columns = min(2, len(errors))  # benchmark | shifted set, one row per mode
    rows = -(-len(errors) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for axis in axes.flat[len(errors):]:
        axis.set_visible(False)
    styles = {"without": ("tab:blue", "-"), "with": ("tab:red", "-"), "mean face": ("grey", ":"),
              "baseline": ("tab:green", "--")}
    for axis, (mode, conditions) in zip(axes.flat, errors.items()):
        # per panel: up to where the *best* curve of the panel is nearly complete
        limit = max_mm or 1.5 * min(float(v.quantile(0.98)) for v in conditions.values())
        for label, values in conditions.items():
            thresholds, fraction = cumulative_error_curve(values, max_mm=limit, bins=200)
            colour, line = styles.get(label, (None, "--"))
            median = float(values.median())
            axis.plot(thresholds, 100 * fraction, color=colour, linestyle=line,
                      label=f"{label} PSL (median {median:.2f} mm)" if label in ("with", "without")
                      else f"{label} ({median:.2f} mm)")
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
