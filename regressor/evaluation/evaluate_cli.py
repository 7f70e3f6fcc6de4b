"""``regressor evaluate``: score predicted meshes against outside scans with the NoW protocol.

    regressor evaluate --pred DIR --scans DIR [--scan-landmarks DIR] [--scan-unit auto|m|cm|mm]

``--pred`` holds ``<stem>.obj`` + ``<stem>.npz`` (with ``now_landmarks3d``), as ``regressor
predict`` / ``regressor optimize`` write them; every prediction needs a scan of the same stem
(``.obj``/``.ply``, any topology) and its 7 NoW landmarks (``regressor.evaluation.scans``).
Per scan: crop to NoW's face sphere, Procrustes on the 7 landmarks, refine by scan-to-mesh
distance, then the distance of every cropped scan vertex to the predicted surface
(``regressor.evaluation.now``). Prints per-image and pooled median / mean / std (mm), and writes
``evaluation.json`` and ``cumulative_error.png`` (into ``--out``, default ``--pred``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from regressor.evaluation.now import NowResult, cumulative_error_curve, now_error
from regressor.evaluation.scans import EvaluationInputError, load_prediction, load_scan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regressor evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of predicted <stem>.obj + <stem>.npz")
    parser.add_argument("--scans", required=True, help="folder of scans <stem>.obj/.ply")
    parser.add_argument("--scan-landmarks", default=None, help="folder of the scans' 7 NoW landmarks (default: --scans)")
    parser.add_argument("--scan-unit", default="auto", choices=("auto", "m", "cm", "mm"),
                        help="unit of the scans and their landmarks (auto: from the outer-eye distance, with a warning)")
    parser.add_argument("--refine-steps", type=int, default=50, help="scan-to-mesh alignment refinement steps")
    parser.add_argument("--out", default=None, help="where evaluation.json and cumulative_error.png go (default --pred)")
    return parser


def evaluate_folder(pred: Path, scans: Path, scan_landmarks: Path | None = None, unit: str = "auto",
                    refine_steps: int = 50) -> dict:
    """NoW errors of every prediction in ``pred``; raises ``EvaluationInputError`` on bad inputs."""
    predictions = sorted(pred.glob("*.obj"))
    if not predictions:
        raise EvaluationInputError(f"no predicted meshes (*.obj) in {pred}")
    if not scans.is_dir():
        raise EvaluationInputError(f"scan folder {scans} does not exist")
    landmark_dirs = [d for d in (scan_landmarks, scans) if d is not None]
    missing = [p.stem for p in predictions if not any((scans / f"{p.stem}{e}").is_file() for e in (".obj", ".ply"))]
    if missing:
        raise EvaluationInputError(f"no scan in {scans} for {len(missing)} prediction(s): {', '.join(missing[:10])}"
                                   f"{' ...' if len(missing) > 10 else ''} (expected <stem>.obj or <stem>.ply)")
    results, per_image = [], {}
    for path in predictions:
        scan = load_scan(path.stem, scans, landmark_dirs, unit)
        predicted = load_prediction(path)
        result = now_error(predicted.vertices, predicted.faces, predicted.now_landmarks, scan.vertices,
                           scan.now_landmarks, refine_steps=refine_steps)
        results.append(result)
        per_image[path.stem] = _stats(result)
        print(f"{path.stem:<24} median {per_image[path.stem]['median_mm']:.3f}  mean {per_image[path.stem]['mean_mm']:.3f}"
              f"  std {per_image[path.stem]['std_mm']:.3f} mm  ({result.errors_mm.numel()} scan points)", flush=True)
    pooled = NowResult.cat(results)
    return {"summary": {**pooled.summary(), "images": len(results), "points": int(pooled.errors_mm.numel())},
            "per_image": per_image, "errors_mm": pooled.errors_mm}


def _stats(result: NowResult) -> dict[str, float]:
    errors = result.errors_mm
    return {"median_mm": float(errors.median()), "mean_mm": float(errors.mean()), "std_mm": float(errors.std())}


def plot_cumulative(errors_mm, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds, fraction = cumulative_error_curve(errors_mm, max_mm=max(5.0, float(errors_mm.quantile(0.99))))
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(thresholds.numpy(), 100 * fraction.numpy())
    axis.set_xlabel("scan-to-mesh error (mm)")
    axis.set_ylabel("scan points (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pred, out = Path(args.pred), Path(args.out or args.pred)
    try:
        report = evaluate_folder(pred, Path(args.scans), Path(args.scan_landmarks) if args.scan_landmarks else None,
                                 args.scan_unit, args.refine_steps)
    except EvaluationInputError as error:
        print(f"regressor evaluate: {error}", file=sys.stderr)
        return 2
    errors = report.pop("errors_mm")
    summary = report["summary"]
    print(f"NoW (pooled over {summary['images']} image(s), {summary['points']} points): "
          f"median {summary['median_mm']:.3f}  mean {summary['mean_mm']:.3f}  std {summary['std_mm']:.3f} mm")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=1))
    plot_cumulative(errors, out / "cumulative_error.png")
    print(f"wrote {out / 'evaluation.json'} and {out / 'cumulative_error.png'}")
    return 0
