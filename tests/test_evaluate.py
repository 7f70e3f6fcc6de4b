"""`regressor evaluate`: NoW error of predicted meshes against outside scans."""
import json

import numpy as np
import pytest
import torch
from pytorch3d.io import save_obj, save_ply
from pytorch3d.ops import SubdivideMeshes
from pytorch3d.structures import Meshes

from regressor.evaluation.evaluate_cli import main as evaluate
from regressor.face_model import build_face_model


@pytest.fixture(scope="module")
def meshes():
    """A 'true' face and the mean face (the model's topology), in metres."""
    face_model = build_face_model(n_shape=10, n_expression=5)
    truth = face_model.zero_params(1)
    truth.shape = torch.randn(1, 10, generator=torch.Generator().manual_seed(0)) * 1.5
    with torch.no_grad():
        return face_model(truth), face_model(face_model.zero_params(1))


def _write_prediction(folder, stem, mesh):
    folder.mkdir(parents=True, exist_ok=True)
    save_obj(folder / f"{stem}.obj", mesh.vertices[0], mesh.faces)
    np.savez(folder / f"{stem}.npz", now_landmarks3d=mesh.now_landmarks3d[0].numpy(), shape=np.zeros(10))


def _write_scan(folder, stem, mesh, scale=1.0, subdivide=True, ply=False):
    """The true face as an outside scan: every triangle split in four (another topology)."""
    folder.mkdir(parents=True, exist_ok=True)
    vertices, faces = mesh.vertices[0], mesh.faces
    if subdivide:
        fine = SubdivideMeshes()(Meshes([vertices], [faces]))
        vertices, faces = fine.verts_list()[0], fine.faces_list()[0]
    if ply:
        save_ply(folder / f"{stem}.ply", vertices * scale, faces)
    else:
        save_obj(folder / f"{stem}.obj", vertices * scale, faces)
    np.savetxt(folder / f"{stem}.txt", mesh.now_landmarks3d[0].numpy() * scale)
    return vertices.shape[0]


def _run(tmp_path, *extra):
    return evaluate(["--pred", str(tmp_path / "pred"), "--scans", str(tmp_path / "scans"), "--refine-steps", "5",
                     *extra])


def test_a_subdivided_scan_scores_the_true_mesh_near_zero_and_the_mean_face_worse(meshes, tmp_path, capsys):
    truth, mean = meshes
    scan_vertices = _write_scan(tmp_path / "scans", "a", truth)
    _write_scan(tmp_path / "scans", "b", truth, ply=True)
    assert scan_vertices > 3 * truth.vertices.shape[1]  # not the model's topology
    _write_prediction(tmp_path / "pred", "a", truth)
    _write_prediction(tmp_path / "pred", "b", mean)
    assert _run(tmp_path) == 0
    report = json.loads((tmp_path / "pred" / "evaluation.json").read_text())
    assert report["per_image"]["a"]["median_mm"] < 0.05
    assert report["per_image"]["b"]["median_mm"] > 10 * report["per_image"]["a"]["median_mm"]
    assert report["summary"]["images"] == 2 and {"median_mm", "mean_mm", "std_mm"} <= set(report["summary"])
    assert (tmp_path / "pred" / "cumulative_error.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "median" in printed and "a " in printed and "b " in printed


def test_a_scan_in_centimetres_is_converted_with_a_warning_or_refused_when_metres_are_claimed(meshes, tmp_path, capsys):
    truth, _ = meshes
    _write_scan(tmp_path / "scans", "a", truth, scale=100.0)
    _write_prediction(tmp_path / "pred", "a", truth)
    with pytest.warns(UserWarning, match="centimetres"):
        assert _run(tmp_path) == 0
    report = json.loads((tmp_path / "pred" / "evaluation.json").read_text())
    assert report["per_image"]["a"]["median_mm"] < 0.05
    assert _run(tmp_path, "--scan-unit", "m") == 2
    error = capsys.readouterr().err
    assert "centimetres" in error and "--scan-unit cm" in error


def test_a_missing_scan_and_a_scan_without_landmarks_are_named(meshes, tmp_path, capsys):
    truth, _ = meshes
    _write_prediction(tmp_path / "pred", "a", truth)
    _write_prediction(tmp_path / "pred", "lost", truth)
    _write_scan(tmp_path / "scans", "a", truth, subdivide=False)
    assert _run(tmp_path) == 2
    error = capsys.readouterr().err
    assert "no scan" in error and "lost" in error
    (tmp_path / "pred" / "lost.obj").unlink()
    (tmp_path / "scans" / "a.txt").unlink()
    assert _run(tmp_path) == 2
    error = capsys.readouterr().err
    assert "has no landmarks" in error and "a.obj" in error


def test_landmarks_in_another_unit_than_their_scan_are_caught(meshes, tmp_path, capsys):
    truth, _ = meshes
    _write_scan(tmp_path / "scans", "a", truth, subdivide=False)
    np.savetxt(tmp_path / "scans" / "a.txt", truth.now_landmarks3d[0].numpy() * 100)  # cm landmarks, m scan
    _write_prediction(tmp_path / "pred", "a", truth)
    assert _run(tmp_path) == 2
    assert "from the nearest scan vertex" in capsys.readouterr().err
