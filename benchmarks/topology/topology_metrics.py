"""``topology.*`` figures: does the critic judge shape on meshes of other families and coverage?

One implementation, used by ``benchmarks.critic`` and critic validation. For every held-out face and
every variant (``topology.BENCHMARK_VARIANTS``: a face-only mask and a decimated head, boundaries and a
decimation that training never uses), the true surface and its same-topology negatives (every
``geometry_negatives`` type at ``SEVERITIES``) are rendered in the face's true camera and scored:

* ``topology.face_mask_auc`` / ``topology.remeshed_auc``: true surfaces against their negatives
  whose aligned face-region error is >= 2 mm (pooled over faces). Goal >= 0.9.
* ``topology.smoothing_spearman``: Spearman(score, smoothing strength) over the positive (strength 0)
  and both smoothing types, per image and variant, averaged. Goal <= -0.7.
* ``topology.true_wins_fraction``: share of (image, variant) pairs where the true surface outscores
  every negative whose error is >= 1 mm (smaller ones are near-ties). Goal >= 0.8.
* ``topology.beaten_by``: per negative type, the share of (image, variant) pairs where one of its
  negatives with error >= 1 mm outscores the true surface (None: the type never reaches 1 mm). It says
  which kind of shape error a critic cannot see, the diagnosis behind a low true-wins fraction.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.topology import geometry_negatives
from regressor.critic.negatives import mesh_for_rendering
from regressor.critic.objective import auc, spearman
from benchmarks.topology.topology import BENCHMARK_VARIANTS, build_variant, surface_candidates

SEVERITIES = (0.25, 0.5, 0.75, 1.0)
AUC_ERROR_MM = 2.0
WIN_ERROR_MM = 1.0
GOALS = {"topology.face_mask_auc": ">= 0.9", "topology.remeshed_auc": ">= 0.9",
         "topology.smoothing_spearman": "<= -0.7", "topology.true_wins_fraction": ">= 0.8"}
AUC_NAMES = {"face_mask": "topology.face_mask_auc", "remeshed": "topology.remeshed_auc"}


@torch.no_grad()
def score_surface_candidates(critic, renderer, image: Tensor, candidates, camera: Tensor) -> Tensor:
    """(C,) scores of one face's candidates (one image (3, H, W), one camera (3,))."""
    c = candidates.vertices.shape[0]
    renders = renderer(mesh_for_rendering(candidates.vertices, candidates.faces), camera[None].expand(c, 3))
    images = image[None].expand(c, -1, -1, -1)
    if getattr(critic, "takes_renders", False):  # a reference scorer (``light_fit.LightFitScorer``) reads normals
        return critic(images, renders)
    return critic(images, renders.shaded)


@torch.no_grad()
def topology_figures(critic, renderer, image: Tensor, vertices: Tensor, faces: Tensor, now_landmarks: Tensor,
                     landmarks: Tensor, camera: Tensor, variants: tuple[str, ...] = BENCHMARK_VARIANTS,
                     seed: int = 0) -> dict[str, float]:
    """The module docstring's figures for B faces: image (B, 3, H, W), vertices (B, V, 3) true heads,
    now_landmarks (B, 7, 3), landmarks (B, 68, 3), camera (B, 3); ``renderer`` draws the loss-time render."""
    was_training = critic.training
    critic.eval()
    types = list(geometry_negatives.geometry_negative_types())
    type_list = [t for t in types for _ in SEVERITIES]
    severity = torch.tensor(list(SEVERITIES) * len(types))
    smoothing = [types.index("smooth_free"), types.index("smooth_pinned")]
    positives: dict[str, list] = {v: [] for v in variants}
    hard: dict[str, list] = {v: [] for v in variants}
    spearmans, wins = [], []
    beaten_by: dict[str, list[bool]] = {t: [] for t in types}
    try:
        for i in range(image.shape[0]):
            generator = torch.Generator().manual_seed(seed * 100_003 + i)
            for kind in variants:
                surface = build_variant(kind, vertices[i], faces, now_landmarks[i], landmarks[i])
                candidates = surface_candidates(surface, now_landmarks[i], landmarks[i], type_list, severity, generator)
                scores = score_surface_candidates(critic, renderer, image[i], candidates, camera[i]).cpu()
                error = candidates.error_mm.cpu()
                positives[kind].append(scores[:1])
                hard[kind].append(scores[1:][error[1:] >= AUC_ERROR_MM])
                rows = torch.isin(candidates.type_index, torch.tensor(smoothing))
                rows[0] = True
                spearmans.append(spearman(scores[rows], candidates.severity[rows]))
                counted = error >= WIN_ERROR_MM
                counted[0] = False
                beaten = scores[counted]
                wins.append(bool(beaten.numel() == 0 or scores[0] > beaten.max()))
                for t, name in enumerate(types):
                    rows = counted & (candidates.type_index == t)
                    if rows.any():
                        beaten_by[name].append(bool((scores[rows] >= scores[0]).any()))
    finally:
        critic.train(was_training)
    out = {}
    for kind in variants:
        name = AUC_NAMES.get(kind, f"topology.{kind}_auc")
        out[name] = auc(torch.cat(positives[kind]), torch.cat(hard[kind]))
        out[f"{name}_negatives"] = int(sum(len(h) for h in hard[kind]))
    out["topology.smoothing_spearman"] = float(torch.tensor(spearmans).nanmean())
    out["topology.true_wins_fraction"] = float(torch.tensor(wins, dtype=torch.float).mean())
    out["topology.beaten_by"] = {name: (sum(hits) / len(hits) if hits else None) for name, hits in beaten_by.items()}
    out["topology.num_faces"] = int(image.shape[0])
    out["topology.variants"] = list(variants)
    return out
