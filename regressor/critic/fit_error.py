"""A statistical model of the no-critic fitter's errors, to draw operating-point starts without fitting.

Why: a critic used as a loss acts where a landmark fit has already placed the face, so it must be trained
there, on faces it has never seen (a few hundred fitted faces are memorised within minutes). Running the
fitter for every fresh face costs seconds; drawing a fit-like start from a model of the fitter's errors
costs nothing. The model has to capture what real fits do, and fits do not scatter around the truth:
they shrink towards the prior (the correlation of fit - truth with the truth is about -0.96 for shape).
So each fitted coefficient is modelled as

    fit = slope * truth + offset + residual,     residual ~ N(0, covariance)

with one slope and offset per coefficient (least squares over the cached fits) and the residuals' full
covariance (so correlated errors, e.g. shape against camera scale, are kept). ``FitErrorModel.estimate``
builds it from (truth, fit) pairs, ``sample`` draws fit-like parameters for new truths, and
``group_rms`` compares sampled and real errors per parameter group (``python -m regressor.critic.fit_error``
estimates it from cached no-critic fits and checks it on held-out fits).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from regressor.types import FaceParams, replace

MODELLED_FIELDS = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "camera")
FORMAT = "face-psl/fit-error-model"


@dataclass
class FitErrorModel:
    """``fit = slope * truth + offset + residual`` per coefficient of ``fields`` (concatenated, D in all).

    Attributes:
        fields: the ``FaceParams`` fields modelled, in order; sizes: their widths.
        slope, offset: (D,) per-coefficient shrinkage and bias.
        residual_cholesky: (D, D) lower-triangular factor of the residuals' covariance.
        num_fits: how many (truth, fit) pairs it was estimated from.
    """

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    slope: Tensor
    offset: Tensor
    residual_cholesky: Tensor
    num_fits: int = 0

    @property
    def covariance(self) -> Tensor:
        return self.residual_cholesky @ self.residual_cholesky.T

    @classmethod
    def estimate(cls, truth: FaceParams, fit: FaceParams, fields: tuple[str, ...] = MODELLED_FIELDS,
                 ridge: float = 1e-6) -> "FitErrorModel":
        """Least-squares slope and offset per coefficient, and the residuals' covariance (+ ``ridge`` x its
        mean variance on the diagonal, so a coefficient the fitter never moves still has a factor)."""
        x, y = flatten(truth, fields).double(), flatten(fit, fields).double()
        if x.shape[0] < 2:
            raise ValueError(f"FitErrorModel.estimate needs at least 2 fits, got {x.shape[0]}")
        x_mean, y_mean = x.mean(0), y.mean(0)
        variance = (x - x_mean).pow(2).mean(0)
        slope = torch.where(variance > 1e-12, ((x - x_mean) * (y - y_mean)).mean(0) / variance.clamp(min=1e-12),
                            torch.zeros_like(variance))
        offset = y_mean - slope * x_mean
        residual = y - slope * x - offset
        covariance = residual.T @ residual / (x.shape[0] - 1)
        covariance = covariance + torch.eye(len(slope), dtype=covariance.dtype) * ridge * max(
            float(covariance.diagonal().mean()), 1e-12)
        sizes = tuple(int(getattr(truth, name).shape[1]) for name in fields)
        return cls(tuple(fields), sizes, slope.float(), offset.float(), torch.linalg.cholesky(covariance).float(),
                   num_fits=int(x.shape[0]))

    def sample(self, truth: FaceParams, generator: torch.Generator | None = None) -> FaceParams:
        """Fit-like parameters for ``truth``: the modelled fields drawn from the model, the others the truth's."""
        x = flatten(truth, self.fields)
        noise = torch.randn(x.shape, generator=generator).to(x)
        y = self.slope.to(x) * x + self.offset.to(x) + noise @ self.residual_cholesky.to(x).T
        return replace(truth, **unflatten(y, self.fields, self.sizes))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Atomic ``torch.save`` of plain tensors and types (loads with ``weights_only=True``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "fields": list(self.fields), "sizes": list(self.sizes), "slope": self.slope,
                   "offset": self.offset, "residual_cholesky": self.residual_cholesky, "num_fits": self.num_fits}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FitErrorModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fit-error model {path} does not exist; estimate it with "
                                    f"`python -m regressor.critic.fit_error --out {path}`")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a fit-error model (format {FORMAT!r} expected)")
        return cls(tuple(payload["fields"]), tuple(payload["sizes"]), payload["slope"], payload["offset"],
                   payload["residual_cholesky"], int(payload["num_fits"]))


def flatten(params: FaceParams, fields: tuple[str, ...]) -> Tensor:
    """(B, D): the named fields of ``params`` side by side."""
    return torch.cat([getattr(params, name).flatten(1) for name in fields], dim=1)


def unflatten(vector: Tensor, fields: tuple[str, ...], sizes: tuple[int, ...]) -> dict[str, Tensor]:
    return dict(zip(fields, vector.split(list(sizes), dim=1)))


GROUPS = {"shape": ("shape",), "expression": ("expression",), "pose": ("global_pose", "jaw_pose"),
          "camera": ("camera",)}


def group_rms(truth: FaceParams, fit: FaceParams) -> dict[str, float]:
    """Root-mean-square error of ``fit`` against ``truth`` per parameter group (coefficient units)."""
    return {group: float((flatten(fit, names) - flatten(truth, names)).pow(2).mean().sqrt())
            for group, names in GROUPS.items()}


def group_shrinkage(truth: FaceParams, fit: FaceParams) -> dict[str, float]:
    """Correlation of (fit - truth) with the truth per group, pooled over coefficients: about -1 when fits
    shrink towards the prior, 0 when their errors are independent of the truth."""
    out = {}
    for group, names in GROUPS.items():
        x = flatten(truth, names)
        e = flatten(fit, names) - x
        x, e = x - x.mean(0), e - e.mean(0)
        out[group] = float((x * e).sum() / (x.pow(2).sum().sqrt() * e.pow(2).sum().sqrt()).clamp(min=1e-12))
    return out


# ---------------------------------------------------------------------- estimation from real fits
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
    parser.add_argument("--faces", type=int, default=384, help="fitted critic_train faces to estimate from")
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
