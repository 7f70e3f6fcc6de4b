"""The gradient-trained critic: the fit-error model, the gradient objective, smooth activations, fresh faces."""
from __future__ import annotations

import json

import pytest
import torch

from regressor.critic.fit_error import FitErrorModel, group_shrinkage
from regressor.critic.gradient import (
    START_KINDS, GradientConfig, climb_ranking, climbed_starts, direction_to_truth, gradient_losses, informed_magnitude_error,
    metric_cosine, metric_weights, sample_starts, score_gradient,
)
from regressor.models.critic import CriticCheckpointError, ShapeCritic
from regressor.critic.operating_point import vertex_renderer
from regressor.render import Renderer
from regressor.types import FaceParams

TINY = {"channels": [8, 8, 16, 16], "stem_width": 8}


def _params(n: int, n_shape: int, n_expression: int, generator: torch.Generator) -> FaceParams:
    params = FaceParams.zeros(n, n_shape, n_expression, 2)
    params.shape = torch.randn(n, n_shape, generator=generator)
    params.expression = torch.randn(n, n_expression, generator=generator)
    return params


def test_fit_error_model_recovers_the_shrinkage_and_its_sampler_reproduces_the_covariance():
    generator = torch.Generator().manual_seed(0)
    truth = _params(6000, 3, 2, generator)
    slope = torch.tensor([0.5, 0.3, 0.8, 0.6, 0.9])
    offset = torch.tensor([0.1, -0.2, 0.0, 0.05, 0.3])
    root = torch.randn(5, 5, generator=generator) * 0.3
    covariance = root @ root.T + 0.05 * torch.eye(5)
    residual = torch.randn(6000, 5, generator=generator) @ torch.linalg.cholesky(covariance).T
    x = torch.cat([truth.shape, truth.expression], 1)
    y = slope * x + offset + residual
    fit = FaceParams(**{**vars(truth), "shape": y[:, :3], "expression": y[:, 3:]})

    model = FitErrorModel.estimate(truth, fit, fields=("shape", "expression"))
    assert torch.allclose(model.slope, slope, atol=0.03) and torch.allclose(model.offset, offset, atol=0.03)
    assert torch.allclose(model.covariance, covariance, atol=0.03)

    sampled = model.sample(truth, torch.Generator().manual_seed(1))
    drawn = torch.cat([sampled.shape, sampled.expression], 1) - model.slope * x - model.offset
    empirical = drawn.T @ drawn / (len(drawn) - 1)
    assert torch.linalg.norm(empirical - covariance) < 0.05 * torch.linalg.norm(covariance)
    assert torch.equal(sampled.albedo, truth.albedo) and torch.equal(sampled.light, truth.light)
    # a shrinking fitter's errors anticorrelate with the truth; so do the sampled ones
    assert group_shrinkage(truth, sampled)["shape"] < -0.3
    assert group_shrinkage(truth, fit)["shape"] == pytest.approx(group_shrinkage(truth, sampled)["shape"], abs=0.03)


def test_fit_error_model_file_round_trip_and_clear_errors(tmp_path):
    generator = torch.Generator().manual_seed(0)
    truth = _params(50, 3, 2, generator)
    model = FitErrorModel.estimate(truth, truth, fields=("shape", "expression"))
    model.save(tmp_path / "model.pt")
    loaded = FitErrorModel.load(tmp_path / "model.pt")
    assert torch.equal(loaded.residual_cholesky, model.residual_cholesky) and loaded.num_fits == 50
    with pytest.raises(FileNotFoundError, match="python -m regressor.critic.fit_error_estimate"):
        FitErrorModel.load(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fit-error model"):
        FitErrorModel.load(tmp_path / "other.pt")


def test_starts_are_operating_segment_or_noisy_truth():
    generator = torch.Generator().manual_seed(0)
    truth = _params(400, 3, 2, generator)
    fit = FaceParams(**{**vars(truth), "shape": truth.shape * 0.5, "expression": truth.expression * 0.5})
    model = FitErrorModel.estimate(truth, fit, fields=("shape", "expression"), ridge=1e-9)  # an exact 0.5 shrinkage
    config = GradientConfig(start_mix=(1.0, 1.0, 1.0), start_scale=(0.5, 1.5), truth_noise=0.3)
    start, kind = sample_starts(truth, model, config, torch.Generator().manual_seed(1))
    # start = truth + s (fit - truth) = truth (1 - s/2): s in [0.5, 1.5] for operating, [0, 1] for segment
    s = (1 - start.shape / truth.shape) * 2
    operating, segment = s[kind == 0], s[kind == 1]
    assert operating.min() > 0.49 and operating.max() < 1.51 and operating.max() > 1.2
    assert segment.min() > -0.01 and segment.max() < 1.01
    noise = (start.shape - truth.shape)[kind == 2]
    assert noise.std() == pytest.approx(0.3, rel=0.2)
    assert {0, 1, 2} == set(kind.tolist())


def test_three_start_probabilities_mean_no_climbed_starts_and_bad_climb_steps_are_refused():
    assert GradientConfig(start_mix=(0.6, 0.2, 0.2)).start_mix == (0.6, 0.2, 0.2, 0.0)
    assert len(START_KINDS) == 4
    with pytest.raises(ValueError, match="climb_steps"):
        GradientConfig(climb_steps=(5, 2))


def test_climbed_starts_follow_the_critics_own_ascent_and_leave_the_other_kinds(face_model):
    batch, start = _one_face(face_model, count=3)
    render = vertex_renderer(Renderer(image_size=32), face_model.faces)
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", 32, TINY, activation="silu").eval()
    kind = torch.tensor([3, 0, 3])
    config = GradientConfig(climb_steps=(4, 4), climb_lr=0.05)
    climbed = climbed_starts(critic, face_model, render, batch.image, start, kind, config, torch.Generator())

    def scores(params):
        with torch.no_grad():
            return critic(batch.image, render(face_model(params).vertices, params.camera).shaded)

    assert torch.equal(climbed.shape[1], start.shape[1]) and torch.equal(climbed.expression[1], start.expression[1])
    moved = (climbed.shape - start.shape).abs().amax(1)
    assert moved[0] > 0.05 and moved[2] > 0.05  # 4 Adam steps of 0.05
    assert (scores(climbed)[[0, 2]] > scores(start)[[0, 2]]).all()
    assert torch.equal(climbed.global_pose, start.global_pose) and torch.equal(climbed.camera, start.camera)
    assert all(p.grad is None for p in critic.parameters())  # the climb leaves the critic's weights alone


def test_metric_cosine_is_the_plain_cosine_in_parameter_space_and_weights_components_geometrically(face_model):
    gradient, direction = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert float(metric_cosine(gradient, direction, torch.ones(2))) == pytest.approx(2 ** -0.5)
    # a coefficient with 4x the geometric effect: in that metric the same direction leans towards it
    assert float(metric_cosine(gradient, direction, torch.tensor([4.0, 1.0]))) == pytest.approx(
        (1 * 1) / (0.5 * (4 + 1) ** 0.5), rel=1e-5)
    weights = metric_weights(face_model, "geometric")
    assert weights.shape == (face_model.n_shape + face_model.n_expression,) and (weights > 0).all()
    assert weights[0] > 10 * weights[face_model.n_shape - 1]  # the leading identity component moves the face most


def _one_face(face_model, size=32, count=1):
    from regressor.synthetic.generator import SyntheticFaceGenerator

    batch = SyntheticFaceGenerator(face_model, size).generate(list(range(40_000_000, 40_000_000 + count)))
    generator = torch.Generator().manual_seed(3)
    start = FaceParams(**{**vars(batch.params), "shape": batch.params.shape * 0.5,
                          "expression": batch.params.expression * 0.5
                          + 0.2 * torch.randn(batch.params.expression.shape, generator=generator)})
    return batch, start


def test_through_relu_the_first_layer_image_weights_get_no_second_order_gradient_through_silu_they_do(face_model):
    batch, start = _one_face(face_model)
    render = vertex_renderer(Renderer(image_size=32), face_model.faces)
    config = GradientConfig(faces_per_step=1, ranking_weight=0.0)
    grads = {}
    for activation in ("relu", "silu"):
        torch.manual_seed(0)
        critic = ShapeCritic("resnet10t", 32, TINY, activation=activation)
        losses = gradient_losses(critic, face_model, render, batch.image, batch.params, start, config, torch.ones(150))
        first = critic.backbone.conv1[0].weight if isinstance(critic.backbone.conv1, torch.nn.Sequential) \
            else critic.backbone.conv1.weight
        (gradient,) = torch.autograd.grad(losses["total"], first)
        grads[activation] = gradient[:, :3].abs().max()  # the image's channels
    assert grads["relu"] == 0.0
    assert grads["silu"] > 1e-8


def test_a_tiny_critic_trained_a_few_steps_on_one_face_raises_its_cosine(face_model):
    batch, start = _one_face(face_model)
    render = vertex_renderer(Renderer(image_size=32), face_model.faces)
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", 32, TINY, activation="silu")
    config = GradientConfig(faces_per_step=1)
    weights = torch.ones(150)

    def cosine() -> float:
        _, gradient = score_gradient(critic.eval(), face_model, render, batch.image, start, create_graph=False)
        return float(metric_cosine(gradient, direction_to_truth(start, batch.params), weights))

    before = cosine()
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(12):
        losses = gradient_losses(critic, face_model, render, batch.image, batch.params, start, config, weights)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    after = cosine()
    assert after > before + 0.08, (before, after)  # measured: 0.035 -> 0.166


def test_the_informed_magnitude_wants_lengths_in_proportion_to_the_share_of_the_way_each_gradient_knows():
    weights = torch.tensor([4.0, 1.0, 0.25])
    direction = torch.tensor([[1.0, 2.0, -2.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    gradient = torch.tensor([[3.0, 1.0, 0.5], [-2.0, 0.0, 1.0], [0.2, 1.0, 0.5]])
    cosine = metric_cosine(gradient, direction, weights)
    assert cosine[0] > 0 > cosine[1] and cosine[2] > 0
    error = informed_magnitude_error(gradient, direction, weights, cosine)
    # the score's scale is free: a 10x longer gradient is the same gradient
    assert informed_magnitude_error(10 * gradient, direction, weights, cosine) == pytest.approx(float(error))
    assert error > 0.001
    # lengths in proportion to max(cos, 0) (the face that points away: no length) meet the target exactly
    root = weights.sqrt()
    lengths = (gradient / root).norm(dim=1) / (direction * root).norm(dim=1)
    wanted = gradient * (cosine.clamp(min=0) / lengths)[:, None]
    assert informed_magnitude_error(wanted, direction, weights, cosine) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="magnitude"):
        GradientConfig(magnitude="sometimes")


def test_descending_the_informed_magnitude_rescales_each_gradient_without_turning_it(face_model):
    generator = torch.Generator().manual_seed(0)
    weights, direction = torch.ones(6), torch.randn(4, 6, generator=generator)  # (in a plain metric: no turning)
    gradient = (direction + 0.8 * torch.randn(4, 6, generator=generator)).requires_grad_(True)
    cosine = metric_cosine(gradient, direction, weights).detach()
    start = gradient.detach().clone()
    optimizer = torch.optim.SGD([gradient], lr=2.0)
    first = float(informed_magnitude_error(gradient, direction, weights, cosine))
    for _ in range(200):
        optimizer.zero_grad()
        informed_magnitude_error(gradient, direction, weights, cosine).backward()
        optimizer.step()
    assert float(informed_magnitude_error(gradient, direction, weights, cosine)) < 0.01 * first
    torch.testing.assert_close(metric_cosine(gradient, direction, weights), cosine, atol=1e-4, rtol=0)
    assert not torch.allclose(gradient.norm(dim=1), start.norm(dim=1), rtol=0.05)

    # in the recipe the term reaches the critic's weights through the second-order gradient
    batch, start_params = _one_face(face_model, count=2)
    render = vertex_renderer(Renderer(image_size=32), face_model.faces)
    critic = ShapeCritic("resnet10t", 32, TINY, activation="silu")
    first_layer = {}
    for weight in (0.0, 1.0):
        config = GradientConfig(faces_per_step=2, ranking_weight=0.0, magnitude_weight=weight, magnitude="informed")
        critic.zero_grad()
        losses = gradient_losses(critic, face_model, render, batch.image, batch.params, start_params, config,
                                 torch.ones(150))
        losses["total"].backward()
        first_layer[weight] = next(critic.parameters()).grad.clone()
    assert "magnitude" in losses and not torch.allclose(first_layer[0.0], first_layer[1.0])


def test_the_climb_ranking_lowers_the_score_where_a_climb_moved_away_and_raises_it_where_it_moved_closer(face_model):
    with pytest.raises(ValueError, match="climbed starts"):
        GradientConfig(climb_ranking_weight=0.1, start_mix=(0.6, 0.2, 0.2))
    batch, before = _one_face(face_model, count=3)
    truth = batch.params
    step = {n: getattr(before, n) - getattr(truth, n) for n in ("shape", "expression")}
    sign = torch.tensor([0.5, -0.5, 0.5])[:, None]  # face 0 climbs away, face 1 towards the truth, face 2 did not climb
    after = FaceParams(**{**vars(before), **{n: getattr(before, n) + sign * d for n, d in step.items()}})
    climbed = torch.tensor([True, True, False])
    render = vertex_renderer(Renderer(image_size=32), face_model.faces)
    torch.manual_seed(0)
    critic = ShapeCritic("resnet10t", 32, TINY, activation="silu")
    weights = metric_weights(face_model, "geometric")

    def rise():
        with torch.no_grad():
            return (critic(batch.image, render(face_model(after).vertices, after.camera).shaded)
                    - critic(batch.image, render(face_model(before).vertices, before.camera).shaded))

    def ranking(mask):
        return climb_ranking(critic, face_model, render, batch.image, truth, before, after, mask, weights)

    first, rise_before = float(ranking(climbed).detach()), rise()
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    for _ in range(15):
        optimizer.zero_grad()
        ranking(climbed).backward()
        optimizer.step()
    last, rise_after = float(ranking(climbed).detach()), rise()
    assert last < first
    assert rise_after[0] < rise_before[0] and rise_after[1] > rise_before[1]
    assert critic.training  # the critic's mode is restored
    none = torch.zeros(3, dtype=torch.bool)
    assert float(ranking(none)) == 0.0


def test_the_activation_is_stored_in_the_checkpoint_and_old_files_are_relu(tmp_path):
    critic = ShapeCritic("resnet10t", 32, TINY, activation="silu")
    critic.save_checkpoint(tmp_path / "silu.pt")
    loaded = ShapeCritic.from_checkpoint(tmp_path / "silu.pt")
    assert loaded.activation == "silu" and isinstance(loaded.backbone.act1, torch.nn.SiLU)
    payload = torch.load(tmp_path / "silu.pt", weights_only=True)
    del payload["config"]["activation"]  # a file written before the option existed
    torch.save(payload, tmp_path / "old.pt")
    assert ShapeCritic.from_checkpoint(tmp_path / "old.pt").activation == "relu"


def test_fresh_faces_are_new_at_every_sample_and_a_resumed_run_starts_after_the_used_ones():
    from types import SimpleNamespace

    from regressor.training.critic_data import CriticDataModule

    data = CriticDataModule(val_samples=2, image_size=32, batch_size=2, fresh_faces=True, cache_dir=None)
    data.setup("fit")
    first = next(iter(data.train_dataloader()))
    assert first["index"].tolist() == [0, 1] and not torch.equal(first["image"][0], first["image"][1])
    data.trainer = SimpleNamespace(global_step=5)
    resumed = next(iter(data.train_dataloader()))
    assert resumed["index"].tolist() == [10, 11]


def test_the_gradient_recipe_trains_and_logs_the_gate_figures(tmp_path, face_model):
    from regressor.cli import main as regressor_main
    from tests.test_critic_module import TINY_OVERRIDES

    generator = torch.Generator().manual_seed(0)
    truth = face_model.zero_params(40)
    truth.shape = torch.randn(truth.shape.shape, generator=generator)
    fit = FaceParams(**{**vars(truth), "shape": 0.5 * truth.shape})
    FitErrorModel.estimate(truth, fit).save(tmp_path / "fit_error.pt")
    initial = ShapeCritic("resnet10t", 32, TINY)
    initial.save_checkpoint(tmp_path / "base.pt")
    overrides = [a for a in TINY_OVERRIDES if a not in ("--data.init_args.train_samples", "4")]
    regressor_main(["fit", "--config", "configs/critic/gradient.yaml", *overrides,
                    "--model.init_args.init_checkpoint", str(tmp_path / "base.pt"),
                    "--model.init_args.gradient.faces_per_step", "2",
                    "--model.init_args.gradient.fit_error_model", str(tmp_path / "fit_error.pt"),
                    "--model.init_args.gradient.validation_fits", str(tmp_path / "val_fits"),
                    "--model.init_args.gradient.start_mix", "[0.5, 0.0, 0.0, 0.5]",
                    "--model.init_args.gradient.climb_steps", "[1, 2]",
                    "--model.init_args.gradient.climb_ranking_weight", "0.1",
                    "--model.init_args.val_gate_faces", "2", "--trainer.callbacks", json.dumps([
                        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                         "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 1, "save_last": True}},
                        {"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.5}}]),
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
                    "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path)])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/gradient.cosine", "train/gradient.ranking", "train/gradient.climb_ranking", "val/gradient_cosine",
            "val/gradient_cosine_other_image", "val/truth_beats_other_truth", "val/climb.error_start_mm",
            "val/climb.error_end_mm", "val/climb.improved_fraction"} <= tags
    cosine = events.Scalars("val/gradient_cosine")[-1].value
    assert -1.0 <= cosine <= 1.0 and cosine != 0.0
    assert len(list((tmp_path / "val_fits").glob("fits_*.pt"))) == 1  # the val starts are the fitter's, made once
    # the recipe's weight averaging: the checkpoint's state_dict is the average, what a critic loads from it
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    average, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = next(k for k in average if k.startswith("critic.") and k.endswith("conv1.0.weight"))
    assert not torch.equal(average[name], current[name])
    loaded = ShapeCritic.from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(loaded.state_dict()[name.removeprefix("critic.")], average[name])


def test_the_learning_curve_pairs_each_validation_with_the_training_cosine_since_the_last_one(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from benchmarks.learning_curve import learning_curve, read_scalars

    writer = SummaryWriter(str(tmp_path))
    for step in range(10):
        writer.add_scalar("train/gradient.cosine", 0.1 * step, step)
    writer.add_scalar("val/gradient_cosine", 0.05, 4)
    writer.add_scalar("val/gradient_cosine", 0.07, 9)
    writer.close()
    rows = learning_curve(read_scalars([str(tmp_path)]), batch_size=8)
    assert [(r["step"], r["faces_seen"]) for r in rows] == [(4, 40), (9, 80)]
    assert rows[0]["train_cosine"] == pytest.approx(0.2) and rows[1]["train_cosine"] == pytest.approx(0.7)
    assert rows[1]["gradient_cosine"] == pytest.approx(0.07)


def test_files_that_name_the_score_head_load_and_other_heads_are_refused_by_name(tmp_path):
    import copy

    critic = ShapeCritic("resnet10t", 32, TINY)
    critic.save_checkpoint(tmp_path / "critic.pt")
    payload = torch.load(tmp_path / "critic.pt", weights_only=True)
    for head, name in (("score", "score.pt"), ("render_match", "field.pt")):
        named = copy.deepcopy(payload)
        named["config"]["head"] = head  # as the files of the render-matching experiment were written
        torch.save(named, tmp_path / name)
    loaded = ShapeCritic.from_checkpoint(tmp_path / "score.pt")
    image, shaded = torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded(image, shaded), critic.eval()(image, shaded))
    with pytest.raises(CriticCheckpointError, match="render_match"):
        ShapeCritic.from_checkpoint(tmp_path / "field.pt")


def test_validation_can_start_from_the_fitters_own_fits_made_once_and_cached(tmp_path, face_model):
    from torch.utils.data import default_collate

    from regressor.critic.gradient_figures import params_error_mm
    from regressor.critic.target import face_region
    from regressor.training.critic_data import SyntheticPool
    from regressor.training.critic_groups import GradientGroup, truth_landmarks

    pool = SyntheticPool(face_model, 2, 64, "critic_val", synthetic="model_only")
    batch = default_collate([pool[0], pool[1]])
    truth = FaceParams.from_dict(batch["params"])
    group = GradientGroup(GradientConfig(validation_fits=str(tmp_path / "fits")))
    starts = group.validation_starts(face_model, truth, batch)
    assert len(list((tmp_path / "fits").glob("fits_*.pt"))) == 1
    assert torch.equal(group.validation_starts(face_model, truth, batch).shape, starts.shape)  # read back, not refitted
    _, _, now = truth_landmarks(face_model, truth, batch["vertices"], 64)
    region = face_region(batch["vertices"], now)
    fitted = params_error_mm(face_model, starts, batch["vertices"], region)
    mean_face = params_error_mm(face_model, face_model.zero_params(2), batch["vertices"], region)
    assert (fitted < mean_face).all() and (fitted > 0).all()  # a real fit: better than the mean face, not the truth
