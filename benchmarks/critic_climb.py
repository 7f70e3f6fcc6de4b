"""Does a critic's gradient lead to the true shape? Climb its score alone from the no-critic fit.

``python -m benchmarks.critic_climb --checkpoint A.pt [B.pt ...] --split val --num-faces 32 --json PATH``

The perceptual loss can only help fitting if raising the critic's score moves a fit towards the truth.
For every critic, on ``--num-faces`` synthetic faces of ``--split`` (rendered as ``--synthetic`` says) and their cached no-critic fits (noisy
landmarks, made at 64 px whatever the critic's size; ``regressor.critic.fits``):

* ``climb.error_start_mm`` / ``climb.error_end_mm``: median Procrustes-aligned face-region error of the fit
  (the baseline: not moving) and after ``--steps`` Adam steps (``--lr``) on shape and expression that
  maximise the critic score alone, at the fitted pose and camera; ``climb.improved_fraction``: share of
  faces whose error fell. A useful critic lowers the error.
* ``climb_true_pose.*``: the same climb from the fit's shape and expression seen in the *true* pose and
  camera: if only this one helped, the fitted pose would be what misleads the critic.
* ``truth_beats_other_truth``: the true shape placed at the fitted pose outscores another face's true shape
  placed there, with the face's own image. No shape prior separates the two: this measures image reading.

Choices are made on ``val``; ``test`` is for reporting. Measured figures: docs/results/critic_retraining.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.output import write_json

from regressor.critic.ascent import climb
from regressor.critic.fits import cached_fits
from regressor.models.critic import ShapeCritic
from regressor.critic.operating_point import vertex_renderer
from regressor.critic.target import aligned_face_error_mm, face_region, place_like
from regressor.synthetic.splits import SPLIT_SEEDS
from regressor.types import replace

FIT_CACHE = "outputs/critic_fit_cache"
FIT_SIZE = 64


def load(face_model, split: str, num_faces: int, image_size: int, fit_cache: str | None, synthetic: str = "default"):
    """(batch, face-region weights, no-critic fits) of the first ``num_faces`` faces of ``split``."""
    from benchmarks.critic import load_faces
    from regressor.synthetic.displacement import displace_landmarks

    batch, _ = load_faces(face_model, num_faces, image_size, 0, split, synthetic)
    with torch.no_grad():
        mesh = face_model(batch.params)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, batch.displacement)
    fits = cached_fits(face_model, batch.image, batch.landmarks, batch.landmarks_valid, batch.seeds, fit_cache,
                       steps_scale=0.5, fit_size=FIT_SIZE)
    return batch, face_region(batch.vertices, now), fits


def params_error_mm(face_model, params, truth, region):
    """(B,) Procrustes-aligned face-region error (mm) of the meshes of ``params`` against ``truth`` (B, V, 3)."""
    return aligned_face_error_mm(face_model(params).vertices[:, None], truth, region)[:, 0]


def climb_figures(critic, face_model, render, image, truth, region, start, steps: int, lr: float) -> dict:
    """Median aligned error before/after climbing the score alone from ``start``, and the share improved."""
    error = lambda params: params_error_mm(face_model, params, truth, region)  # noqa: E731
    with torch.no_grad():
        before = error(start)
    end = climb(critic, face_model, render, image, start, {"shape": start.shape, "expression": start.expression},
                torch.zeros_like(truth), steps, lr, optimizer="adam")
    with torch.no_grad():
        after = error(replace(start, **end))
    return {"error_start_mm": float(before.median()), "error_end_mm": float(after.median()),
            "improved_fraction": float((after < before).float().mean())}


def measure(checkpoint: str, face_model, data, steps: int, lr: float) -> dict:
    critic = ShapeCritic.from_checkpoint(checkpoint).eval()
    batch, region, fits = data
    size = batch.image.shape[-1]
    render = vertex_renderer(critic.render_settings.renderer(image_size=size), face_model.faces)
    fit = fits.final
    with torch.no_grad():
        fitted = face_model(fit).vertices
        placed = place_like(batch.vertices, fitted, region)
        other = place_like(torch.roll(batch.vertices, 1, dims=0), fitted, region)
        own = critic(batch.image, render(placed, fit.camera).shaded)
        beaten = own > critic(batch.image, render(other, fit.camera).shaded)
    at_true_pose = replace(batch.params, shape=fit.shape, expression=fit.expression, jaw_pose=fit.jaw_pose)
    out = {"checkpoint": str(checkpoint), "image_size": size, "truth_beats_other_truth": float(beaten.float().mean())}
    for name, start in (("climb", fit), ("climb_true_pose", at_true_pose)):
        figures = climb_figures(critic, face_model, render, batch.image, batch.vertices, region, start, steps, lr)
        out.update({f"{name}.{k}": v for k, v in figures.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", default=["checkpoints/critic.pt"])
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_SEEDS))
    parser.add_argument("--num-faces", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--synthetic", default="default",
                        help="image distribution: default[-<switch>...] | model_only[+<switch>...] (SyntheticConfig.preset)")
    parser.add_argument("--fit-cache", default=FIT_CACHE, help="where the no-critic fits are cached ('' = no cache)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    face_model = build_face_model()
    data_by_size, results = {}, []
    for checkpoint in args.checkpoint:
        start = time.time()
        size = ShapeCritic.from_checkpoint(checkpoint).architecture["image_size"]
        if size not in data_by_size:
            data_by_size[size] = load(face_model, args.split, args.num_faces, size, args.fit_cache or None,
                                      args.synthetic)
        row = measure(checkpoint, face_model, data_by_size[size], args.steps, args.lr)
        row.update(split=args.split, synthetic=args.synthetic, num_faces=args.num_faces, steps=args.steps, lr=args.lr,
                   seconds=round(time.time() - start, 1))
        results.append(row)
        print(f"{checkpoint} [{size} px]: climb {row['climb.error_start_mm']:.3f} -> {row['climb.error_end_mm']:.3f} mm "
              f"(improved {row['climb.improved_fraction']:.2f}); at the true pose {row['climb_true_pose.error_start_mm']:.3f}"
              f" -> {row['climb_true_pose.error_end_mm']:.3f} mm; truth beats another face's truth "
              f"{row['truth_beats_other_truth']:.2f}", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
