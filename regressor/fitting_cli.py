"""``regressor optimize``: fit FaceParams to a folder of photos, per image, with the loss stack.

    regressor optimize --images DIR [--landmarks DIR] --config configs/fitting/default.yaml --out DIR

Writes what ``regressor predict`` writes (``<name>.obj``, ``<name>.npz``, ``<name>_render.png``)
plus ``loss_curves.png`` and ``history.json``. Photos without landmark files are detected
offline (the ``[detect]`` extra), cached under ``<out>/landmarks``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from regressor.fitting import FitResult, fit_images, stages_from_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regressor optimize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images (or a face folder with images/ and landmarks/)")
    parser.add_argument("--landmarks", default=None, help="folder of 68-point landmark files (.pts/.npy/.txt), same stems")
    parser.add_argument("--config", default="configs/fitting/default.yaml", help="fitting yaml (losses, stages)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--init-checkpoint", default=None, help="regressor .ckpt: start from its prediction (refinement mode)")
    parser.add_argument("--batch-size", type=int, default=None, help="images fitted at once (default from the config)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad file instead of skipping it")
    return parser


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fitting config {path} does not exist (see configs/fitting/)")
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for key in ("losses", "stages"):
        if key not in config:
            raise KeyError(f"fitting config {path} has no '{key}' section")
    return config


def build_components(config: dict[str, Any], device: str | torch.device = "cpu"):
    """(face_model, renderer, loss_stack) from a fitting config."""
    from regressor.face_model import FaceModel
    from regressor.losses import LossStack
    from regressor.render import Renderer

    face_model = FaceModel(**config.get("face_model", {})).to(device)
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


def _dataset(args, image_size: int):
    from regressor.data.folder import FaceFolderDataset
    from regressor.detect import CachedLandmarkProvider

    provider = CachedLandmarkProvider(Path(args.out) / "landmarks")
    return FaceFolderDataset(args.images, image_size=image_size, split="test", landmarks_dir=args.landmarks,
                             strict=args.strict, landmark_provider=provider)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from regressor.io.reconstruction import write_reconstruction
    from regressor.pipeline import Reconstruction

    config = load_config(args.config)
    device = torch.device(args.device)
    face_model, renderer, loss_stack = build_components(config, device)
    stages = stages_from_config(config["stages"])
    for stage in stages:
        stage.steps = max(0, round(stage.steps * args.steps_scale))
    dataset = _dataset(args, renderer.image_size[0])
    batch_size = args.batch_size or int(config.get("batch_size", 8))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reconstructor = None
    if args.init_checkpoint:
        from regressor.inference import Reconstructor

        reconstructor = Reconstructor.from_checkpoint(args.init_checkpoint, device=device)
    histories = {}
    for index, sample in enumerate(loader):
        images = sample["image"].to(device)
        init = None
        if reconstructor is not None:
            resized = torch.nn.functional.interpolate(images, size=reconstructor.image_size, mode="bilinear", antialias=True)
            init = reconstructor.predict(resized).params.to(device)
        result = fit_images(images, sample["landmarks"].to(device), loss_stack, face_model, renderer, init=init,
                            stages=stages, landmarks_valid=sample["landmarks_valid"].to(device),
                            learning_rates=config.get("learning_rates"))
        write_reconstruction(Reconstruction(result.params, result.mesh, result.renders, images=images), out,
                             names=list(sample["name"]))
        plot_history(result, out / f"loss_curves_batch{index:03d}.png")
        histories[f"batch{index:03d}"] = {"names": list(sample["name"]), "history": result.history,
                                          "stage_starts": result.stage_starts}
    (out / "history.json").write_text(json.dumps(histories))
    skipped = dataset.skip_report() if hasattr(dataset, "skip_report") else ""
    print(f"fitted {len(dataset)} image(s); outputs in {out.resolve()}" + (f"\n{skipped}" if skipped else ""))
    return 0
