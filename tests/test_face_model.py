"""Specification of FaceModel on the built-in stand-in: LBS, landmarks, bases, mesh topology."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from regressor.face_model import FaceModel
from regressor.face_model.flame import NOW_FROM_IBUG, contour_bin
from regressor.face_model.lbs import axis_angle_to_matrix

N_SHAPE, N_EXPR, N_ALBEDO = 20, 10, 5


@pytest.fixture(scope="module")
def model() -> FaceModel:
    torch.manual_seed(0)
    return FaceModel.builtin(n_shape=N_SHAPE, n_expression=N_EXPR, n_albedo=N_ALBEDO)


def _forehead(model: FaceModel) -> torch.Tensor:
    v = model.v_template
    return (v[:, 1] > 0.04) & (v[:, 2] > 0.0)


def _face(model: FaceModel) -> torch.Tensor:
    v = model.v_template
    return (v[:, 2] > 0.0) & (v[:, 1] > -0.05) & (v[:, 1] < 0.06)


def test_zero_params_give_the_template(model):
    mesh = model(model.zero_params(2))
    assert mesh.vertices.shape == (2, model.num_vertices, 3)
    torch.testing.assert_close(mesh.vertices, model.v_template.expand(2, -1, -1), atol=1e-7, rtol=0)
    assert mesh.faces is model.faces and mesh.faces.dtype == torch.long
    assert mesh.landmarks3d.shape == (2, 68, 3) and mesh.now_landmarks3d.shape == (2, 7, 3)


def test_model_is_metric_and_centred_on_the_face(model):
    v = model.v_template
    width = (v[:, 0].max() - v[:, 0].min()).item()
    assert 0.13 < width < 0.20, "head width should be that of a human head, in metres"
    lmk = model(model.zero_params(1)).landmarks3d[0]
    face_centre = lmk[[39, 42, 30]].mean(0)
    assert face_centre[:2].abs().max() < 0.02


def test_jaw_rotation_moves_only_lower_face(model):
    params = model.zero_params(1)
    params.jaw_pose[0, 0] = 0.3
    opened = model(params)
    rest = model(model.zero_params(1))
    moved = (opened.landmarks3d - rest.landmarks3d).norm(dim=-1)[0]
    assert moved[8] > 0.01, "chin"
    assert moved[57] > 0.01 and moved[66] > 0.008, "lower lip"
    assert moved[51] < 0.002, "upper lip stays"
    assert moved[17:48].max() < 1e-6, "brows, nose, eyes stay"
    forehead = _forehead(model)
    assert (opened.vertices[0, forehead] - rest.vertices[0, forehead]).abs().max() < 1e-6


def test_jaw_open_parts_the_lips(model):
    params = model.zero_params(1)
    params.jaw_pose[0, 0] = 0.3
    lmk = model(params).landmarks3d[0]
    rest = model(model.zero_params(1)).landmarks3d[0]
    assert (rest[62] - rest[66]).norm() < 0.002, "closed lips meet at the crease"
    assert (lmk[62] - lmk[66]).norm() > 0.015, "open jaw separates inner upper and lower lip"


@pytest.mark.parametrize("joint", ["global_pose", "neck_pose"])
def test_head_rotations_are_rigid_on_the_face(model, joint):
    params = model.zero_params(1)
    getattr(params, joint)[0] = torch.tensor([0.2, -0.5, 0.1])
    posed = model(params).vertices[0]
    face = _face(model)
    exact = "donot_use_mm_for_euclid_dist"
    before = torch.cdist(model.v_template[face], model.v_template[face], compute_mode=exact)
    after = torch.cdist(posed[face], posed[face], compute_mode=exact)
    assert (before - after).abs().max() < 1e-5
    assert (posed[face] - model.v_template[face]).norm(dim=-1).mean() > 0.01, "the head did move"


def test_eye_rotation_moves_only_that_eye(model):
    params = model.zero_params(1)
    params.eye_pose[0, :3] = torch.tensor([0.0, 0.3, 0.0])  # left eye (+x)
    moved = (model(params).vertices[0] - model.v_template).norm(dim=-1)
    v = model.v_template
    assert moved[v[:, 0] > 0].max() > 1e-3
    assert moved[v[:, 0] < 0].max() < 1e-7


def test_gradients_reach_every_parameter_group(model):
    params = model.zero_params(2)
    params.shape.normal_()
    params.expression.normal_()
    for name in ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "albedo"):
        getattr(params, name).requires_grad_(True)
    mesh = model(params)
    loss = mesh.vertices.square().sum() + mesh.landmarks3d.square().sum() + model.albedo(params.albedo).sum()
    loss.backward()
    for name in ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "albedo"):
        grad = getattr(params, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_batch_results_match_single_samples(model):
    torch.manual_seed(1)
    params = model.zero_params(3)
    params.shape.normal_()
    params.expression.normal_()
    params.global_pose.normal_(std=0.3)
    params.jaw_pose[:, 0] = torch.rand(3) * 0.3
    batch = model(params)
    for i in range(3):
        single = model(params[i])
        torch.testing.assert_close(single.vertices[0], batch.vertices[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(single.landmarks3d[0], batch.landmarks3d[i], atol=1e-6, rtol=0)


def test_landmarks_lie_on_the_posed_surface(model):
    params = model.zero_params(2)
    params.shape.normal_()
    params.global_pose[:, 1] = torch.tensor([0.4, -0.4])
    mesh = model(params)
    bins = contour_bin(axis_angle_to_matrix(params.global_pose), axis_angle_to_matrix(params.neck_pose))
    faces = torch.cat([model.dynamic_lmk_faces[bins], model.static_lmk_faces.expand(2, -1)], 1)
    bary = torch.cat([model.dynamic_lmk_bary[bins], model.static_lmk_bary.expand(2, -1, -1)], 1)
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(()))
    corners = mesh.vertices[torch.arange(2)[:, None, None], model.faces[faces]]  # (B, 68, 3, 3)
    # Each landmark is inside its triangle: in its plane, and equal to the barycentric combination.
    normal = torch.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :], dim=-1)
    offset = ((mesh.landmarks3d - corners[..., 0, :]) * torch.nn.functional.normalize(normal, dim=-1)).sum(-1)
    assert offset.abs().max() < 1e-6
    torch.testing.assert_close(mesh.landmarks3d, (corners * bary[..., None]).sum(-2))


def test_landmarks_follow_ibug_layout(model):
    lmk = model(model.zero_params(1)).landmarks3d[0]
    x, y, z = lmk.T
    assert x[36] < x[39] < x[42] < x[45], "eye corners from the subject's right (-x) to left"
    assert x[0] < x[8] < x[16] and y[8] < y[57] < y[33] < y[27], "jaw, chin, lips, nose vertical order"
    assert z[30] == z.max(), "the nose tip is the frontmost landmark"
    assert x[48] < x[51] < x[54] and y[19] > y[37]
    now = model(model.zero_params(1)).now_landmarks3d[0]
    torch.testing.assert_close(now, lmk[list(NOW_FROM_IBUG)])


def test_contour_bins_follow_flame_yaw_order():
    yaw = torch.deg2rad(torch.tensor([0.0, 20.0, -20.0, 60.0, -60.0]))
    rot = axis_angle_to_matrix(torch.stack([torch.zeros(5), yaw, torch.zeros(5)], -1))
    eye = torch.eye(3).expand(5, 3, 3)
    assert contour_bin(rot, eye).tolist() == [0, 20, 59, 39, 78]
    assert contour_bin(eye, rot).tolist() == [0, 20, 59, 39, 78], "neck yaw counts too"


def test_jaw_contour_moves_with_head_yaw(model):
    params = model.zero_params(2)
    params.global_pose[:, 1] = torch.tensor([0.0, 0.5])
    lmk = model(params).landmarks3d
    # Undo the rotation: the embedded contour points themselves must differ between bins.
    rest = model.landmarks(model.v_template[None].expand(2, -1, -1), torch.tensor([0, 29]))
    assert (rest[0, :17] - rest[1, :17]).norm(dim=-1).max() > 0.005
    assert torch.allclose(rest[0, 17:], rest[1, 17:])
    assert lmk.shape == (2, 68, 3)


def test_mesh_is_a_closed_consistently_oriented_manifold(model):
    faces = model.faces.numpy()
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    assert (counts == 2).all(), "every edge is shared by exactly two faces"
    assert len(np.unique(directed, axis=0)) == len(directed), "neighbouring faces are wound consistently"
    n_v, n_e, n_f = model.num_vertices, len(undirected), len(faces)
    assert n_v - n_e + n_f == 2, "a sphere (genus 0)"
    v = model.v_template.double()
    tri = v[model.faces]
    volume = (tri[:, 0] * torch.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6
    assert volume > 0.002, "outward (counter-clockwise) winding and a head-sized volume"


def test_shape_basis_is_orthogonal_and_ordered_by_variance(model):
    basis = model.shapedirs[..., :N_SHAPE].reshape(-1, N_SHAPE).double()
    gram = basis.T @ basis
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-6 * gram.diag().max()
    norms = gram.diag()
    assert (norms[1:] <= norms[:-1] + 1e-12).all()
    rms_mm = (norms / model.num_vertices).sqrt() * 1000
    assert 1.0 < rms_mm[0] < 10.0, "first component: millimetres per unit"


def test_smile_raises_the_mouth_corners(model):
    params = model.zero_params(1)
    params.expression[0, 0] = 2.0  # component 0 is the smile
    lmk = model(params).landmarks3d[0]
    rest = model(model.zero_params(1)).landmarks3d[0]
    assert (lmk[[48, 54], 1] - rest[[48, 54], 1]).min() > 0.003
    assert (lmk[17:27] - rest[17:27]).norm(dim=-1).max() < 0.002, "brows barely move"


def test_padding_beyond_the_file_gives_zero_components():
    padded = FaceModel.builtin(n_shape=310, n_expression=105, n_albedo=25)
    assert padded.shapedirs.shape[-1] == 415
    assert padded.shapedirs[..., 300:310].abs().max() == 0 and padded.shapedirs[..., 410:].abs().max() == 0
    assert padded.albedo_basis[..., 20:].abs().max() == 0


def test_albedo_is_skin_with_redder_lips_and_darker_brows(model):
    albedo = model.albedo(torch.zeros(1, N_ALBEDO))[0]
    lmk = model(model.zero_params(1)).landmarks3d[0]
    nearest = torch.cdist(lmk, model.v_template).argmin(1)
    lower_lip = torch.cdist((lmk[57] + lmk[66])[None] / 2, model.v_template).argmin()
    lips, brow, cheek = albedo[lower_lip], albedo[nearest[19]], albedo[nearest[1]]
    assert (albedo >= 0).all() and (albedo <= 1).all()
    redness = lambda c: c[0] - c[1]  # noqa: E731
    assert redness(lips) > redness(cheek) + 0.05
    assert brow.sum() < cheek.sum() - 0.3
    varied = model.albedo(torch.full((1, N_ALBEDO), 2.0))[0]
    assert (varied - albedo).abs().max() > 0.05


def test_face_model_is_configurable_from_yaml(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(FaceModel, "face_model")
    config = tmp_path / "model.yaml"
    config.write_text("face_model:\n  n_shape: 7\n  n_expression: 3\n  n_albedo: 2\n")
    cfg = parser.parse_args(["--config", str(config)])
    built = parser.instantiate_classes(cfg).face_model
    assert isinstance(built, FaceModel) and (built.n_shape, built.n_expression, built.n_albedo) == (7, 3, 2)


def test_export_obj_writes_the_example_meshes(model, tmp_path):
    from pytorch3d.io import load_obj

    from regressor.face_model.cli import export_obj

    paths = export_obj(model, tmp_path)
    assert {p.stem for p in paths} == {"neutral", "shape0_plus3sigma", "shape0_minus3sigma", "expression_strong", "jaw_open"}
    verts, faces, _ = load_obj(str(tmp_path / "jaw_open.obj"), load_textures=False)
    assert verts.shape == (model.num_vertices, 3) and faces.verts_idx.shape == tuple(model.faces.shape)
    neutral, _, _ = load_obj(str(tmp_path / "neutral.obj"), load_textures=False)
    assert (verts - neutral).norm(dim=-1).max() > 0.01


def test_face_mesh_batches_select_concatenate_and_move_with_shared_faces(model):
    from regressor.types import FaceMesh

    params = model.zero_params(3)
    params.jaw_pose[1, 0] = 0.3
    mesh = model(params)
    second = mesh[1]
    assert second.batch_size == 1 and second.faces is mesh.faces
    assert torch.equal(second.vertices[0], mesh.vertices[1]) and torch.equal(second.landmarks3d[0], mesh.landmarks3d[1])
    rebuilt = FaceMesh.cat([mesh[0:1], mesh[torch.tensor([1, 2])]])
    for name in ("vertices", "landmarks3d", "now_landmarks3d"):
        assert torch.equal(getattr(rebuilt, name), getattr(mesh, name))
    assert rebuilt.to(torch.float64).vertices.dtype == torch.float64
    other = FaceMesh(mesh.vertices[:1], mesh.faces.flip(1), mesh.landmarks3d[:1], mesh.now_landmarks3d[:1])
    with pytest.raises(ValueError, match="different faces"):
        FaceMesh.cat([mesh[0], other])


def test_build_face_model_reads_every_spec_form(tmp_path):
    from regressor.face_model import build_face_model
    from regressor.face_model.builtin import builtin_files

    sizes = dict(n_shape=N_SHAPE, n_expression=N_EXPR, n_albedo=N_ALBEDO)
    reference = FaceModel.builtin(**sizes)
    pkl = str(builtin_files().model)
    (tmp_path / "config.yaml").write_text(f"face_model:\n  class_path: regressor.face_model.FaceModel\n"
                                          f"  init_args: {{n_shape: {N_SHAPE}}}\n")
    (tmp_path / "plain.yml").write_text(f"{{model_path: builtin, n_shape: {N_SHAPE}}}\n")
    built = {
        "none": build_face_model(None, **sizes),
        "builtin": build_face_model("builtin", **sizes),
        "arguments": build_face_model({"n_shape": N_SHAPE, "n_expression": N_EXPR}, n_albedo=N_ALBEDO),
        "class_path": build_face_model({"class_path": "regressor.face_model.FaceModel", "init_args": sizes}),
        "config yaml": build_face_model(tmp_path / "config.yaml", n_expression=N_EXPR, n_albedo=N_ALBEDO),
        "plain yaml": build_face_model(str(tmp_path / "plain.yml"), n_expression=N_EXPR, n_albedo=N_ALBEDO),
    }
    for form, face_model in built.items():
        assert isinstance(face_model, FaceModel) and face_model.is_builtin, form
        assert face_model.init_args == reference.init_args, form
    from_file = build_face_model(pkl, **sizes)  # the stand-in's own generic_model.pkl, read as a FLAME file
    assert not from_file.is_builtin and from_file.model_path == pkl
    torch.testing.assert_close(from_file.v_template, reference.v_template)
    assert build_face_model(reference) is reference
    with pytest.raises(TypeError, match="no overrides"):
        build_face_model(reference, n_shape=3)
    with pytest.raises(TypeError, match="expected None, a path"):
        build_face_model(3)
