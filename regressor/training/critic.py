"""CriticModule: Lightning glue that trains a ShapeCritic on graded negatives.

Each step: the batch's true geometries -> ``NegativeGenerator`` candidates (positive + K graded
negatives) -> grey renders with a random light and background -> critic scores -> the ranking
objective of ``regressor.critic.objective``. Validation uses fixed candidates (seeded by
batch index) and logs the AUC against negatives >= 2 mm, per-type AUCs and the per-face Spearman
correlation between score and error. Everything substantive lives in plain modules.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from regressor.face_model.protocol import FaceModelProtocol
from regressor.critic.render_cache import RenderCache, RenderedCandidates
from regressor.critic.negatives import (
    CandidateSet, NegativeGenerator, PerturbationConfig, candidate_meshes, mesh_for_rendering, negative_types,
    random_light_directions,
)
from regressor.models.critic import CriticCheckpointError, ShapeCritic
from regressor.critic.objective import CriticObjective, auc, spearman
from regressor.critic.ascent import AscentConfig, ascent_candidates
from regressor.critic.probe import gradient_probe
from regressor.critic.target import ALIGNED_FACE_REGION, aligned_face_error_mm, face_region
from regressor.critic.gradient import GradientConfig
from regressor.training.critic_groups import GradientGroup, truth_landmarks
from regressor.render.renderer import DEFAULT_LIGHT_DIRECTION
from regressor.types import FaceParams

AUC_ERROR_THRESHOLD_MM = 2.0
WARMUP_STEPS = 100  # linear warm-up of the constant learning-rate schedule
LR_SCHEDULES = ("one_cycle", "constant")


class CriticModule(pl.LightningModule):
    """Trains ``ShapeCritic(backbone, image_size, backbone_kwargs)``.

    Args:
        num_negatives: negatives per face and step (validation uses 2 per type).
        perturbation / objective: ``PerturbationConfig`` / ``CriticObjective`` keyword overrides.
        light_spread: how far the training light wanders from the loss-time default.
        background_mix: probabilities of [default 0, random constant, noise] render backgrounds.
        face_model: the face model of the candidates (``FaceModelProtocol``; default: the built-in
            stand-in). The CLI links the config's top-level ``face_model`` here and into the data module.
        refresh_probability: chance that a face's cached candidates are re-drawn and re-rendered
            when it comes round again (1.0 = always fresh; see ``RenderCache``).
        log_images_every_n_steps: TensorBoard grid of (image, candidates) rows.
        ascent: ``AscentConfig`` keyword overrides: self-generated negatives found by climbing the
            critic's own score (``regressor.critic.ascent``); off unless ``faces_per_step > 0``.
        error_unit_mm: the error unit of the score's calibration ``-log(1 + err / unit)``; stored in the
            critic (and its checkpoint) and used by the objective (``objective.error_unit_mm`` is refused).
        init_checkpoint: start from this critic file's weights (``ShapeCritic.from_checkpoint``;
            its architecture must equal this module's), e.g. to fine-tune with ascent negatives.
        val_gradient_faces: validation faces of the gradient-usefulness probe (score ascent alone
            from perturbed shape/expression; ``val/gradient_fraction`` = share whose error falls; 0 = off).
        error_target: ``camera_whole_head`` (mean vertex error in the true camera, the first critics) or
            ``aligned_face_region`` (Procrustes-aligned face-region error, as NoW); stored in
            the critic's checkpoint. Every candidate group's error is measured with it.
        gradient: ``GradientConfig`` keyword overrides: supervise the critic's input gradient at fit-like
            starts (``regressor.critic.gradient``); off unless ``faces_per_step > 0``.
        val_gate_faces: validation faces of the gradient gate's figures (``val/gradient_cosine``,
            ``val/gradient_cosine_other_image``, ``val/truth_beats_other_truth``, ``val/climb.*``) from fixed
            fit-like starts (``regressor.critic.gradient_figures``; 0 = off; needs ``gradient.fit_error_model``).
        activation: the critic backbone's activation (``ShapeCritic``; ``silu`` for the gradient group).
        lr_schedule: ``one_cycle`` over ``max_steps`` (warm-up, cosine decay), or ``constant`` after a
            100-step warm-up, for runs of open length that are resumed until they are good enough.
        extra_light_directions: fixed lights whose grey renders join the main one as input channels
            (``CriticRenderSettings``; stored in the checkpoint). With ``init_checkpoint`` of a critic with
            fewer, the new channels' first-layer weights start at zero (``widened_input``).
        hand_made_weight: weight of the main group, the hand-made graded negatives of the true geometry
            (0 = skip it: a critic trained only on the other groups).
    """

    def __init__(self, backbone: str = "resnet10t", image_size: int = 64,
                 backbone_kwargs: dict[str, Any] | None = None, num_negatives: int = 5,
                 perturbation: dict[str, Any] | None = None, objective: dict[str, Any] | None = None,
                 learning_rate: float = 2e-3, weight_decay: float = 1e-4, light_spread: float = 0.6,
                 background_mix: tuple[float, float, float] = (0.5, 0.25, 0.25),
                 face_model: Optional[FaceModelProtocol] = None,
                 render_size: int = 64, refresh_probability: float = 1.0, seed: int = 0,
                 log_images_every_n_steps: int = 250, ascent: dict[str, Any] | None = None,
                 init_checkpoint: str | None = None, val_gradient_faces: int = 8, error_unit_mm: float = 1.0,
                 error_target: str = "camera_whole_head", gradient: dict[str, Any] | None = None,
                 val_gate_faces: int = 0, activation: str = "relu", lr_schedule: str = "one_cycle",
                 extra_light_directions: Sequence[Sequence[float]] = (), hand_made_weight: float = 1.0) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"CriticModule: lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.save_hyperparameters(ignore=["face_model"])
        self.__dict__["_face_model"] = face_model  # a tool like the renderer: not a submodule, not in the state dict
        if face_model is not None:
            from regressor.components import component_spec

            self.hparams["face_model"] = component_spec(face_model)
        if "error_unit_mm" in (objective or {}):
            raise ValueError("CriticModule: objective.error_unit_mm has moved to model.init_args.error_unit_mm "
                             "(one error unit, stored in the critic's checkpoint)")
        self.critic = ShapeCritic(backbone, image_size, backbone_kwargs, error_unit_mm=error_unit_mm,
                                  render={"image_size": render_size, "extra_light_directions": extra_light_directions},
                                  error_target=error_target, activation=activation)
        if init_checkpoint:
            self._load_initial_weights(init_checkpoint)
        self.ascent = AscentConfig(**(ascent or {}))
        self.gradient = GradientGroup(GradientConfig(**(gradient or {})))
        self.hparams["critic_config"] = self.critic.config
        self.objective = CriticObjective(error_unit_mm=self.critic.error_unit_mm, **(objective or {}))
        self.perturbation = PerturbationConfig(**(perturbation or {}))
        self._tools: tuple | None = None  # (face_model, renderer, negatives): not weights, not in state_dict
        self._val_outputs: list[dict[str, Tensor]] = []
        self._train_cache = RenderCache(refresh_probability)
        self._val_cache = RenderCache(0.0)

    # ------------------------------------------------------------------ plumbing
    def tools(self):
        from regressor.face_model import build_face_model

        if self._tools is None:
            with torch.inference_mode(False):  # may first run in validation; buffers must allow autograd
                face_model = self._face_model if self._face_model is not None else build_face_model()
                renderer = self.critic.render_settings.renderer()
                self._tools = (face_model, renderer, NegativeGenerator(face_model, self.perturbation))
        face_model = self._tools[0]
        if face_model.v_template.device != self.device:
            face_model.to(self.device)
        return self._tools

    def _load_initial_weights(self, path: str) -> None:
        initial = ShapeCritic.from_checkpoint(path)
        # The input size is not part of the weights (convolutions and a global pool), so a 64 px critic may
        # start a 128 px one; every other architecture field must match.
        same = {**initial.architecture, "image_size": self.critic.architecture["image_size"]}
        if same != self.critic.architecture:
            raise CriticCheckpointError(f"init_checkpoint {path}: architecture {initial.architecture} differs "
                                        f"from this module's {self.critic.architecture}")
        self.critic.load_state_dict(widened_input(initial.state_dict(), self.critic.state_dict()))

    def render_candidates(self, candidates: CandidateSet, light: Tensor) -> RenderedCandidates:
        """Candidates (B, C) + light directions (B, 3) -> grey renders (B, C, 1, H, W) and masks."""
        face_model, renderer, _ = self.tools()
        b, c = candidates.error_mm.shape
        renders = renderer(candidate_meshes(candidates, face_model.faces), candidates.camera.reshape(b * c, 3),
                           light_direction=light.to(self.device).repeat_interleave(c, dim=0))
        unflat = lambda x: x.reshape(b, c, *x.shape[1:])  # noqa: E731
        return RenderedCandidates(unflat(renders.shaded), unflat(renders.mask), candidates.error_mm,
                                  candidates.type_index)

    def score(self, image: Tensor, shaded: Tensor) -> Tensor:
        """image (B,3,H,W), shaded (B,C,1,H,W) -> scores (B,C)."""
        b, c = shaded.shape[:2]
        return self.critic(image.repeat_interleave(c, dim=0), shaded.flatten(0, 1)).reshape(b, c)

    def _randomise_background(self, rendered: RenderedCandidates, generator: torch.Generator) -> Tensor:
        """Shaded (B, C, 1, H, W) with the background replaced by 0, a constant or noise (same per face)."""
        shaded, mask = rendered.shaded.float(), rendered.mask.float()
        b, c = shaded.shape[:2]
        mix = torch.tensor(self.hparams.background_mix, dtype=torch.float)
        choice = torch.multinomial(mix, b, True, generator=generator)[:, None, None, None, None]
        constant = (torch.rand(b, generator=generator) * 0.6)[:, None, None, None, None]
        noise = torch.rand(b, 1, 1, *shaded.shape[-2:], generator=generator)
        background = torch.where(choice == 2, noise, torch.where(choice == 1, constant, torch.zeros_like(noise)))
        return shaded * mask + background.to(shaded) * (1 - mask)

    def cached_render(self, batch: dict[str, Any], cache: RenderCache, generator: torch.Generator,
                      make_candidates, light: Tensor) -> RenderedCandidates:
        """Rendered candidates for the batch: from ``cache``, (re-)rendering the stale faces."""
        keys = [int(k) for k in batch["index"]]
        stale = cache.stale(keys, generator)
        if stale:
            rows = torch.tensor(stale)
            params = FaceParams.from_dict(batch["params"])[rows.to(self.device)]
            candidates = self.with_target_error(make_candidates(params, batch["vertices"][rows.to(self.device)]),
                                                params, batch["vertices"][rows.to(self.device)])
            cache.put([keys[i] for i in stale], self.render_candidates(candidates, light[rows]))
        return cache.get(keys, self.device)

    def face_region(self, params: FaceParams, vertices: Tensor) -> Tensor:
        """(B, V) bool face region of true heads (NoW sphere of their 7 landmarks, displacement included)."""
        _, _, now = truth_landmarks(self.tools()[0], params, vertices, self.critic.render_settings.image_size)
        return face_region(vertices, now)

    def with_target_error(self, candidates: CandidateSet, params: FaceParams, vertices: Tensor) -> CandidateSet:
        """Candidates with ``error_mm`` measured by the critic's error target (the generator's is camera-frame)."""
        if self.critic.error_target != ALIGNED_FACE_REGION:
            return candidates
        error = aligned_face_error_mm(candidates.vertices, vertices, self.face_region(params, vertices))
        error[:, 0] = 0.0
        return type(candidates)(**{**vars(candidates), "error_mm": error})

    def target_error_fn(self, params: FaceParams):
        """``error_fn(vertices (B, C, V, 3), truth) -> (B, C)`` of the critic's target (ascent candidates)."""
        if self.critic.error_target != ALIGNED_FACE_REGION:
            return None
        return lambda vertices, truth: aligned_face_error_mm(vertices, truth, self.face_region(params, truth))

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        image = batch["image"]
        negatives = self.tools()[2]
        light = random_light_directions(image.shape[0], generator, spread=self.hparams.light_spread)
        if self.hparams.hand_made_weight > 0:
            rendered = self.cached_render(
                batch, self._train_cache, generator, light=light,
                make_candidates=lambda p, v: negatives.sample(p, v, self.hparams.num_negatives, generator))
            shaded = self._randomise_background(rendered, generator)
            image, shaded = augment_pairs(image, shaded, generator, self.critic.render_settings.mirror_order())
            scores = self.score(image, shaded)
            losses = self.objective(scores, rendered.error_mm)
            losses["total"] = self.hparams.hand_made_weight * losses["total"]
        else:
            losses = {"total": image.new_zeros(())}
        if self.ascent.active(self.global_step):
            losses = self._add_ascent_loss(batch, light, generator, losses)
        if self.gradient.config.faces_per_step:
            face_model, renderer, _ = self.tools()
            group = self.gradient.losses(self.critic, face_model, renderer, batch, generator)
            losses = {**losses, **{f"gradient.{k}": v.detach() for k, v in group.items()},
                      "total": losses["total"] + self.gradient.config.weight * group["total"]}
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=image.shape[0])
        self.log("train/loss", losses["total"], prog_bar=True, batch_size=image.shape[0])
        every = self.hparams.log_images_every_n_steps
        if every and self.global_step % every == 0 and self.hparams.hand_made_weight > 0:
            self._log_grid("train/pairs", image, shaded, scores, rendered.error_mm)
        return losses["total"]

    def _add_ascent_loss(self, batch: dict[str, Any], light: Tensor, generator: torch.Generator,
                         losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rank [truth, start, end] of a climb of the current critic (see ``critic_ascent``)."""
        face_model = self.tools()[0]
        n = min(self.ascent.faces_per_step, batch["image"].shape[0])
        params = FaceParams.from_dict(batch["params"])[torch.arange(n, device=self.device)]
        rendered = ascent_candidates(self.critic, face_model, self._vertex_renderer(light[:n]), batch["image"][:n],
                                     params, batch["vertices"][:n], self.ascent, generator,
                                     error_fn=self.target_error_fn(params))
        image, shaded = augment_pairs(batch["image"][:n], self._randomise_background(rendered, generator), generator,
                                      self.critic.render_settings.mirror_order())
        ascent_losses = self.objective(self.score(image, shaded), rendered.error_mm)
        climbed = rendered.error_mm[:, 2] - rendered.error_mm[:, 1]
        losses = dict(losses)
        losses["ascent"] = ascent_losses["total"]
        losses["ascent_error_change_mm"] = climbed.mean().detach()
        losses["total"] = losses["total"] + self.ascent.weight * ascent_losses["total"]
        return losses

    def _add_group_loss(self, name: str, image: Tensor, rendered: RenderedCandidates, weight: float,
                        generator: torch.Generator, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        image, shaded = augment_pairs(image, self._randomise_background(rendered, generator), generator,
                                      self.critic.render_settings.mirror_order())
        group = self.objective(self.score(image, shaded), rendered.error_mm)
        return {**losses, name: group["total"], "total": losses["total"] + weight * group["total"]}

    def _vertex_renderer(self, light: Tensor):
        """``render(vertices (N,V,3), camera (N,3))`` for N = a multiple of len(light) (one light per face)."""
        face_model, renderer, _ = self.tools()
        light = light.to(self.device)

        def render(vertices: Tensor, camera: Tensor):
            return renderer(mesh_for_rendering(vertices, face_model.faces), camera,
                            light_direction=light.repeat_interleave(len(vertices) // len(light), dim=0))
        return render

    def validation_candidates(self, params: FaceParams, vertices: Tensor, seed: int) -> CandidateSet:
        """Fixed per seed: 2 negatives of every type, severities spread over (0, 1]."""
        generator = torch.Generator().manual_seed(seed)
        b, types = params.batch_size, self.perturbation.types
        type_index = torch.tensor([negative_types().index(t) for t in types]).repeat(2)[None].repeat(b, 1)
        severity = torch.rand(type_index.shape, generator=generator).clamp(min=0.05)
        return self.tools()[2].build(params, vertices, type_index, severity, generator)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image = batch["image"]
        default_light = torch.tensor([DEFAULT_LIGHT_DIRECTION]).expand(image.shape[0], 3)
        rendered = self.cached_render(
            batch, self._val_cache, torch.Generator().manual_seed(0), light=default_light,
            make_candidates=lambda p, v: self.validation_candidates(p, v, seed=10_000 + batch_idx))
        # the cached validation errors follow the critic's error target (see ``with_target_error``)
        shaded = rendered.shaded.float()
        scores = self.score(image, shaded)
        losses = self.objective(scores, rendered.error_mm)
        self.log("val/loss", losses["total"], prog_bar=True, batch_size=image.shape[0])
        self._val_outputs.append({"scores": scores.cpu(), "error": rendered.error_mm.cpu(),
                                  "type": rendered.type_index.cpu()})
        if batch_idx == 0:
            self._log_grid("val/pairs", image, shaded, scores, rendered.error_mm)
            self._log_gradient_probe(batch, default_light)
            self._log_gate_figures(batch)

    def _log_gradient_probe(self, batch: dict[str, Any], light: Tensor) -> None:
        n = min(self.hparams.val_gradient_faces, batch["image"].shape[0])
        if n == 0:
            return
        with torch.inference_mode(False):  # validation runs in inference mode; the probe needs autograd
            params = FaceParams.from_dict({k: v[:n].clone() for k, v in batch["params"].items()})
            probe = gradient_probe(self.critic, self.tools()[0], self._vertex_renderer(light[:n].clone()),
                                   batch["image"][:n].clone(), params, batch["vertices"][:n].clone()).summary()
        self.log_dict({f"val/{k}": v for k, v in probe.items()}, batch_size=n)

    def _log_gate_figures(self, batch: dict[str, Any]) -> None:
        """``val/gradient_cosine``, ``val/climb.*`` ... on the first ``val_gate_faces`` faces (fixed starts)."""
        n = min(self.hparams.val_gate_faces, batch["image"].shape[0])
        if n == 0:
            return
        face_model, renderer, _ = self.tools()
        with torch.inference_mode(False):  # validation runs in inference mode; the figures need autograd
            plain = {k: (v[:n].clone() if isinstance(v, Tensor) else {kk: vv[:n].clone() for kk, vv in v.items()})
                     for k, v in batch.items() if k in ("image", "params", "vertices", "index")}
            figures = self.gradient.validation_figures(self.critic, face_model, renderer, plain)
        self.log_dict({f"val/{k}": v for k, v in figures.items()}, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        metrics = ranking_metrics(*(torch.cat([o[k] for o in self._val_outputs]) for k in ("scores", "error", "type")))
        self._val_outputs.clear()
        auc_2mm = metrics.pop("auc_2mm")
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=False)
        self.log("val/auc_2mm", auc_2mm, prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.hparams.learning_rate,
                                      weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule == "constant":  # a run of open length (resumed until it is good enough)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
        else:
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.hparams.learning_rate, total_steps=total,
                                                            pct_start=0.05, anneal_strategy="cos")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _log_grid(self, tag: str, image: Tensor, shaded: Tensor, scores: Tensor, error: Tensor, rows: int = 4) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        from torchvision.utils import make_grid

        rows = min(rows, image.shape[0])
        order = error[:rows].argsort(dim=1)  # columns: candidates by increasing error
        shaded = torch.stack([shaded[i, order[i], :1] for i in range(rows)])  # the main light's channel
        tiles = torch.cat([image[:rows, None], shaded[:rows].expand(-1, -1, 3, -1, -1)], dim=1)
        experiment.add_image(tag, make_grid(tiles.flatten(0, 1).detach().float().cpu(), nrow=tiles.shape[1]),
                             self.global_step)
        text = "\n".join(" ".join(f"{e:.1f}mm:{s:+.2f}" for e, s in zip(error[i, order[i]].tolist(),
                                                                      scores[i, order[i]].tolist())) for i in range(rows))
        experiment.add_text(tag + "_scores", text, self.global_step)


def ranking_metrics(scores: Tensor, error: Tensor, type_index: Tensor) -> dict[str, float]:
    """scores, error (mm), type_index (N, C) with column 0 the positive -> AUCs and mean Spearman."""
    positives = scores[:, 0]
    negatives = type_index >= 0
    hard = negatives & (error >= AUC_ERROR_THRESHOLD_MM)
    metrics = {"auc_2mm": auc(positives, scores[hard]), "auc_all": auc(positives, scores[negatives])}
    for i, name in enumerate(negative_types()):
        selected = type_index == i
        if selected.any():
            metrics[f"auc_{name}"] = auc(positives, scores[selected])
    per_face = [spearman(scores[i], error[i]) for i in range(scores.shape[0])]
    metrics["spearman"] = float(torch.tensor(per_face).nanmean())
    metrics["pos_neg_gap"] = float(positives.mean() - scores[hard].mean()) if hard.any() else float("nan")
    return metrics


def augment_pairs(image: Tensor, shaded: Tensor, generator: torch.Generator,
                  mirror_order: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """Geometry-consistent augmentation: mirror image and renders together; jitter the image's colour.

    image (B,3,H,W), shaded (B,C,K,H,W). Mirroring both keeps every pair's geometry error unchanged;
    a mirrored render's K light channels are reordered by ``mirror_order`` (its lights mirror too).
    """
    b = image.shape[0]
    flip = (torch.rand(b, generator=generator) < 0.5).to(image.device)
    image = torch.where(flip[:, None, None, None], image.flip(-1), image)
    mirrored = shaded.flip(-1) if mirror_order is None else shaded.flip(-1)[:, :, mirror_order]
    shaded = torch.where(flip[:, None, None, None, None], mirrored, shaded)
    gain = (0.8 + 0.4 * torch.rand(b, 3, 1, 1, generator=generator)).to(image)
    offset = (0.1 * torch.rand(b, 1, 1, 1, generator=generator) - 0.05).to(image)
    return (image * gain + offset).clamp(0, 1), shaded


def widened_input(initial: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """``initial`` weights for a critic with more render channels: the first layer's new input channels
    start at zero, so the widened critic scores exactly as the one it starts from (then learns to use them)."""
    out = dict(initial)
    for name, weight in initial.items():
        wanted = target[name].shape
        if weight.shape != wanted and weight.ndim == 4 and weight.shape[0] == wanted[0] and weight.shape[1] < wanted[1]:
            missing = weight.new_zeros(wanted[0], wanted[1] - weight.shape[1], *weight.shape[2:])
            out[name] = torch.cat([weight, missing], 1)
    return out
