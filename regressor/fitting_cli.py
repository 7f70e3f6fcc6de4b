"""``regressor optimize``: fit FaceParams to a folder of photos, per image, with the loss stack.

    regressor optimize --images DIR [--landmarks DIR] --config configs/fitting/default.yaml --out DIR

Writes what ``regressor predict`` writes (``<name>.obj``, ``<name>.npz``, ``<name>_render.png``),
plus ``<name>_overlay.png`` / ``_panel.png`` at the photo's own size and ``<name>_albedo.png``
(``regressor.io.fit_outputs``), ``loss_curves_batchNNN.png`` and ``history.json``.

``--images`` is a folder of photos or a face folder, given as ``DIR`` or ``DIR/images`` (both find
``DIR/landmarks``). Photos without landmark files are detected offline (the ``[detect]`` extra),
cached under ``<out>/landmarks``. Landmark files may mark points invisible (NaN, or a 0/1
visibility column; ``regressor.data.landmarks_io``): the fit ignores those points.

Every output is the fit of the photo whose name it bears (its npz records the photo's file name
and SHA-1): an image that cannot be used is skipped, never replaced. The run ends with one
summary (``fitted N, skipped M`` and each skip's reason), also in ``history.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from regressor.fitting import FitResult, fit_images, stages_from_config
from regressor.fitting_config import load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regressor optimize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images (or a face folder with images/ and landmarks/)")
    parser.add_argument("--landmarks", default=None, help="folder of 68-point landmark files (.pts/.npy/.txt), same stems")
    parser.add_argument("--config", default="configs/fitting/default.yaml", help="fitting yaml (losses, stages; regressor.fitting_config)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--init-checkpoint", default=None, help="regressor .ckpt: start from its prediction (refinement mode)")
    parser.add_argument("--batch-size", type=int, default=None, help="images fitted at once (default from the config)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    parser.add_argument("--image-size", type=int, default=None, help="fitting resolution (default: the config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad file instead of skipping it")
    return parser


def build_components(config: dict[str, Any], device: str | torch.device = "cpu"):
    """(face_model, renderer, loss_stack) from a fitting config."""
    from regressor.face_model import build_face_model
    from regressor.losses import LossStack
    from regressor.render import Renderer

    face_model = build_face_model(config.get("face_model")).to(device)
    renderer = Renderer(image_size=int(config.get("image_size", 64)), **config.get("renderer", {}))
    return face_model, renderer, LossStack(config["losses"]).to(device)


def plot_history(result: FitResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, values in result.history.items():
        if any(v > 0 for v in values):  # a term is 0 in the stages where it is off: leave those gaps
            shown = [v if v > 0 else float("nan") for v in values]
            axis.plot(shown, label=label, linewidth=2 if label == "total" else 1)
    for name, start in result.stage_starts.items():
        axis.axvline(start, color="grey", linestyle=":", linewidth=0.8)
        axis.text(start, axis.get_ylim()[1], name, fontsize=7, rotation=90, va="top")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("weighted loss (batch mean)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _folder(args, image_size: int):
    from regressor.data.fit_folder import FitFolder
    from regressor.detect import CachedLandmarkProvider

    provider = CachedLandmarkProvider(Path(args.out) / "landmarks")
    return FitFolder(args.images, image_size=image_size, landmarks_dir=args.landmarks, landmark_provider=provider,
                     strict=args.strict)


def summary_text(fitted: list[str], skipped: list) -> str:
    """The one summary printed at the end: fitted N, skipped M, each skip with its reason."""
    lines = [f"fitted {len(fitted)} image(s)" + (f", skipped {len(skipped)}:" if skipped else "")]
    lines += [f"  SKIPPED {s.name}: [{s.reason}] {s.detail}" for s in skipped]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from regressor.data.fit_folder import collate
    from regressor.io.fit_outputs import write_fit_outputs
    from regressor.pipeline import Reconstruction

    config = load_config(args.config)
    if args.image_size:
        config["image_size"] = args.image_size
    device = torch.device(args.device)
    face_model, renderer, loss_stack = build_components(config, device)
    stages = stages_from_config(config["stages"])
    for stage in stages:
        stage.steps = max(0, round(stage.steps * args.steps_scale))
    folder = _folder(args, renderer.image_size[0])
    batch_size = args.batch_size or int(config.get("batch_size", 8))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reconstructor = None
    if args.init_checkpoint:
        from regressor.inference import Reconstructor

        reconstructor = Reconstructor.from_checkpoint(args.init_checkpoint, device=device)
    batches, fitted = [], []
    for index, samples in enumerate(folder.batches(batch_size)):
        sample = collate(samples)
        images = sample["image"].to(device)
        init = None
        if reconstructor is not None:
            resized = torch.nn.functional.interpolate(images, size=reconstructor.image_size, mode="bilinear", antialias=True)
            init = reconstructor.predict(resized).params.to(device)
        result = fit_images(images, sample["landmarks"].to(device), loss_stack, face_model, renderer, init=init,
                            stages=stages, landmarks_valid=sample["landmarks_valid"].to(device),
                            learning_rates=config.get("learning_rates"))
        write_fit_outputs(out, samples, Reconstruction(result.params, result.mesh, result.renders, images=images),
                          face_model, renderer)
        plot_history(result, out / f"loss_curves_batch{index:03d}.png")
        batches.append({"names": sample["name"], "history": result.history, "stage_starts": result.stage_starts})
        fitted += sample["name"]
    skipped = folder.skipped
    report = {"folder": str(folder.root), "fitted": fitted, "skipped": [s.as_dict() for s in skipped],
              "batches": batches}
    (out / "history.json").write_text(json.dumps(report))
    print(summary_text(fitted, skipped) + f"\noutputs in {out.resolve()}")
    return 0 if fitted else 1
