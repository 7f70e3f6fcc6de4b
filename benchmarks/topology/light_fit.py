"""A reference scorer with no learning and no prior: how well can *some* light explain the image with this shape?

``LightFitScorer`` fits, for each candidate, a free 9-band SH light per colour channel to the image from the
candidate's rendered normals (least squares over the candidate's own silhouette, constant albedo) and scores
minus the residual, normalised by the image's variance there. It is what "does the shading match the image?"
means when the light is unknown, which is the critic's situation (its grey render uses a fixed light).

Why it exists: it separates a critic that failed to learn from a question the image cannot answer. Scaling depth
along the view axis under weak perspective keeps the silhouette and changes the normals in the way another light
(and albedo) can mimic, the generalized bas-relief ambiguity (Belhumeur, Kriegman and Yuille, IJCV 1999), so a
light-fitting score is blind to it while it sees smoothing. ``benchmarks.critic_topology --reference`` reports
it beside the critics. Hand-written: a 27-unknown least squares per candidate, no library does this scoring.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from regressor.render.shading import sh_basis
from regressor.types import Renders


class LightFitScorer(nn.Module):
    """``forward(image (C, 3, H, W), renders)`` -> (C,) scores, higher = some SH light explains the image better."""

    takes_renders = True  # scored from the full ``Renders`` (normals and mask), not the grey ``shaded`` render

    def __init__(self, min_pixels: int = 12) -> None:
        super().__init__()
        self.min_pixels = min_pixels

    def forward(self, image: Tensor, renders: Renders) -> Tensor:
        basis = sh_basis(renders.normals).permute(0, 2, 3, 1).double()  # (C, H, W, 9)
        inside = renders.mask[:, 0] > 0.5
        scores = []
        for k in range(basis.shape[0]):
            if int(inside[k].sum()) < self.min_pixels:  # too little surface to fit 9 coefficients: worst score
                scores.append(torch.tensor(float("-inf"), dtype=torch.float64, device=image.device))
                continue
            design = basis[k][inside[k]]  # (P, 9)
            target = image[k].permute(1, 2, 0)[inside[k]].double()  # (P, 3)
            light = torch.linalg.lstsq(design, target).solution
            residual = design @ light - target
            scores.append(-(residual.pow(2).mean() / target.var(0).mean().clamp_min(1e-12)).sqrt())
        return torch.stack(scores).to(image.dtype)
