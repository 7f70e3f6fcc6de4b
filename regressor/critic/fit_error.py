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
``group_rms`` compares sampled and real errors per parameter group (``python -m regressor.critic.fit_error_estimate``
estimates it from cached no-critic fits and checks it on held-out fits).
"""
from __future__ import annotations

import os
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
                                    f"`python -m regressor.critic.fit_error_estimate --out {path}`")
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
