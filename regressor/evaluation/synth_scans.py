"""Export the ground-truth "scans" of a ``regressor synth`` folder for ``regressor evaluate``.

    python -m regressor.evaluation.synth_scans --synth DIR --out SCANS [--subdivide] [--unit m|cm|mm]

For each ``DIR/annotations/<stem>.npz`` it writes ``SCANS/<stem>.obj`` (the face model's mesh with
the geometry beyond the model, i.e. the sample's ``vertices``) and ``SCANS/<stem>.txt`` (its 7 NoW
landmarks, moved with the displacement). ``--subdivide`` splits every triangle into four
(pytorch3d ``SubdivideMeshes``), a topology different from the model's; ``--unit`` writes the
scans in centimetres or millimetres (to try the unit check).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from regressor.evaluation.scans import UNITS


def export_scans(synth: Path, out: Path, face_model=None, subdivide: bool = False, unit: str = "m") -> list[str]:
    from pytorch3d.io import save_obj

    from regressor.face_model import build_face_model
    from regressor.synthetic.displacement import displace_landmarks
    from regressor.types import FaceParams

    face_model = face_model or build_face_model()
    annotations = sorted((synth / "annotations").glob("*.npz"))
    if not annotations:
        raise FileNotFoundError(f"no annotations/*.npz in {synth} (write one with `regressor synth`)")
    out.mkdir(parents=True, exist_ok=True)
    scale = 1.0 / UNITS[unit]
    stems = []
    for path in annotations:
        with np.load(path) as stored:
            values = {k[len("params_"):]: torch.from_numpy(stored[k])[None].float() for k in stored.files
                      if k.startswith("params_")}
            vertices = torch.from_numpy(stored["vertices"]).float()[None]
            displacement = torch.from_numpy(stored["displacement"]).float()[None]
        with torch.no_grad():
            mesh = face_model(FaceParams(**values))
            landmarks = displace_landmarks(mesh.now_landmarks3d, mesh.vertices, displacement)[0]
        faces = face_model.faces
        if subdivide:
            from pytorch3d.ops import SubdivideMeshes
            from pytorch3d.structures import Meshes

            fine = SubdivideMeshes()(Meshes([vertices[0]], [faces]))
            vertices, faces = fine.verts_list()[0][None], fine.faces_list()[0]
        save_obj(out / f"{path.stem}.obj", vertices[0] * scale, faces)
        np.savetxt(out / f"{path.stem}.txt", landmarks.numpy() * scale, fmt="%.6f")
        stems.append(path.stem)
    return stems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regressor.evaluation.synth_scans", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", required=True, type=Path, help="a folder written by `regressor synth`")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--subdivide", action="store_true", help="split each triangle into 4 (another topology)")
    parser.add_argument("--unit", default="m", choices=sorted(UNITS))
    args = parser.parse_args(argv)
    stems = export_scans(args.synth, args.out, subdivide=args.subdivide, unit=args.unit)
    print(f"wrote {len(stems)} scan(s) with landmarks to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
