"""How much of a face's depth does its frontal 2-D layout give away? The prior a critic can use against depth scaling.

``python -m benchmarks.depth_prior --faces 4000 [--regressor checkpoints/regressor.ckpt --split val --num-faces 64] --json PATH``

Scaling depth along the view axis keeps a weak-perspective silhouette and can be mimicked by another light and albedo
(the bas-relief ambiguity; ``benchmarks.topology.light_fit``), so shading alone cannot reject it. A shape prior can: if
the face model ties depth to the 2-D layout, a critic that reads its render's layout knows which depth to expect. This
draws ``--faces`` identities of the face model (shape ~ N(0, 1), no expression, frontal), and fits a ridge regression
from the 68 landmarks' frontal (x, y), in interocular units, to two depth measures: the nose tip's protrusion in
front of the outer eye corners, and the spread of the landmarks' depth. Printed on held-out identities (the last
quarter): each measure's spread across faces (std / mean), what the 2-D predictor leaves (residual std / mean), R2.

Reading: a depth-scaled copy at the topology figures' smallest severity is 10% deeper or flatter; where the residual
is far below that, the prior identifies it. The built-in stand-in has 100 shape components and 136 landmark
coordinates, so its layout determines its shape; a real FLAME (300 components) leaves more to the image.

``--regressor`` asks how much of that an image reader gets: on ``--num-faces`` synthetic faces of ``--split`` it compares
the depth measures of the regressor's predicted identity with the truth's (both frontal, no expression) and prints the
relative error's spread (std of prediction / truth - 1) and the share of faces read within 5%, what ranking a 10%
depth scaling against the truth needs; the mean face (the trivial baseline) is printed beside it.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor

from benchmarks.output import write_json


def depth_measures(landmarks: Tensor) -> dict[str, Tensor]:
    """(N, 68, 3) frontal landmarks (+z towards the camera) -> per-face depth measures in interocular units."""
    interocular = (landmarks[:, 45, :2] - landmarks[:, 36, :2]).norm(dim=1)
    eye_depth = 0.5 * (landmarks[:, 36, 2] + landmarks[:, 45, 2])
    return {"nose_protrusion": (landmarks[:, 30, 2] - eye_depth) / interocular,
            "landmark_depth_spread": landmarks[..., 2].std(dim=1) / interocular}


def layout_features(landmarks: Tensor) -> Tensor:
    """(N, 68, 3) -> (N, 137): centred frontal (x, y) in interocular units and a constant."""
    interocular = (landmarks[:, 45, :2] - landmarks[:, 36, :2]).norm(dim=1)
    xy = (landmarks[..., :2] - landmarks[..., :2].mean(1, keepdim=True)) / interocular[:, None, None]
    return torch.cat([xy.flatten(1), torch.ones(len(landmarks), 1)], dim=1)


def held_out_fit(features: Tensor, target: Tensor, train_fraction: float = 0.75, ridge: float = 1e-3) -> dict[str, float]:
    """Ridge regression on the first ``train_fraction`` rows, measured on the rest."""
    x, y = features.double(), target.double()
    n = int(len(y) * train_fraction)
    a = x[:n]
    weights = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ y[:n])
    residual = x[n:] @ weights - y[n:]
    mean = float(y[n:].mean())
    return {"mean": mean, "spread": float(y[n:].std()) / abs(mean), "residual": float(residual.std()) / abs(mean),
            "r2": 1.0 - float(residual.var() / y[n:].var())}


def measure(face_model, faces: int, seed: int = 0) -> dict[str, dict[str, float]]:
    params = face_model.zero_params(faces)
    params.shape = torch.randn(params.shape.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        landmarks = face_model(params).landmarks3d
    features = layout_features(landmarks)
    return {name: held_out_fit(features, value) for name, value in depth_measures(landmarks).items()}


def regressor_depth_reading(face_model, checkpoint: str, split: str, num_faces: int) -> dict[str, dict[str, float]]:
    """Relative depth error of the regressor's identity, and of the mean face's, on synthetic faces of ``split``."""
    from benchmarks.critic import load_faces
    from regressor.inference import Reconstructor

    batch, _ = load_faces(face_model, num_faces, 64, 0, split=split)
    predicted = Reconstructor.from_checkpoint(checkpoint).predict(batch.image).params.shape.to("cpu")

    def frontal(shape: Tensor) -> Tensor:
        params = face_model.zero_params(len(shape))
        params.shape = shape
        with torch.no_grad():
            return face_model(params).landmarks3d

    truth = depth_measures(frontal(batch.params.shape))
    readers = {"regressor": depth_measures(frontal(predicted)),
               "mean_face": depth_measures(frontal(torch.zeros_like(batch.params.shape)))}
    out = {}
    for reader, measures in readers.items():
        for name, value in measures.items():
            relative = value / truth[name] - 1.0
            out[f"{reader}.{name}"] = {"relative_error_std": float(relative.std()),
                                       "relative_error_mean": float(relative.mean()),
                                       "within_5_percent": float((relative.abs() < 0.05).float().mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    from regressor.face_model import build_face_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regressor", default=None, help="also measure this regressor checkpoint's depth reading")
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-faces", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    face_model = build_face_model()
    figures = measure(face_model, args.faces, args.seed)
    for name, row in figures.items():
        print(f"{name}: spread across faces {row['spread']:.3f} of the mean; left by the 2-D layout "
              f"{row['residual']:.3f}; R2 {row['r2']:.3f}")
    out = {"faces": args.faces, "seed": args.seed, **figures}
    if args.regressor:
        reading = regressor_depth_reading(face_model, args.regressor, args.split, args.num_faces)
        for name, row in reading.items():
            print(f"{name} on {args.num_faces} {args.split} faces: relative error std {row['relative_error_std']:.3f}, "
                  f"mean {row['relative_error_mean']:+.3f}; within 5% on {row['within_5_percent']:.2f}")
        out.update(regressor=args.regressor, split=args.split, num_faces=args.num_faces, reading=reading)
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
