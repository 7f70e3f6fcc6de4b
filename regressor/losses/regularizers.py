"""Priors on the coefficients and the jaw: keep solutions plausible where images are ambiguous."""
from __future__ import annotations

import torch
from torch import Tensor

from regressor.losses import LossTerm, register_loss
from regressor.types import LossInputs


def jaw_prior(jaw_pose: Tensor, max_opening: float, sideways_tolerance: float) -> Tensor:
    """(B,) penalty of implausible jaw rotations (axis-angle, radians).

    FLAME opens the mouth by a positive rotation about +X. Penalised (squared, hinge):
    a negative opening (the jaw pushed up into the skull), an opening beyond ``max_opening``,
    and sideways rotation (about Y) or twist (about Z) beyond ``sideways_tolerance``.
    """
    opening, sideways, twist = jaw_pose.unbind(dim=-1)
    closing = torch.relu(-opening).square()
    overopen = torch.relu(opening - max_opening).square()
    lateral = torch.relu(sideways.abs() - sideways_tolerance).square()
    lateral = lateral + torch.relu(twist.abs() - sideways_tolerance).square()
    return closing + overopen + lateral


@register_loss("regularizers")
class RegularizerLoss(LossTerm):
    """Sum of weighted priors, averaged over the batch.

    Shape, expression and albedo coefficients are in units of their basis' standard deviation,
    so an L2 norm (sum of squares per sample) is their Gaussian negative log-prior up to a
    factor 2. The jaw prior is ``jaw_prior`` above.

    The defaults suit a stack weight of 1 next to ``photometric`` and ``landmarks`` at weight 1
    (DECA-like strength). Measured on the built-in model: one std of a leading shape or
    expression coefficient moves the landmarks by about 0.3-0.5% of the image, a minor one by
    under 0.1%, so the prior (gradient 2e-4 per std) leaves well-observed components to the data
    and holds weakly observed ones near the mean. A jaw 0.2 rad past its limits costs 0.04,
    as much as a 4% landmark error.

    Args:
        shape, expression, albedo, jaw: weight of each prior (0 disables it).
        neck, eyes: weight of an L2 prior (radians squared) holding the neck and eye rotations at
            zero. Off by default. Why: from photos alone these are barely observable (a neck
            rotation moves the landmarks as a head rotation does; the 68 points hold no gaze), so
            a self-supervised regressor lets them drift, and through the skinning of the lower
            face and the eyeballs that drift shows up as face-shape error
            (``configs/regressor/self_supervised.yaml`` turns them on).
        jaw_l2: weight of an L2 prior (radians squared) pulling the whole jaw rotation towards
            closed, inside the limits the ``jaw`` hinge leaves free. Off by default. Why: from photos
            alone a jaw opening and a head pitch move the chin and mouth landmarks alike, so while the
            head pose is still wrong the landmark term opens the jaw to absorb the error (0.3-0.5 rad
            on single faces, several mm of shape error each; docs/results/regression_recipe.md). 0.1,
            in ``self_supervised.yaml``, breaks that tie towards the pose; with the pose right it
            leaves true openings almost as they are (``python -m benchmarks.recipe_seeds --jaw-bias``:
            of 18 open mouths of 0.16-0.37 rad, 16 are read within 0.015 rad and the two widest,
            0.36 and 0.37, as 0.30 and 0.27), where 0.3 would read them all as 0.10-0.16 rad and 1.0
            as 0.03-0.05.
        max_jaw_opening: radians of mouth opening allowed before the jaw prior grows.
        jaw_sideways_tolerance: radians of jaw yaw/roll allowed for free.
    """

    needs_images = False

    def __init__(
        self,
        shape: float = 1e-4,
        expression: float = 1e-4,
        albedo: float = 1e-4,
        jaw: float = 1.0,
        max_jaw_opening: float = 0.6,
        jaw_sideways_tolerance: float = 0.05,
        neck: float = 0.0,
        eyes: float = 0.0,
        jaw_l2: float = 0.0,
    ) -> None:
        super().__init__()
        self.prior_weights = {"shape": shape, "expression": expression, "albedo": albedo, "jaw": jaw,
                              "neck": neck, "eyes": eyes, "jaw_l2": jaw_l2}
        self.max_jaw_opening = max_jaw_opening
        self.jaw_sideways_tolerance = jaw_sideways_tolerance

    def priors(self, inputs: LossInputs) -> dict[str, Tensor]:
        """Each unweighted prior, averaged over the batch (for logging / inspection)."""
        params = inputs.params
        return {
            "shape": params.shape.square().sum(dim=-1).mean(),
            "expression": params.expression.square().sum(dim=-1).mean(),
            "albedo": params.albedo.square().sum(dim=-1).mean(),
            "jaw": jaw_prior(params.jaw_pose, self.max_jaw_opening, self.jaw_sideways_tolerance).mean(),
            "neck": params.neck_pose.square().sum(dim=-1).mean(),
            "eyes": params.eye_pose.square().sum(dim=-1).mean(),
            "jaw_l2": params.jaw_pose.square().sum(dim=-1).mean(),
        }

    def forward(self, inputs: LossInputs) -> Tensor:
        total = inputs.params.shape.new_zeros(())
        for name, value in self.priors(inputs).items():
            if self.prior_weights[name] != 0.0:
                total = total + self.prior_weights[name] * value
        return total
