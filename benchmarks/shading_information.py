"""Does the image show the shape a fit lacks? An oracle ceiling for any image-based shape loss.

``python -m benchmarks.shading_information --split val --num-faces 16 --synthetic default model_only
model_only+ambient_occlusion ... --json PATH``

A critic can only learn what the image shows. For each image distribution (``SyntheticConfig.preset``), on
``--num-faces`` faces of ``--split`` and their cached no-critic fits (noisy landmarks, 64 px; the fits
``benchmarks.critic_climb`` starts from), with the *exact* image model of the fitter (per-vertex basis albedo x
9-band SH, masked L1 against the image) and everything but the shape taken from the ground truth (pose, camera):

* ``photometric_truth_wins``: with the true albedo coefficients and light, the true shape's photometric error is
  below the fit's shape's. On images the model explains exactly this is 1.0; effects outside the model lower it.
* ``photometric_climb.*``: from the fit's shape and expression, ``--steps`` Adam steps (``--lr``) on shape,
  expression, albedo and light that lower the photometric error alone, with no prior: the median Procrustes-aligned
  face-region error before (the baseline, not moving) and after, and the share of faces that improved.

Reading: where the oracle climb lowers the error the shading carries the shape, and a critic that fails the climb
gate (``benchmarks.critic_climb``) on the same images is what is wrong; where it raises the error, the effects
outside the Lambertian model hide the shape from it, and a critic has to learn those effects before it can help.
Choices are made on ``val``. Measured figures: docs/results/psl_effect_notes.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import Tensor

from benchmarks.critic_climb import FIT_CACHE, load, params_error_mm
from benchmarks.output import write_json
from regressor.losses.photometric import pixel_error
from regressor.pipeline import render_params
from regressor.synthetic.splits import SPLIT_SEEDS
from regressor.types import FaceParams, replace

CLIMBED = ("shape", "expression", "albedo", "light")


def photometric_error(face_model, renderer, params: FaceParams, image: Tensor) -> Tensor:
    """(B,) masked L1 between the image and the albedo x SH render of ``params``, per face."""
    _, renders = render_params(face_model, renderer, params)
    masked = pixel_error(image, renders.albedo_shaded) * renders.mask
    return masked.flatten(1).sum(1) / renders.mask.flatten(1).sum(1).clamp_min(1.0)


def photometric_climb(face_model, renderer, image: Tensor, start: FaceParams, steps: int, lr: float) -> FaceParams:
    """``start`` after ``steps`` Adam steps on ``CLIMBED`` lowering the photometric error alone (no prior)."""
    variables = {name: getattr(start, name).detach().clone().requires_grad_(True) for name in CLIMBED}
    adam = torch.optim.Adam(list(variables.values()), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            adam.zero_grad()
            photometric_error(face_model, renderer, replace(start, **variables), image).sum().backward()
            adam.step()
    return replace(start, **{name: value.detach() for name, value in variables.items()})


def measure(face_model, data, steps: int, lr: float) -> dict:
    from regressor.render import Renderer

    batch, region, fits = data
    renderer = Renderer(image_size=batch.image.shape[-1])
    truth, fit = batch.params, fits.final
    error = lambda params: params_error_mm(face_model, params, batch.vertices, region)  # noqa: E731
    shape_of_fit = dict(shape=fit.shape, expression=fit.expression, jaw_pose=fit.jaw_pose)
    with torch.no_grad():
        fit_true_appearance = photometric_error(face_model, renderer, replace(truth, **shape_of_fit), batch.image)
        truth_true_appearance = photometric_error(face_model, renderer, truth, batch.image)
        start = replace(truth, albedo=fit.albedo, light=fit.light, **shape_of_fit)
        before = error(start)
    end = photometric_climb(face_model, renderer, batch.image, start, steps, lr)
    with torch.no_grad():
        after = error(end)
    return {"photometric_truth_wins": float((truth_true_appearance < fit_true_appearance).float().mean()),
            "photometric_climb.error_start_mm": float(before.median()),
            "photometric_climb.error_end_mm": float(after.median()),
            "photometric_climb.improved_fraction": float((after < before).float().mean())}


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model
    from regressor.synthetic.config import SyntheticConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", nargs="+", default=["default", "model_only"],
                        help="image distributions: default[-<switch>...] | model_only[+<switch>...] (SyntheticConfig.preset)")
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_SEEDS))
    parser.add_argument("--num-faces", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--fit-cache", default=FIT_CACHE, help="where the no-critic fits are cached ('' = no cache)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    for synthetic in args.synthetic:  # a misspelled preset fails before any fitting
        try:
            SyntheticConfig.preset(synthetic)
        except ValueError as error:
            parser.error(str(error))
    torch.manual_seed(0)
    face_model = build_face_model()
    results = []
    for synthetic in args.synthetic:
        started = time.time()
        data = load(face_model, args.split, args.num_faces, args.image_size, args.fit_cache or None, synthetic)
        row = {"synthetic": synthetic, **measure(face_model, data, args.steps, args.lr)}
        row.update(split=args.split, num_faces=args.num_faces, image_size=args.image_size, steps=args.steps, lr=args.lr,
                   seconds=round(time.time() - started, 1))
        results.append(row)
        print(f"{synthetic}: true shape wins the exact photometric error on {row['photometric_truth_wins']:.2f} of faces; "
              f"photometric climb from the fit {row['photometric_climb.error_start_mm']:.3f} -> "
              f"{row['photometric_climb.error_end_mm']:.3f} mm (improved {row['photometric_climb.improved_fraction']:.2f})",
              flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
