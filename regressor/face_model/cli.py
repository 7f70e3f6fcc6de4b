"""``regressor model``: build / inspect the face model and export .obj files."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from regressor.face_model.factory import build_face_model
from regressor.face_model.flame import FaceModel


def example_meshes(model: FaceModel) -> dict[str, torch.Tensor]:
    """Named (V, 3) meshes: neutral, first shape component at +-3 sigma, a strong expression, jaw open."""
    params = model.zero_params(5)
    if model.n_shape:
        params.shape[1, 0], params.shape[2, 0] = 3.0, -3.0
    if model.n_expression:
        params.expression[3, 0] = 3.0
        params.expression[3, 1: min(model.n_expression, 3)] = 2.0
    params.jaw_pose[4, 0] = 0.35
    with torch.no_grad():
        vertices = model(params).vertices
    names = ["neutral", "shape0_plus3sigma", "shape0_minus3sigma", "expression_strong", "jaw_open"]
    return dict(zip(names, vertices))


def export_obj(model: FaceModel, folder: str | Path) -> list[Path]:
    """Write the example meshes as .obj files (pytorch3d.io.save_obj); returns their paths."""
    from pytorch3d.io import save_obj

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, vertices in example_meshes(model).items():
        path = folder / f"{name}.obj"
        save_obj(str(path), vertices.cpu(), model.faces.cpu())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regressor model", description=__doc__)
    parser.add_argument("--model-path", help="FLAME generic_model.pkl (default: the built-in stand-in)")
    parser.add_argument("--static-embedding", help="flame_static_embedding.pkl or DECA landmark_embedding.npy")
    parser.add_argument("--dynamic-embedding", help="flame_dynamic_embedding.npy")
    parser.add_argument("--albedo", help="per-vertex albedo .npz (mean, basis)")
    parser.add_argument("--summary", action="store_true", help="print a summary of the model")
    parser.add_argument("--export-obj", metavar="DIR", help="write neutral / shape +-3 sigma / expression / jaw-open .obj files")
    args = parser.parse_args(argv)
    model = build_face_model(args.model_path, static_embedding_path=args.static_embedding,
                             dynamic_embedding_path=args.dynamic_embedding, albedo_path=args.albedo)
    if args.summary or not args.export_obj:
        print(model.summary())
    if args.export_obj:
        for path in export_obj(model, args.export_obj):
            print(f"wrote {path}")
    return 0
