"""``regressor predict --images DIR --out DIR``: photos in, meshes out, with the shipped regressor.

Without ``--config`` this is plain inference (no Lightning, no training config): the weights
come from ``--ckpt_path`` (a ``regressor fit`` checkpoint or an exported regressor file) or,
when none is given, the shipped ``checkpoints/regressor.ckpt``. With ``--config``, ``regressor
predict`` is LightningCLI's predict, as before.

Every photo is cropped around its face, in order of preference: its landmark file, a box from
``--boxes``, offline detection (on by default when the detector is installed; never for an image
with a landmark file), else a centre crop. How each image was cropped is written to
``predictions.json`` (and printed with ``--verbose``); the summary counts the crops in one line,
and one more line says how many were centre-cropped (and how many of those had no detected face).
"""
from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regressor predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder of photos (or a face folder with images/)")
    p.add_argument("--out", required=True, type=Path, help="output folder for <name>.obj/.npz/_render.png")
    p.add_argument("--ckpt_path", default=None, help="checkpoint (default: the shipped checkpoints/regressor.ckpt)")
    p.add_argument("--landmarks", type=Path, default=None, help="folder of landmark files (default: DIR/landmarks)")
    p.add_argument("--boxes", type=Path, default=None, help="JSON {name: [x0, y0, x1, y1]} face boxes")
    p.add_argument("--detect", choices=("auto", "on", "off"), default="auto",
                   help="offline landmark detection for photos without landmark files (auto: when installed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--verbose", action="store_true", help="print how each image was cropped")
    return p


def _provider(mode: str, cache_dir: Path):
    from regressor.detect import DetectorUnavailableError, detector_available

    if mode == "off":
        return None
    if not detector_available():
        if mode == "on":
            raise DetectorUnavailableError("dlib", "regressor predict --detect on")
        warnings.warn("the offline landmark detector is not installed (`make detect`): photos without landmark files "
                      "or boxes get a centre crop, which on raw photos usually shows more than the face", stacklevel=2)
        return None
    from regressor.detect.provider import CachedLandmarkProvider

    return CachedLandmarkProvider(cache_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from torch.utils.data import DataLoader

    from regressor.data.predict_folder import PredictImageDataset, collate_skipping_unreadable
    from regressor.assets import resolve_shipped
    from regressor.inference import SHIPPED_REGRESSOR, Reconstructor
    from regressor.io.reconstruction import write_reconstruction
    from regressor.pipeline import Reconstruction
    from regressor.types import FaceMesh, FaceParams, Renders

    checkpoint = resolve_shipped(args.ckpt_path) if args.ckpt_path else SHIPPED_REGRESSOR
    if not Path(checkpoint).is_file():
        raise SystemExit(f"regressor predict: checkpoint {checkpoint} does not exist")
    reconstructor = Reconstructor.from_checkpoint(checkpoint, device=args.device)
    root = args.images  # <face folder>/images: its landmarks/ is found too (PredictImageDataset)
    dataset = PredictImageDataset(root, reconstructor.image_size, landmarks_dir=args.landmarks, boxes=args.boxes,
                                  landmark_provider=_provider(args.detect, args.out / "landmarks_detected"))
    if len(dataset) == 0:
        raise SystemExit(f"regressor predict: no readable images in {root}")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, collate_fn=collate_skipping_unreadable)
    print(f"regressor predict: {len(dataset)} image(s) from {root} with {checkpoint}")
    records, crops = {}, Counter()
    for batch in loader:
        if not batch["name"]:
            continue
        result = reconstructor.predict(batch["image"])
        write_reconstruction(result, args.out, names=batch["name"])
        for name, crop in zip(batch["name"], batch["crop"]):
            records[name] = {"crop": crop, "box": None}
            crops[crop] += 1
            if args.verbose:
                print(f"  {name}: cropped from {crop}")
        for name, box in zip(batch["name"], batch["box"].tolist()):
            records[name]["box"] = [round(v, 2) for v in box]
    skipped = dict(dataset.total_skipped)
    (args.out / "predictions.json").write_text(json.dumps(
        {"checkpoint": str(checkpoint), "images": records, "skipped": skipped}, indent=1))
    summary = ", ".join(f"{n} from {crop}" for crop, n in sorted(crops.items()))
    print(f"predicted {len(records)} face(s) into {args.out} ({summary})"
          + (f"; skipped {sum(skipped.values())}: {skipped}" if skipped else ""))
    if crops.get("centre"):
        undetected = dataset.no_face_detected
        print(f"warning: {crops['centre']} image(s) were centre-cropped (no landmarks, box or detected face"
              + (f"; the detector found no face in {undetected}" if undetected else "") + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
