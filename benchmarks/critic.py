"""Measure a shape critic: ranking AUC, Spearman vs error, topology independence, gradient usefulness.

``python -m benchmarks.critic --checkpoint checkpoints/critic.pt --json PATH``

All figures are measured on held-out synthetic faces, seeds ``SPLIT_SEEDS["test"] + i`` (never
used by critic training, which uses ``critic_train``/``critic_val``), rendered with the loss-time
``Renderer`` defaults (64 px, light direction (0, 0.4, 1), black background):

1. ``auc_2mm``: positives against graded negatives (every type at 5 severities) whose mean vertex
   error is >= 2 mm. Goal >= 0.95.
2. ``spearman``: Spearman(score, error) over the positive and the 45 graded negatives of one face,
   averaged over faces. Goal <= -0.7.
3. ``topology_ratio``: mean |score(mesh) - score(subdivided mesh)| (pytorch3d ``SubdivideMeshes``:
   same surface, 4x the triangles, different vertex normals) over the positives and one negative
   per type, divided by the positive/negative gap. Goal < 0.1.
4. ``gradient_fraction``: from the true pose/camera with identity + expression perturbed (0.8 std
   per coefficient), 30 Adam steps (lr 0.05) on shape and expression that maximise the critic score
   alone; fraction of faces whose mean vertex error (against the truth) went down. Goal: most (> 0.5).
   ``gradient_normalised_*`` repeats it with fixed-length steepest-ascent steps, and
   ``*_visible_*`` measure the error on the vertices visible in the image only (secondary figures).
5. ``operating_point.*`` and ``interior_sensitivity_fraction``: at the pose and camera of
   the no-critic fitter on noisy landmarks (σ 1.5 px; ``regressor.critic.fits``, cached under
   ``--fit-cache``), on ``--op-faces`` faces; definitions and goals in ``regressor.critic.operating_point``.
6. ``topology.*``: face-only masks and decimated heads never used in training, against
   their same-topology negatives, on ``--topology-faces`` faces; see ``benchmarks.topology.topology_metrics``.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.output import write_json

from regressor.critic.negatives import NegativeGenerator, candidate_meshes, negative_types
from regressor.critic.fits import cached_fits
from regressor.critic.operating_point import GOALS as OPERATING_POINT_GOALS
from regressor.critic.operating_point import operating_point_figures, vertex_renderer
from regressor.critic.probe import gradient_probe
from regressor.critic.target import face_region
from benchmarks.topology.topology_metrics import GOALS as TOPOLOGY_GOALS
from benchmarks.topology.topology_metrics import topology_figures as surface_topology_figures
from regressor.critic.objective import auc, spearman
from regressor.models.critic import ShapeCritic
from regressor.render.renderer import mesh_for_rendering
from regressor.synthetic.splits import SPLIT_SEEDS
from regressor.types import FaceMesh, replace

SEVERITIES = (0.1, 0.25, 0.45, 0.7, 1.0)
GOALS = {"auc_2mm": ">= 0.95", "spearman": "<= -0.7", "topology_ratio": "< 0.1", "gradient_fraction": "> 0.5",
         **OPERATING_POINT_GOALS, **TOPOLOGY_GOALS}
FIT_CACHE = "outputs/critic_fit_cache"
FIT_SIZE = 64  # the no-critic fits of the operating-point figures are made at this size for every critic


def load_faces(face_model, num_faces: int, image_size: int, seed_offset: int, split: str = "test",
               synthetic: str = "default"):
    """The first ``num_faces`` faces of ``split`` rendered with ``SyntheticConfig.preset(synthetic)``, and their seeds."""
    from regressor.synthetic.generator import SyntheticConfig, SyntheticFaceGenerator

    seeds = [SPLIT_SEEDS[split] + seed_offset + i for i in range(num_faces)]
    generator = SyntheticFaceGenerator(face_model, image_size, SyntheticConfig.preset(synthetic))
    with torch.no_grad():
        return generator.generate(seeds), seeds


@torch.no_grad()
def score_candidates(critic, renderer, faces, image, candidates, chunk: int = 256):
    """image (B,3,H,W), CandidateSet (B,C) -> scores (B,C) with the renderer's default light."""
    b, c = candidates.error_mm.shape
    mesh = candidate_meshes(candidates, faces)
    camera = candidates.camera.reshape(b * c, 3)
    images = image.repeat_interleave(c, dim=0)
    scores = []
    for i in range(0, b * c, chunk):
        part = replace(mesh, vertices=mesh.vertices[i:i + chunk], landmarks3d=mesh.landmarks3d[i:i + chunk],
                       now_landmarks3d=mesh.now_landmarks3d[i:i + chunk])
        scores.append(critic(images[i:i + chunk], renderer(part, camera[i:i + chunk]).shaded))
    return torch.cat(scores).reshape(b, c)


def graded_candidates(negatives: NegativeGenerator, batch, seed: int):
    types = torch.tensor([negative_types().index(t) for t in negative_types()]).repeat_interleave(len(SEVERITIES))
    severity = torch.tensor(SEVERITIES).repeat(len(negative_types()))
    b = batch.params.batch_size
    generator = torch.Generator().manual_seed(seed)
    return negatives.build(batch.params, batch.vertices, types[None].repeat(b, 1), severity[None].repeat(b, 1), generator)


def ranking_figures(scores, candidates) -> dict:
    error, types = candidates.error_mm, candidates.type_index
    positives = scores[:, 0]
    hard = (types >= 0) & (error >= 2.0)
    out = {"auc_2mm": auc(positives, scores[hard]), "num_negatives_2mm": int(hard.sum()),
           "spearman": float(torch.tensor([spearman(scores[i], error[i]) for i in range(len(scores))]).nanmean()),
           "pos_neg_gap": float(positives.mean() - scores[hard].mean()), "per_type": {}}
    for i, name in enumerate(negative_types()):
        sel = types == i
        per_face = [spearman(torch.cat([scores[f, :1], scores[f][sel[f]]]), torch.cat([error[f, :1], error[f][sel[f]]]))
                    for f in range(len(scores))]
        out["per_type"][name] = {
            "auc": auc(positives, scores[sel & hard]) if (sel & hard).any() else None,
            "spearman": float(torch.tensor(per_face).nanmean()),
            "mean_error_mm_by_severity": [round(float(error[:, sel[0]][:, j].mean()), 3) for j in range(len(SEVERITIES))],
        }
    return out


@torch.no_grad()
def topology_figures(critic, renderer, faces, image, candidates, gap: float) -> dict:
    from pytorch3d.ops import SubdivideMeshes
    from pytorch3d.structures import Meshes

    first_of_type = [0] + [1 + i * len(SEVERITIES) + 2 for i in range(len(negative_types()))]
    b = image.shape[0]
    verts = candidates.vertices[:, first_of_type].flatten(0, 1)
    cams = candidates.camera[:, first_of_type].flatten(0, 1)
    images = image.repeat_interleave(len(first_of_type), dim=0)
    zeros = verts.new_zeros
    original = critic(images, renderer(FaceMesh(verts, faces, zeros(len(verts), 68, 3), zeros(len(verts), 7, 3)), cams).shaded)
    subdivided = SubdivideMeshes()(Meshes(verts=list(verts), faces=[faces] * len(verts)))
    sub_verts = subdivided.verts_padded()
    sub_faces = subdivided.faces_list()[0]
    sub_mesh = FaceMesh(sub_verts, sub_faces, zeros(len(verts), 68, 3), zeros(len(verts), 7, 3))
    resubdivided = critic(images, renderer(sub_mesh, cams).shaded)
    delta = (original - resubdivided).abs()
    # Against |gap|: with a gap <= 0 the critic has failed anyway and the ratio is only informative.
    return {"topology_mean_abs_delta": float(delta.mean()), "topology_ratio": float(delta.mean() / max(abs(gap), 1e-9)),
            "subdivided_faces": int(sub_faces.shape[0]), "original_faces": int(faces.shape[0]), "num_meshes": int(len(verts)),
            "num_faces_images": b}


def gradient_figures(critic, renderer, face_model, batch, steps: int, lr: float, seed: int,
                     optimizer_name: str = "adam", prefix: str = "gradient") -> dict:
    """Raise the critic score alone by gradient steps on shape + expression; does the error fall?

    ``adam``: Adam(lr) on the coefficients (what fitting uses). ``normalised``: steepest ascent with
    a fixed step length ``lr`` per face in the joint (shape, expression) coefficient space, so each
    coefficient moves in proportion to its gradient (Adam moves every coefficient by about lr,
    including those the image barely constrains). The climb is ``regressor.critic.probe``'s, the
    same as training's ``val/gradient_fraction``, here on the model's own geometry.
    """
    faces = face_model.faces

    def render(vertices, camera):
        return renderer(mesh_for_rendering(vertices, faces), camera)

    result = gradient_probe(critic, face_model, render, batch.image, batch.params, batch.vertices, steps=steps,
                            learning_rate=lr, noise=0.8, seed=seed, optimizer=optimizer_name, keep_displacement=False)
    visible = visible_vertices(batch.vertices, faces, batch.params.camera, renderer.image_size)
    start, end = result.errors_mm()
    start_visible, end_visible = result.errors_mm(visible)
    return {f"{prefix}_fraction": float((end < start).float().mean()),
            f"{prefix}_error_start_mm": float(start.mean()), f"{prefix}_error_end_mm": float(end.mean()),
            f"{prefix}_relative_change": float(((end - start) / start).mean()),
            f"{prefix}_visible_fraction": float((end_visible < start_visible).float().mean()),
            f"{prefix}_visible_error_start_mm": float(start_visible.mean()),
            f"{prefix}_visible_error_end_mm": float(end_visible.mean()),
            f"{prefix}_score_start": float(result.score_start.mean()), f"{prefix}_score_end": float(result.score_end.mean()),
            f"{prefix}_optimizer": optimizer_name, f"{prefix}_steps": steps, f"{prefix}_lr": lr,
            f"{prefix}_num_faces": int(len(start))}


@torch.no_grad()
def visible_vertices(vertices, faces, camera, image_size) -> torch.Tensor:
    """(B, V) float: 1 for vertices of triangles that cover a pixel in the render of ``vertices``."""
    from regressor.render import project_weak_perspective, rasterize

    fragments = rasterize(project_weak_perspective(vertices, camera, image_size), faces, image_size, cull_backfaces=True)
    b, v, f = vertices.shape[0], vertices.shape[1], faces.shape[0]
    mask = torch.zeros(b, v)
    for i in range(b):
        hit = fragments.pix_to_face[i].reshape(-1)
        hit = hit[hit >= 0] - i * f
        mask[i, faces[hit.unique()].reshape(-1)] = 1.0
    return mask


def held_out_figures(critic, face_model, batch, op_faces: int, topology_faces: int, fit_cache: str | None,
                     fit_steps_scale: float = 0.5, fit_size: int = FIT_SIZE) -> dict:
    """The operating-point and topology figures on the first faces of ``batch`` (0 = skip).

    The no-critic fits are made at ``fit_size`` whatever the critic's resolution, so critics of different
    input sizes are measured at the same operating points (fitted parameters do not depend on the size).
    """
    from regressor.synthetic.displacement import displace_landmarks

    renderer = critic.render_settings.renderer(image_size=batch.image.shape[-1])
    with torch.no_grad():
        mesh = face_model(batch.params)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, batch.displacement)
        landmarks = displace_landmarks(mesh.landmarks3d, mesh.vertices, batch.displacement)
    figures = {}
    if op_faces:
        sub = _batch_first(batch, op_faces)
        fits = cached_fits(face_model, sub.image, sub.landmarks, sub.landmarks_valid, sub.seeds, fit_cache,
                           steps_scale=fit_steps_scale, fit_size=fit_size)
        region = face_region(sub.vertices, now[:op_faces])
        figures.update(operating_point_figures(critic, face_model, vertex_renderer(renderer, face_model.faces), sub.image,
                                               sub.vertices, sub.params, fits.final, fits.landmarks, sub.landmarks_valid,
                                               region))
        figures["operating_point.fit"] = {"landmark_noise_px": 1.5, "steps_scale": fit_steps_scale, "size": fit_size,
                                          "config": "configs/fitting/no_critic.yaml", "stages": fits.stages}
    if topology_faces:
        n = topology_faces
        figures.update(surface_topology_figures(critic, renderer, batch.image[:n], batch.vertices[:n], face_model.faces,
                                                now[:n], landmarks[:n], batch.params.camera[:n]))
    return figures


def run(checkpoint: str, num_faces: int = 48, gradient_faces: int = 24, gradient_steps: int = 30,
        gradient_lr: float = 0.05, image_size: int | None = None, seed_offset: int = 0, op_faces: int = 24,
        topology_faces: int = 12, fit_cache: str | None = FIT_CACHE) -> dict:
    """All figures; ``image_size`` None = the critic's own input size (a 128 px critic sees 128 px images)."""
    from regressor.face_model import build_face_model
    from regressor.render import Renderer

    torch.manual_seed(0)
    start = time.time()
    critic = ShapeCritic.from_checkpoint(checkpoint)
    image_size = image_size or critic.architecture["image_size"]
    face_model = build_face_model()
    renderer = critic.render_settings.renderer(image_size=image_size)
    faces = face_model.faces
    batch, seeds = load_faces(face_model, num_faces, image_size, seed_offset)
    negatives = NegativeGenerator(face_model)
    candidates = graded_candidates(negatives, batch, seed=1)
    scores = score_candidates(critic, renderer, faces, batch.image, candidates)
    figures = ranking_figures(scores, candidates)
    figures.update(topology_figures(critic, renderer, faces, batch.image[:16], _first(candidates, 16), figures["pos_neg_gap"]))
    g = min(gradient_faces, num_faces)
    sub = _batch_first(batch, g)
    figures.update(gradient_figures(critic, renderer, face_model, sub, gradient_steps, gradient_lr, seed=2))
    figures.update(gradient_figures(critic, renderer, face_model, sub, gradient_steps, 0.15, seed=2,
                                    optimizer_name="normalised", prefix="gradient_normalised"))
    figures.update(held_out_figures(critic, face_model, batch, min(op_faces, num_faces), min(topology_faces, num_faces),
                                    fit_cache))
    figures.update({"checkpoint": str(checkpoint), "seeds": f"SPLIT_SEEDS['test'] + {seed_offset} + [0, {num_faces})",
                    "num_faces": num_faces, "severities": list(SEVERITIES), "image_size": image_size,
                    "goals": GOALS, "seconds": round(time.time() - start, 1)})
    return figures


def _first(candidates, n: int):
    return type(candidates)(**{k: v[:n] for k, v in vars(candidates).items()})


def _batch_first(batch, n: int):
    return batch._map(lambda t: t[:n])  # every tensor field, FaceParams included


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/critic.pt")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--num-faces", type=int, default=48)
    parser.add_argument("--gradient-faces", type=int, default=24)
    parser.add_argument("--gradient-steps", type=int, default=30)
    parser.add_argument("--gradient-lr", type=float, default=0.05)
    parser.add_argument("--op-faces", type=int, default=24, help="faces of the operating-point figures (0 = skip)")
    parser.add_argument("--topology-faces", type=int, default=12, help="faces of the topology.* figures (0 = skip)")
    parser.add_argument("--image-size", type=int, default=None, help="image size (default: the critic's input size)")
    parser.add_argument("--fit-cache", default=FIT_CACHE, help="where the no-critic fits are cached ('' = no cache)")
    args = parser.parse_args(argv)
    figures = run(args.checkpoint, args.num_faces, args.gradient_faces, args.gradient_steps, args.gradient_lr,
                  image_size=args.image_size, op_faces=args.op_faces, topology_faces=args.topology_faces,
                  fit_cache=args.fit_cache or None)
    for key in ("auc_2mm", "spearman", "topology_ratio", "gradient_fraction"):
        print(f"{key:>20}: {figures[key]:.3f}   (goal {GOALS[key]})")
    print(f"{'gradient error':>20}: {figures['gradient_error_start_mm']:.2f} -> {figures['gradient_error_end_mm']:.2f} mm"
          f" (Adam); normalised ascent: fraction {figures['gradient_normalised_fraction']:.3f},"
          f" {figures['gradient_normalised_error_start_mm']:.2f} -> {figures['gradient_normalised_error_end_mm']:.2f} mm")
    print(f"{'visible vertices':>20}: Adam fraction {figures['gradient_visible_fraction']:.3f}"
          f" ({figures['gradient_visible_error_start_mm']:.2f} -> {figures['gradient_visible_error_end_mm']:.2f} mm);"
          f" normalised {figures['gradient_normalised_visible_fraction']:.3f}"
          f" ({figures['gradient_normalised_visible_error_start_mm']:.2f} ->"
          f" {figures['gradient_normalised_visible_error_end_mm']:.2f} mm)")
    for key in (*OPERATING_POINT_GOALS, "operating_point.truth_wins_other_image", "operating_point.monotone_fraction",
                "operating_point.gradient_cosine_landmarks", *TOPOLOGY_GOALS):
        if key in figures:
            print(f"{key:>44}: {figures[key]:.3f}   (goal {GOALS.get(key, '-')})")
    for name, t in figures["per_type"].items():
        auc_text = "  n/a" if t["auc"] is None else f"{t['auc']:.3f}"
        print(f"{name:>20}: auc {auc_text}  spearman {t['spearman']:+.3f}  error(mm) {t['mean_error_mm_by_severity']}")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
