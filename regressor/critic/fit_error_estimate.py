"""Estimate the no-critic fitter's error model from real fits, and check it on held-out fits.

``python -m regressor.critic.fit_error_estimate [--faces 256] [--held-out 64] [--out outputs/fit_error_model.pt]``

Runs the project's no-critic fitter (``regressor.critic.fits.cached_fits``: noisy landmarks, the no-critic
schedule at half length, cached per chunk of 64 faces) on ``critic_train`` faces, estimates
``FitErrorModel`` from the first ``--faces`` and compares, on the ``--held-out`` faces after them, the
sampled fits' RMS error and shrinkage per parameter group with the real fits'. It sits above the fitter
(it runs it); the model itself (``regressor.critic.fit_error``) is plain statistics.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from regressor.critic.fit_error import FitErrorModel, group_rms, group_shrinkage
from regressor.types import FaceParams


def real_fits(face_model, split: str, num_faces: int, seed_offset: int = 0, image_size: int = 64,
              chunk: int = 64, cache_dir: str | None = "outputs/critic_fit_cache", progress: bool = True):
    """(truth FaceParams, no-critic fit FaceParams) of ``num_faces`` synthetic faces of ``split``, fitted in
    cached chunks (``regressor.critic.fits.cached_fits``: noisy landmarks, the no-critic schedule at half length)."""
    from regressor.critic.fits import cached_fits
    from regressor.synthetic.config import SyntheticConfig
    from regressor.synthetic.generator import SyntheticFaceGenerator
    from regressor.synthetic.splits import split_seed_range

    seeds = list(split_seed_range(split, num_faces, seed_offset))
    generator = SyntheticFaceGenerator(face_model, image_size, SyntheticConfig())
    truths, fits = [], []
    for first in range(0, num_faces, chunk):
        with torch.no_grad():
            batch = generator.generate(seeds[first:first + chunk])
        found = cached_fits(face_model, batch.image, batch.landmarks, batch.landmarks_valid, batch.seeds, cache_dir,
                            steps_scale=0.5)
        truths.append(batch.params.to("cpu"))
        fits.append(found.final.to("cpu"))
        if progress:
            print(f"fits: {min(first + chunk, num_faces)}/{num_faces} faces of {split}", file=sys.stderr, flush=True)
    return FaceParams.cat(truths), FaceParams.cat(fits)


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model

    parser = argparse.ArgumentParser(description="Estimate the no-critic fitter's error model from cached fits "
                                                 "and check it against held-out fits.")
    parser.add_argument("--faces", type=int, default=256, help="fitted critic_train faces to estimate from")
    parser.add_argument("--held-out", type=int, default=64, help="fitted faces (after those) to check it on")
    parser.add_argument("--out", default="outputs/fit_error_model.pt")
    parser.add_argument("--fit-cache", default="outputs/critic_fit_cache")
    parser.add_argument("--json", default=None, help="write the check's figures here")
    args = parser.parse_args(argv)
    face_model = build_face_model()
    truth, fit = real_fits(face_model, "critic_train", args.faces + args.held_out, cache_dir=args.fit_cache or None)
    train, held_out = torch.arange(args.faces), torch.arange(args.faces, args.faces + args.held_out)
    model = FitErrorModel.estimate(truth[train], fit[train])
    model.save(args.out)
    sampled = model.sample(truth[held_out], torch.Generator().manual_seed(0))
    real, drawn = group_rms(truth[held_out], fit[held_out]), group_rms(truth[held_out], sampled)
    report = {"faces": args.faces, "held_out": args.held_out, "out": args.out,
              "rms_real": real, "rms_sampled": drawn,
              "rms_ratio": {g: drawn[g] / max(real[g], 1e-12) for g in real},
              "shrinkage_real": group_shrinkage(truth[held_out], fit[held_out]),
              "shrinkage_sampled": group_shrinkage(truth[held_out], sampled)}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
