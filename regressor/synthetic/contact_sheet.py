"""``regressor contact-sheet``: a png grid of synthetic samples, to look at the data.

Optionally overlays the 68 landmarks (green = visible, red = hidden by the head).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from regressor.synthetic.splits import SPLIT_SEEDS, split_seed_range


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regressor contact-sheet", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="png to write")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--split", default="train", choices=sorted(SPLIT_SEEDS))
    p.add_argument("--seed", type=int, default=0, help="seed offset inside the split")
    p.add_argument("--model-only", action="store_true", help="albedo x SH images only")
    p.add_argument("--landmarks", action="store_true", help="draw the 68 landmarks")
    return p


def contact_sheet(images: torch.Tensor, landmarks: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                  padding: int = 2) -> Image.Image:
    """A PIL image of (B, 3, H, W) images in a near-square grid, with optional (B, 68, 2) landmarks."""
    batch, _, h, w = images.shape
    columns = math.ceil(math.sqrt(batch))
    grid = make_grid(images.clamp(0, 1).cpu(), nrow=columns, padding=padding, pad_value=1.0)
    sheet = Image.fromarray((grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    if landmarks is not None:
        draw = ImageDraw.Draw(sheet)
        for b in range(batch):
            ox = padding + (b % columns) * (w + padding)
            oy = padding + (b // columns) * (h + padding)
            for i, (x, y) in enumerate(landmarks[b].tolist()):
                ok = valid is None or valid[b, i] > 0.5
                draw.point((ox + x - 0.5, oy + y - 0.5), fill=(0, 255, 0) if ok else (255, 0, 0))
    return sheet


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from regressor.synthetic.generator import SyntheticFaceGenerator
    from regressor.synthetic.config import SyntheticConfig
    from regressor.face_model import build_face_model

    config = SyntheticConfig.model_only() if args.model_only else SyntheticConfig()
    generator = SyntheticFaceGenerator(build_face_model(), args.size, config)
    batch = generator.generate(list(split_seed_range(args.split, args.num, args.seed)))
    sheet = contact_sheet(batch.image, batch.landmarks if args.landmarks else None, batch.landmarks_valid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.num} samples of split {args.split!r}, {args.size} px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
