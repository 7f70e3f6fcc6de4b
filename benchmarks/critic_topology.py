"""The ``topology.*`` figures alone, for several critics side by side, and what beats the truth.

``python -m benchmarks.critic_topology --checkpoint A.pt [B.pt ...] --split val --num-faces 24 --json PATH``

``benchmarks.critic`` measures everything about one critic and needs the no-critic fits; this measures only
the held-out face masks and decimated heads (``benchmarks.topology.topology_metrics``) on ``--num-faces`` faces
of ``--split``, a few seconds per face, so that candidate critics can be compared on enough faces. Besides the
four goal figures it prints ``topology.beaten_by``: per negative type, the share of (image, variant) pairs in
which a negative of that type (>= 1 mm of aligned error) outscores the true surface, i.e. which shape errors a
critic cannot see. ``--reference`` adds a row for ``benchmarks.topology.light_fit.LightFitScorer`` (no learning,
no prior: how well a free SH light explains the image with each candidate's normals), the bas-relief-blind
baseline beside the critics. Choices are made on ``val``; ``test`` is for reporting.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.output import write_json
from regressor.models.critic import ShapeCritic
from benchmarks.topology.topology_metrics import GOALS, topology_figures
from regressor.synthetic.splits import SPLIT_SEEDS


def measure(scorer, image_size: int, renderer, face_model, split: str, num_faces: int,
            synthetic: str = "default") -> dict:
    """``topology.*`` figures of one scorer on the first ``num_faces`` faces of ``split`` at ``image_size``."""
    from benchmarks.critic import load_faces
    from regressor.synthetic.displacement import displace_landmarks

    batch, _ = load_faces(face_model, num_faces, image_size, 0, split=split, synthetic=synthetic)
    with torch.no_grad():
        mesh = face_model(batch.params)
        now = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, batch.displacement)
        landmarks = displace_landmarks(mesh.landmarks3d, mesh.vertices, batch.displacement)
    return topology_figures(scorer, renderer, batch.image, batch.vertices, face_model.faces, now, landmarks,
                            batch.params.camera)


def scorers(checkpoints: list[str], reference: bool, reference_size: int):
    """(name, scorer, image size, renderer) for each critic (at its own input size) and the reference."""
    from benchmarks.topology.light_fit import LightFitScorer
    from regressor.render import Renderer

    for checkpoint in checkpoints:
        critic = ShapeCritic.from_checkpoint(checkpoint)
        size = critic.architecture["image_size"]
        yield str(checkpoint), critic, size, critic.render_settings.renderer(image_size=size)
    if reference:
        yield "reference:light_fit", LightFitScorer(), reference_size, Renderer(image_size=reference_size)


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", default=["checkpoints/critic.pt"], help="critics ('none' = only --reference)")
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_SEEDS))
    parser.add_argument("--num-faces", type=int, default=24)
    parser.add_argument("--synthetic", default="default", help="image distribution (SyntheticConfig.preset)")
    parser.add_argument("--reference", action="store_true",
                        help="add the light-fit reference scorer (no learning, no prior; benchmarks.topology.light_fit)")
    parser.add_argument("--reference-size", type=int, default=64, help="image size of the reference scorer")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    face_model = build_face_model()
    results = []
    checkpoints = args.checkpoint if args.checkpoint != ["none"] else []
    for name, scorer, size, renderer in scorers(checkpoints, args.reference, args.reference_size):
        started = time.time()
        figures = measure(scorer, size, renderer, face_model, args.split, args.num_faces, args.synthetic)
        figures.update(checkpoint=name, split=args.split, synthetic=args.synthetic, image_size=size, goals=GOALS,
                       seconds=round(time.time() - started, 1))
        results.append(figures)
        print(name, flush=True)
        for key in GOALS:
            print(f"  {key:>32}: {figures[key]:.3f}   (goal {GOALS[key]})")
        losing = {kind: share for kind, share in figures["topology.beaten_by"].items() if share is not None}
        print("  beaten by (share of images): " + ", ".join(f"{kind} {share:.2f}" for kind, share in losing.items()),
              flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
