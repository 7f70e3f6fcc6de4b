"""Raw photo in, mesh out: the whole offline path on a real photograph, for the README.

    python docs/showcase/make_showcase.py --out docs/showcase

A documentation script, not part of the package: it drives the package's own commands.

1. writes scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain) to ``<out>/photos/``;
2. ``regressor landmarks --preview`` on it (dlib, offline);
3. ``regressor optimize`` with the fitting config (perceptual shape loss on by default);
4. composes ``<out>/showcase.png``: detected landmarks | fit overlaid on the crop | grey mesh
   (frontal, fitted pose) | grey mesh turned 35 degrees, so the depth the 2D evidence left free shows.

Needs the ``[detect]`` extra and scikit-image (dev extra). Prints every command it runs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PANEL = 256


def _run(label: str, main, argv: list[str]) -> None:
    print(f"$ regressor {label} {' '.join(argv)}", flush=True)
    code = main(argv)
    if code not in (0, None):
        raise SystemExit(f"regressor {label} failed with exit code {code}")


def _grey_renders(npz_path: Path, config: dict, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """(frontal, turned) (PANEL, PANEL) uint8 grey renders of the fitted FaceParams."""
    import torch

    from regressor.face_model import build_face_model
    from regressor.render import Renderer
    from regressor.types import FaceParams

    stored = np.load(npz_path)
    fields = FaceParams.__dataclass_fields__  # the npz also holds landmarks and provenance
    params = FaceParams(**{key: torch.from_numpy(stored[key])[None].float() for key in stored.files if key in fields})
    face_model = build_face_model(config.get("face_model"))
    renderer = Renderer(image_size=PANEL, background_value=1.0)
    pictures = []
    with torch.no_grad():
        for turn in (0.0, yaw):
            posed = params.clone()
            if turn:
                posed.global_pose = torch.tensor([[0.0, turn, 0.0]])
                posed.camera = torch.tensor([[params.camera[0, 0].item(), 0.0, 0.0]])
            renders = renderer(face_model(posed), posed.camera)
            shaded = renders.shaded[0, 0].clamp(0, 1).numpy()
            pictures.append((shaded * 255).round().astype(np.uint8))
    return pictures[0], pictures[1]


def _label(image: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 16), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return image


def compose(out: Path, stem: str, config: dict) -> Path:
    """``<out>/showcase.png`` from the landmark preview, the fit render and two grey mesh views."""
    from regressor.data.crop import box_from_landmarks
    from regressor.data.landmarks_io import load_landmarks

    landmarks = load_landmarks(out / "landmarks" / f"{stem}.pts")
    box = box_from_landmarks(landmarks, scale=1.25)
    preview = Image.open(out / "landmarks" / "preview" / f"{stem}.png").convert("RGB")
    margin = box.size * 0.6
    context = preview.crop((box.x0 - margin, box.y0 - margin, box.x0 + box.size + margin, box.y0 + box.size + margin))
    fit = Image.open(out / "fit" / f"{stem}_render.png").convert("RGB")
    frontal, turned = _grey_renders(out / "fit" / f"{stem}.npz", config, yaw=math.radians(35))
    panels = [
        _label(context.resize((PANEL, PANEL)), "detected (dlib, offline)"),
        _label(fit.resize((PANEL, PANEL), Image.Resampling.NEAREST), f"fit on the {fit.width}px crop"),
        _label(Image.fromarray(frontal).convert("RGB"), "fitted mesh"),
        _label(Image.fromarray(turned).convert("RGB"), "turned 35 deg"),
    ]
    sheet = Image.new("RGB", (PANEL * len(panels), PANEL), (255, 255, 255))
    for index, panel in enumerate(panels):
        sheet.paste(panel, (index * PANEL, 0))
    path = out / "showcase.png"
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/showcase/make_showcase.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/showcase"))
    parser.add_argument("--config", default="configs/fitting/default.yaml")
    parser.add_argument("--steps-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        from skimage import data as skimage_data
    except ImportError:
        print("the showcase photo comes from scikit-image: pip install -e .[dev]", file=sys.stderr)
        return 2
    from regressor.detect.cli import main as landmarks_main
    from regressor.fitting_cli import main as optimize_main
    from regressor.fitting_config import load_config

    photos = args.out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.png")
    _run("landmarks", landmarks_main, ["--images", str(photos), "--out", str(args.out / "landmarks"), "--preview"])
    _run("optimize", optimize_main, [
        "--images", str(photos), "--landmarks", str(args.out / "landmarks"), "--config", args.config,
        "--out", str(args.out / "fit"), "--steps-scale", str(args.steps_scale),
    ])
    path = compose(args.out, "astronaut", load_config(args.config))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
