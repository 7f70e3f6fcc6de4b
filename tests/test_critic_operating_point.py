"""The operating point: the aligned face-region target, candidates at the fitted pose, and the operating-point figures."""
from __future__ import annotations

import math

import pytest
import torch
from pytorch3d.transforms import axis_angle_to_matrix
from torch import nn

from regressor.critic.fits import OperatingFits
from regressor.critic.operating_point import interior_sensitivity, operating_point_figures, vertex_renderer
from regressor.critic.target import aligned_face_error_mm, face_region, place_like
from regressor.face_model import build_face_model
from regressor.render import Renderer
from regressor.types import FaceParams

SIZE = 32


@pytest.fixture(scope="module")
def face_model():
    return build_face_model()


def truth_and_region(face_model, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    params = face_model.zero_params(batch)
    params.shape = 0.8 * torch.randn(params.shape.shape, generator=generator)
    params.expression = 0.5 * torch.randn(params.expression.shape, generator=generator)
    params.global_pose = 0.2 * torch.randn(batch, 3, generator=generator)
    mesh = face_model(params)
    return params, mesh.vertices, face_region(mesh.vertices, mesh.now_landmarks3d)


def similarity_copy(vertices, angle=0.3, scale=1.1, shift=(0.01, -0.02, 0.03)):
    rotation = axis_angle_to_matrix(torch.tensor([[0.0, angle, 0.1]]))
    return scale * vertices @ rotation.transpose(1, 2) + torch.tensor(shift)


def test_aligned_error_is_zero_for_a_similarity_copy_of_the_truth(face_model):
    _, truth, region = truth_and_region(face_model)
    assert aligned_face_error_mm(similarity_copy(truth), truth, region).abs().max() < 1e-3


def test_aligned_error_counts_face_region_changes_only(face_model):
    _, truth, region = truth_and_region(face_model)
    inside, outside = truth.clone(), truth.clone()
    inside[region] += torch.tensor([0.0, 0.0, 0.002])  # 2 mm forward, face only: not a similarity
    inside[~region] -= torch.tensor([0.0, 0.0, 0.002])
    outside[~region] += torch.tensor([0.0, 0.0, 0.01])  # the back of the head only
    moved = aligned_face_error_mm(torch.stack([inside, outside], dim=1), truth, region)
    assert (moved[:, 0] > 0.0).all()
    assert moved[:, 1].abs().max() < 1e-3, "changes outside the face region must not count"


def test_place_like_moves_the_truth_onto_a_fit_without_changing_its_shape(face_model):
    _, truth, region = truth_and_region(face_model)
    fitted = similarity_copy(truth, angle=-0.2, scale=0.9)
    placed = place_like(truth, fitted, region)
    assert (placed - fitted).norm(dim=-1).max() < 1e-5
    assert aligned_face_error_mm(placed, truth, region).abs().max() < 1e-3


def fake_fits(face_model, truth_params, noise: float = 0.6):
    """Stand-ins for no-critic fits: the truth's pose and camera a little off, shape and expression noisy."""
    generator = torch.Generator().manual_seed(1)
    stages = []
    for scale in (1.5, 1.0):
        fit = truth_params.clone()
        fit.shape = fit.shape + scale * noise * torch.randn(fit.shape.shape, generator=generator)
        fit.expression = fit.expression + scale * noise * torch.randn(fit.expression.shape, generator=generator)
        fit.global_pose = fit.global_pose + 0.03
        fit.camera = fit.camera * torch.tensor([1.03, 1.0, 1.0]) + torch.tensor([0.0, 0.004, -0.003])
        stages.append(fit)
    return OperatingFits(torch.zeros(truth_params.batch_size, 68, 2), ["shape", "appearance"], stages)


class BackgroundOnlyCritic(nn.Module):
    """Scores the sum of the shaded render over the pixels where no face is drawn."""

    def __init__(self, mask):
        super().__init__()
        self.background = 1.0 - mask

    def forward(self, image, shaded):
        return (shaded * self.background).flatten(1).sum(1) + 0.0 * image.sum()


class OracleCritic(nn.Module):
    """Knows the render it wants: minus the L1 distance to a reference render (or plus, ``sign=-1``)."""

    def __init__(self, reference, sign: float = 1.0):
        super().__init__()
        self.reference, self.sign = reference, sign

    def forward(self, image, shaded):
        reference = self.reference.repeat_interleave(shaded.shape[0] // self.reference.shape[0], dim=0)
        return -self.sign * (shaded - reference).abs().flatten(1).mean(1) + 0.0 * image.sum()


def test_interior_sensitivity_of_a_background_only_critic_is_near_zero(face_model):
    params, truth, _ = truth_and_region(face_model)
    renders = vertex_renderer(Renderer(image_size=SIZE), face_model.faces)(truth, params.camera)
    assert renders.mask.mean() > 0.1
    fraction = interior_sensitivity(BackgroundOnlyCritic(renders.mask), torch.rand(2, 3, SIZE, SIZE), renders.shaded, renders.mask)
    assert fraction.max() < 0.05
    everywhere = interior_sensitivity(OracleCritic(torch.zeros(2, 1, SIZE, SIZE)), torch.rand(2, 3, SIZE, SIZE),
                                      renders.shaded + 0.5, renders.mask)
    assert 0.05 < float(everywhere.mean()) < 1.0


def placed_truth_render(face_model):
    """(params, truth, region, fits, render, the placed truth's render at the fitted camera) of 2 faces."""
    params, truth, region = truth_and_region(face_model)
    fits = fake_fits(face_model, params)
    render = vertex_renderer(Renderer(image_size=SIZE), face_model.faces)
    with torch.no_grad():
        placed = place_like(truth, face_model(fits.final).vertices, region)
        reference = render(placed, fits.final.camera).shaded
    return params, truth, region, fits, render, reference


@pytest.mark.parametrize("sign, expected", [(1.0, 1.0), (-1.0, 0.0)])
def test_truth_wins_follows_a_critic_that_knows_the_true_render(face_model, sign, expected):
    params, truth, region, fits, render, reference = placed_truth_render(face_model)
    critic = OracleCritic(reference, sign)
    image = torch.rand(2, 3, SIZE, SIZE)
    figures = operating_point_figures(critic, face_model, render, image, truth, params, fits.final,
                                      torch.full((2, 68, 2), SIZE / 2), torch.ones(2, 68), region)
    assert figures["operating_point.truth_wins_fraction"] == expected
    assert figures["operating_point.monotone_fraction"] == expected
    assert all(math.isfinite(figures[k]) for k in ("operating_point.gradient_cosine_critic",
                                                   "operating_point.gradient_cosine_landmarks",
                                                   "interior_sensitivity_fraction"))


class ImageBlindCritic(nn.Module):
    """Prefers renders near the reference whatever the image: a shape prior with no image agreement."""

    def __init__(self, reference):
        super().__init__()
        self.oracle = OracleCritic(reference)

    def forward(self, image, shaded):
        return self.oracle(image, shaded)


class ImageMatchingCritic(nn.Module):
    """Scores how well the render matches the image's first channel (reads the image, nothing else)."""

    def forward(self, image, shaded):
        return -(shaded[:, :1] - image[:, :1]).abs().flatten(1).mean(1)


def test_the_other_image_control_separates_a_prior_from_image_agreement(face_model):
    params, truth, region, fits, render, reference = placed_truth_render(face_model)
    landmarks, valid = torch.full((2, 68, 2), SIZE / 2), torch.ones(2, 68)
    blind = operating_point_figures(ImageBlindCritic(reference), face_model, render, torch.rand(2, 3, SIZE, SIZE),
                                    truth, params, fits.final, landmarks, valid, region)
    assert blind["operating_point.truth_wins_fraction"] == 1.0
    assert blind["operating_point.truth_wins_other_image"] == 1.0  # a prior wins with any image: the control shows it
    image = reference[:, :1].expand(2, 3, SIZE, SIZE).clone()  # each face's image is its true render
    matching = operating_point_figures(ImageMatchingCritic(), face_model, render, image, truth, params, fits.final,
                                       landmarks, valid, region)
    assert matching["operating_point.truth_wins_fraction"] == 1.0
    assert matching["operating_point.truth_wins_other_image"] < 1.0


def test_fits_made_at_a_lower_resolution_are_shared_through_the_cache(face_model, tmp_path, monkeypatch):
    """A 128 px critic's fits are made at 64 px: images area-resampled, landmarks scaled; the cache is keyed by
    what the fitter sees, so 128 px images that resample to the 64 px ones reuse the 64 px fits."""
    import regressor.critic.fits as fits_module

    seen = []

    def fake_fit(face_model, images, landmarks, valid, scale, config_path, progress=False):
        seen.append((images.shape[-1], landmarks.clone()))
        return OperatingFits(landmarks, ["final"], [FaceParams.zeros(images.shape[0])])

    monkeypatch.setattr(fits_module, "fit_operating_points", fake_fit)
    seeds = torch.tensor([3, 4])
    landmarks = torch.rand(2, 68, 2) * 64
    small = torch.rand(2, 3, 64, 64)
    large = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")  # area-resamples back to small
    fits_module.cached_fits(face_model, small, landmarks, torch.ones(2, 68), seeds, tmp_path)
    fits_module.cached_fits(face_model, large, 2 * landmarks, torch.ones(2, 68), seeds, tmp_path, fit_size=64)
    assert len(seen) == 1 and seen[0][0] == 64  # the second call read the first one's fits
    fits_module.cached_fits(face_model, large, 2 * landmarks, torch.ones(2, 68), seeds, tmp_path / "b", fit_size=64)
    assert seen[1][0] == 64
    assert torch.allclose(seen[1][1], seen[0][1])  # the same (noisy) landmarks at the fit's resolution


def test_the_fit_cache_misses_when_the_same_seeds_show_other_faces(face_model, tmp_path, monkeypatch):
    """Same seeds, other images or landmarks (another synthetic config): refit, never reuse the old fits."""
    import regressor.critic.fits as fits_module

    calls = []

    def fake_fit(face_model, images, landmarks, valid, scale, config_path, progress=False):
        calls.append(1)
        return OperatingFits(landmarks, ["final"], [FaceParams.zeros(images.shape[0])])

    monkeypatch.setattr(fits_module, "fit_operating_points", fake_fit)
    seeds, valid = torch.tensor([3, 4]), torch.ones(2, 68)
    images, landmarks = torch.full((2, 3, 32, 32), 0.5), torch.full((2, 68, 2), 16.0)
    fits_module.cached_fits(face_model, images, landmarks, valid, seeds, tmp_path)
    fits_module.cached_fits(face_model, images + 1e-7, landmarks + 1e-5, valid, seeds, tmp_path)  # float noise: hit
    assert len(calls) == 1
    fits_module.cached_fits(face_model, images, landmarks + 1.0, valid, seeds, tmp_path)  # other landmarks
    fits_module.cached_fits(face_model, images * 0.5, landmarks, valid, seeds, tmp_path)  # other images
    assert len(calls) == 3
