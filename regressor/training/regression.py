"""``RegressorModule``: Lightning glue for encoder -> FaceModel -> Renderer -> LossStack.

Everything that computes something lives in plain modules (``regressor.inference.
ReconstructionPipeline``, ``regressor.losses.LossStack``); this class only wires them to a
Trainer: it logs every loss term as ``loss/<name>`` and ``loss/total``, computes the
validation/test metrics when ground truth exists, and decides what a non-finite loss does.

Metrics (``val/...`` and ``test/...``, synchronised across DDP ranks):

* ``vertex_error_mm``: mean per-vertex distance to the ground-truth mesh, no alignment (the
  predicted and true meshes are both in model space, so this includes pose error);
* ``vertex_error_aligned_mm``: the same after a similarity (scale, rotation, translation)
  Procrustes alignment of all vertices, i.e. the shape error alone;
* ``face_error_aligned_mm``: the same on the face region NoW scores (what the shipped model is
  selected by: scalp and neck are barely visible in a face crop), logged beside
  ``mean_face_error_aligned_mm``, the mean face's on the same faces (the trivial baseline);
* ``landmark_error_px``: mean distance of the projected 68 landmarks to the targets (valid only);
* ``critic_score``: mean score of the critic in the loss stack (or of ``metric_critic``).
"""
from __future__ import annotations

import warnings
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

from regressor.components import as_component
from regressor.evaluation.metrics import landmark_error_px, vertex_errors_mm
from regressor.face_model.protocol import FaceModelProtocol
from regressor.models.encoder import FaceEncoder
from regressor.pipeline import Reconstruction, assemble_pipeline, pipeline_description, pipeline_specs
from regressor.render import Renderer
from regressor.losses import LossStack, NonFiniteLossError
from regressor.types import FaceBatch, LossInputs

DEFAULT_LOSSES: list[dict[str, Any]] = [
    {"name": "photometric", "weight": 1.0},
    {"name": "landmarks", "weight": 1.0},
    {"name": "regularizers", "weight": 1.0},
]


class RegressorModule(pl.LightningModule):
    """Self-supervised face regressor.

    The three pipeline components are typed (``class_path``/``init_args`` in yaml)::

        model:
          class_path: regressor.training.regression.RegressorModule
          init_args:
            encoder: {class_path: regressor.models.encoder.FaceEncoder, init_args: {backbone: resnet18}}
            renderer: {class_path: regressor.render.Renderer, init_args: {backend: torch}}
        face_model: {class_path: regressor.face_model.FaceModel, init_args: {model_path: ...}}  # top level

    Args:
        encoder: the ``FaceEncoder`` (timm backbone, ``pretrained=False`` always); default
            ``FaceEncoder()``. Its head sizes are the face model's (a different ``n_shape`` ... in its
            init_args is replaced).
        face_model: a ``FaceModelProtocol`` (default: the built-in stand-in). The CLI links the
            config's top-level ``face_model`` here and into the data module.
        renderer: the ``Renderer`` (default ``Renderer()``); its size is ``image_size``.
        image_size: input and render size in pixels (linked to the data module's by the CLI).
        losses: the loss stack, a list of ``{name, weight, **kwargs}`` (see ``regressor.losses``).
        lr, weight_decay: AdamW settings for the encoder (the only trained part).
        scheduler: ``"none"``, ``"cosine"`` (per-step cosine decay to 1% over the whole run) or
            ``"onecycle"`` (5% linear warm-up, then cosine; what the shipped regressor uses:
            a from-scratch backbone at a full learning rate on step 0 diverges its BatchNorm).
        nan_policy: on a non-finite loss, ``"skip"`` the step (counted, logged as
            ``train/skipped_steps``, with a warning naming the term) or ``"stop"`` (re-raise).
        metric_critic: critic checkpoint for the ``critic_score`` metric when the loss stack has
            no ``perceptual_shape`` term.
        geometry_warmup_steps: train the pose, camera, albedo and light heads alone for this many
            steps, with the shape, expression and jaw heads held at the mean face. Why: at step 0
            the landmark gradient is dominated by camera and pose, and geometry heads that learn
            at the same time bend the shape to absorb pose residuals (the self-supervised mode
            then ends worse than the mean face early in training; docs/results/regression_recipe.md).
            When the warm-up ends, those heads' optimiser state is reset so that Adam starts them
            afresh instead of with a large first step.
        init_checkpoint: start from the weights of a regressor checkpoint (a ``regressor fit``
            ``.ckpt`` or an exported file such as the shipped ``checkpoints/regressor.ckpt``);
            the backbone and encoder settings must match. ``--ckpt_path`` resumes a run instead.
    """

    def __init__(
        self,
        encoder: Optional[FaceEncoder] = None,
        face_model: Optional[FaceModelProtocol] = None,
        renderer: Optional[Renderer] = None,
        image_size: int = 64,
        losses: Optional[list[dict[str, Any]]] = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: Literal["none", "cosine", "onecycle"] = "none",
        nan_policy: Literal["skip", "stop"] = "skip",
        metric_critic: Optional[str] = None,
        init_checkpoint: Optional[str] = None,
        geometry_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if nan_policy not in ("skip", "stop"):
            raise ValueError(f"nan_policy must be 'skip' or 'stop', got {nan_policy!r}")
        self.save_hyperparameters(ignore=["encoder", "face_model", "renderer"])
        self.pipeline = assemble_pipeline(as_component(encoder, "RegressorModule encoder"),
                                          as_component(face_model, "RegressorModule face_model"),
                                          as_component(renderer, "RegressorModule renderer"), image_size)
        # The components as {class_path, init_args} specs: what Reconstructor.from_checkpoint and the
        # exported regressor file rebuild the pipeline from (regressor.pipeline.build_pipeline).
        self.hparams.update(pipeline_description(self.pipeline))
        self.loss_stack = LossStack(losses if losses else DEFAULT_LOSSES)
        self.loss_stack.check_renderer(self.pipeline.renderer)
        self.loss_stack.bind_face_model(self.pipeline.face_model)
        if init_checkpoint is not None:
            self._load_initial_weights(init_checkpoint)
        self.metric_critic = None
        if metric_critic is not None:
            from regressor.losses.perceptual import PerceptualShapeLoss

            self.metric_critic = PerceptualShapeLoss(checkpoint=metric_critic)
            self.metric_critic.check_renderer(self.pipeline.renderer)
        self.skipped_steps = 0
        self._warned_topology = False

    @classmethod
    def from_flat(cls, backbone: Optional[str] = None, n_shape: Optional[int] = None, n_expression: Optional[int] = None,
                  n_albedo: Optional[int] = None, image_size: int = 64, encoder: Optional[dict[str, Any]] = None,
                  face_model: Optional[dict[str, Any]] = None, renderer: Optional[dict[str, Any]] = None,
                  **training: Any) -> "RegressorModule":
        """Python shorthand: the flat pipeline description (``backbone``, sizes, kwargs dicts; what
        exported regressor files and older checkpoints hold) plus any training argument."""
        from regressor.components import build_component
        from regressor.face_model import build_face_model

        flat = {k: v for k, v in dict(backbone=backbone, n_shape=n_shape, n_expression=n_expression,
                                      n_albedo=n_albedo).items() if v is not None}
        specs = pipeline_specs(image_size, encoder, face_model, renderer, **flat)
        return cls(encoder=build_component(specs["encoder"]), face_model=build_face_model(specs["face_model"]),
                   renderer=build_component(specs["renderer"]), image_size=image_size, **training)

    # ----------------------------------------------------------------------------- pieces
    def reconstruct(self, images: Tensor) -> Reconstruction:
        """(B, 3, H, W) images in [0, 1] -> params, mesh and renders."""
        return self.pipeline(images)

    forward = reconstruct

    def train(self, mode: bool = True) -> "RegressorModule":
        """The loss stack (frozen critic, priors) never trains; only the pipeline switches mode."""
        super().train(mode)
        self.loss_stack.train(False)
        if self.metric_critic is not None:
            self.metric_critic.train(False)
        return self

    def _critic_term(self):
        for term in self.loss_stack.terms.values():
            if hasattr(term, "critic") and hasattr(term, "score"):
                return term
        return self.metric_critic

    def _losses(self, batch: FaceBatch, result: Reconstruction) -> dict[str, Tensor]:
        inputs = LossInputs(batch=batch, params=result.params, mesh=result.mesh, renders=result.renders, step=self.global_step)
        return self.loss_stack(inputs)

    # ----------------------------------------------------------------------------- training
    GEOMETRY_HEADS = frozenset({"shape", "expression", "jaw_pose"})

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.apply_geometry_warmup(self.global_step, self.trainer.optimizers)

    def apply_geometry_warmup(self, step: int, optimizers: list[torch.optim.Optimizer]) -> None:
        """Mute the geometry heads before ``geometry_warmup_steps``; at release, unmute them and drop
        their state from ``optimizers`` (Lightning calls this per batch; a hand-written loop may too)."""
        warmup = self.hparams.get("geometry_warmup_steps", 0)
        if warmup <= 0:
            return
        encoder = self.pipeline.encoder
        in_warmup = step < warmup
        if in_warmup != bool(encoder.muted_heads):
            encoder.mute_heads(self.GEOMETRY_HEADS if in_warmup else frozenset())
            if not in_warmup:
                for optimizer in optimizers:
                    for name in self.GEOMETRY_HEADS:
                        for parameter in encoder.heads[name].parameters():
                            optimizer.state.pop(parameter, None)

    def on_fit_start(self) -> None:
        """Say once which precision the encoder computes in here (bf16 only where the hardware has it)."""
        from pytorch_lightning.utilities import rank_zero_info

        from regressor.models.precision import describe, precision_report

        setting = getattr(self.pipeline.encoder, "bf16", False)
        report = precision_report(setting, self.device)
        rank_zero_info(f"encoder precision: {report['precision']} (bf16={setting!r}; {describe(self.device)})")
        if self.logger is not None:
            capability = report["cpu_capability"]
            self.logger.log_hyperparams({"encoder_precision": report["precision"],
                                         "cpu_capability": capability["torch_cpu_capability"],
                                         "cpu_native_bf16": ",".join(capability["native_bf16_flags"]) or "none"})

    def on_train_end(self) -> None:
        self.pipeline.encoder.mute_heads(frozenset())

    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:
        face_batch = FaceBatch.from_dict(batch)
        # A skipped step must leave no trace: the forward pass alone updates BatchNorm
        # statistics (with NaNs, if the batch produced them), so keep a copy to restore.
        buffers = [b.detach().clone() for b in self.pipeline.encoder.buffers()] if self.hparams.nan_policy == "skip" else None
        # Rasterise only when a term active at this step reads pixels (see LossTerm.needs_images).
        result = self.pipeline(face_batch.image, render_images=self.loss_stack.needs_images(self.global_step))
        try:
            losses = self._losses(face_batch, result)
        except NonFiniteLossError as error:
            if buffers is not None:
                with torch.no_grad():
                    for buffer, saved in zip(self.pipeline.encoder.buffers(), buffers):
                        buffer.copy_(saved)
            return self._non_finite(error)
        batch_size = face_batch.batch_size
        for name, value in losses.items():
            self.log(f"loss/{name}", value.detach(), batch_size=batch_size, prog_bar=name == "total")
        return losses["total"]

    def _non_finite(self, error: NonFiniteLossError) -> Optional[Tensor]:
        if self.hparams.nan_policy == "stop":
            error.add_note("nan_policy='stop'; set model.init_args.nan_policy: skip to skip such steps instead")
            raise error
        self.skipped_steps += 1
        warnings.warn(f"skipping training step {self.global_step}: {error} (skipped so far: {self.skipped_steps})", RuntimeWarning, stacklevel=2)
        self.log("train/skipped_steps", float(self.skipped_steps), reduce_fx="max")
        if self.trainer.world_size > 1:
            # Returning None would desynchronise DDP's gradient all-reduce; a zero loss
            # connected to every trained parameter keeps the ranks in step (zero gradients).
            return sum(p.sum() for p in self.pipeline.encoder.parameters() if p.requires_grad) * 0.0
        return None

    # ----------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _load_initial_weights(self, path: str) -> None:
        """Start from another regressor's weights (fine-tuning); the architectures must match."""
        from regressor.inference import load_pipeline

        source = load_pipeline(path)
        try:
            self.pipeline.load_state_dict(source.state_dict(), strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[0][:300]
            raise ValueError(f"init_checkpoint {path} does not fit this model (encoder "
                             f"{self.hparams.encoder}): {first}") from None

    def _face_region(self, device: torch.device) -> Tensor:
        """(V,) bool: the face-model vertices NoW scores (cached; see losses.supervised.face_region_mask)."""
        if getattr(self, "_face_mask", None) is None or self._face_mask.device != device:
            from regressor.losses.supervised import face_region_mask

            self._face_mask = face_region_mask(self.pipeline.face_model).to(device)
        return self._face_mask

    def evaluation_metrics(self, batch: FaceBatch, result: Reconstruction) -> dict[str, Tensor]:
        """(B,) per-sample metrics available for this batch (see the module docstring)."""
        metrics = {
            "landmark_error_px": landmark_error_px(result.renders.landmarks2d, batch.landmarks, batch.landmarks_valid)
        }
        if batch.vertices is not None:
            if batch.vertices.shape == result.mesh.vertices.shape:
                metrics["vertex_error_mm"], metrics["vertex_error_aligned_mm"] = vertex_errors_mm(result.mesh.vertices, batch.vertices)
                face = self._face_region(result.mesh.vertices.device)
                _, metrics["face_error_aligned_mm"] = vertex_errors_mm(result.mesh.vertices[:, face], batch.vertices[:, face])
                # The trivial baseline beside the learned figure: the mean face, same faces, same metric.
                model = self.pipeline.face_model
                mean_face = model(model.zero_params(batch.batch_size, device=batch.vertices.device)).vertices
                _, metrics["mean_face_error_aligned_mm"] = vertex_errors_mm(mean_face[:, face], batch.vertices[:, face])
            elif not self._warned_topology:
                self._warned_topology = True
                warnings.warn(
                    f"ground-truth vertices {tuple(batch.vertices.shape)} do not match the face model's "
                    f"{tuple(result.mesh.vertices.shape)}: vertex metrics need the same topology and are not "
                    "logged (use regressor.evaluation.now for scans of another topology)", RuntimeWarning, stacklevel=2,
                )
        critic = self._critic_term()
        if critic is not None:
            metrics["critic_score"] = critic.score_renders(batch.image, result.renders)
        return metrics

    def _evaluate(self, batch: Any, stage: str) -> None:
        face_batch = FaceBatch.from_dict(batch)
        result = self.reconstruct(face_batch.image)
        batch_size = face_batch.batch_size
        try:
            losses = self._losses(face_batch, result)
        except NonFiniteLossError as error:
            warnings.warn(f"{stage}: {error}; this batch's losses are not logged", RuntimeWarning, stacklevel=2)
            losses = {}
        for name, value in losses.items():
            self.log(f"{stage}/loss/{name}", value, batch_size=batch_size, sync_dist=True)
        for name, values in self.evaluation_metrics(face_batch, result).items():
            self.log(f"{stage}/{name}", values.mean(), batch_size=batch_size, sync_dist=True, prog_bar=stage == "val")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Reconstruction:
        if isinstance(batch, Tensor):
            images, names = batch, None
        elif isinstance(batch, (list, tuple)):
            images, names = batch[0], None
        else:
            images, names = batch["image"], batch.get("name")
        result = self.reconstruct(images)
        result.names = list(names) if names is not None else None
        return result

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        optimizer, scheduler = self.build_optimization(max(1, int(self.trainer.estimated_stepping_batches)))
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimization(self, total_steps: int) -> tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler]]:
        """The AdamW optimiser and the per-step LR schedule (None for ``scheduler: none``) of a
        ``total_steps`` run: what ``configure_optimizers`` gives the Trainer, for hand-written loops too."""
        trained = [p for p in self.pipeline.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.scheduler == "none":
            return optimizer, None
        if self.hparams.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=total_steps + 1,
                                                            pct_start=0.05)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
                                                                   eta_min=self.hparams.lr * 0.01)
        return optimizer, scheduler

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
