"""Specification of the FLAME file loader: exact FLAME pickle structure without chumpy, errors, safety."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from regressor.face_model import FaceModel, FaceModelFileError, UnsafePickleError
from regressor.face_model import files

SHARED_CACHE = os.environ.get("FACE_PSL_CACHE")  # the built-in model's cache, shared across tests
V = 6  # an octahedron: the smallest closed mesh that still has a "face" to embed landmarks on


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_PSL_CACHE", str(tmp_path / "cache"))


def _fake_chumpy(monkeypatch) -> type:
    """A stand-in ``chumpy.ch.Ch`` living at chumpy's real module path, for writing fixtures."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):  # chumpy pickles its terms, the array under 'x'
            return {"x": self.x, "_dirty_vars": set(), "a": None}

        def __setstate__(self, state):
            self.__dict__.update(state)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    module.Ch = Ch
    package.ch = module
    monkeypatch.setitem(sys.modules, "chumpy", package)
    monkeypatch.setitem(sys.modules, "chumpy.ch", module)
    return Ch


def _flame_like_arrays() -> dict:
    rng = np.random.default_rng(0)
    v_template = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) * 0.1
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    weights = np.zeros((V, 5))
    weights[:, 1] = 1.0
    weights[3, [1, 2]] = 0.5
    return dict(
        v_template=v_template, f=faces.astype(np.uint32), shapedirs=rng.normal(size=(V, 3, 400)) * 1e-3,
        posedirs=rng.normal(size=(V, 3, 36)) * 1e-3,
        J_regressor=scipy.sparse.csc_matrix(np.full((5, V), 1.0 / V)), weights=weights,
        kintree_table=np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    )


def _write_flame_pickle(path, monkeypatch, drop: str | None = None, **overrides) -> dict:
    """FLAME's generic_model.pkl structure: chumpy arrays, sparse J_regressor, protocol 2."""
    Ch = _fake_chumpy(monkeypatch)
    arrays = dict(_flame_like_arrays(), **overrides)
    d = dict(arrays, bs_style="lbs", bs_type="lrotmin", J=np.zeros((5, 3)))
    d["shapedirs"], d["posedirs"] = Ch(arrays["shapedirs"]), Ch(arrays["posedirs"])
    d["v_template"] = Ch(arrays["v_template"])
    if drop:
        del d[drop]
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    return arrays


def _write_embeddings(folder, n_faces=8) -> files.LandmarkEmbedding:
    rng = np.random.default_rng(1)
    bary = lambda *s: rng.dirichlet(np.ones(3), size=s)  # noqa: E731
    emb = files.LandmarkEmbedding(rng.integers(0, n_faces, 51), bary(51), rng.integers(0, n_faces, (79, 17)), bary(79, 17))
    files.save_landmark_embedding(folder / "flame_static_embedding.pkl", folder / "flame_dynamic_embedding.npy", emb)
    return emb


def test_flame_pickle_is_read_without_chumpy(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    arrays = _write_flame_pickle(path, monkeypatch)
    assert "chumpy" not in sys.modules
    loaded = files.load_flame_model(path)
    np.testing.assert_array_equal(loaded.v_template, arrays["v_template"])
    np.testing.assert_array_equal(loaded.faces, arrays["f"].astype(np.int64))
    np.testing.assert_array_equal(loaded.shapedirs, arrays["shapedirs"])
    np.testing.assert_array_equal(loaded.posedirs, arrays["posedirs"])
    np.testing.assert_array_equal(loaded.J_regressor, arrays["J_regressor"].toarray())
    np.testing.assert_array_equal(loaded.weights, arrays["weights"])
    assert loaded.kintree_table[0].tolist() == [-1, 0, 1, 1, 1]


def test_converted_model_is_cached_as_npz(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch)
    first = files.load_flame_model(path)
    cached = list((tmp_path / "cache" / "converted").glob("*.npz"))
    assert len(cached) == 1
    second = files.load_flame_model(path)
    for key, value in vars(first).items():
        np.testing.assert_array_equal(getattr(second, key), value)


def test_embeddings_round_trip_in_flame_and_deca_formats(tmp_path):
    emb = _write_embeddings(tmp_path)
    loaded = files.load_landmark_embedding(tmp_path / "flame_static_embedding.pkl", tmp_path / "flame_dynamic_embedding.npy")
    for key, value in vars(emb).items():
        np.testing.assert_array_equal(getattr(loaded, key), value)
    deca = {"static_lmk_faces_idx": emb.static_faces, "static_lmk_bary_coords": emb.static_bary,
            "dynamic_lmk_faces_idx": emb.dynamic_faces, "dynamic_lmk_bary_coords": emb.dynamic_bary,
            "full_lmk_faces_idx": np.zeros((1, 68), np.int64), "full_lmk_bary_coords": np.zeros((1, 68, 3))}
    np.save(tmp_path / "landmark_embedding.npy", deca, allow_pickle=True)
    from_deca = files.load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    for key, value in vars(emb).items():
        np.testing.assert_array_equal(getattr(from_deca, key), value)


def test_face_model_runs_on_a_flame_file_with_embeddings_found_next_to_it(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    arrays = _write_flame_pickle(path, monkeypatch)
    _write_embeddings(tmp_path)
    model = FaceModel(str(path), n_shape=310, n_expression=20, n_albedo=3)
    mesh = model(model.zero_params(2))
    torch.testing.assert_close(mesh.vertices[0], torch.tensor(arrays["v_template"], dtype=torch.float32))
    assert model.shapedirs.shape == (V, 3, 330) and model.shapedirs[..., 300:310].abs().max() == 0
    torch.testing.assert_close(model.shapedirs[..., 310:], torch.tensor(arrays["shapedirs"][..., 300:320], dtype=torch.float32))
    assert model.albedo(torch.zeros(1, 3)).shape == (1, V, 3)


def test_builtin_files_are_flame_format_and_read_back_equal(tmp_path, monkeypatch):
    from regressor.face_model import builtin

    if SHARED_CACHE:
        monkeypatch.setenv("FACE_PSL_CACHE", SHARED_CACHE)
    else:
        monkeypatch.delenv("FACE_PSL_CACHE")

    generated = builtin.generate()
    paths = builtin.write(generated, tmp_path / "builtin")
    with open(paths.model, "rb") as fh:  # a plain FLAME-structured dict with a sparse J_regressor
        raw = pickle.load(fh, encoding="latin1")
    assert scipy.sparse.issparse(raw["J_regressor"]) and raw["shapedirs"].shape[-1] == 400
    assert raw["kintree_table"][0, 0] == 2**32 - 1 and raw["posedirs"].shape[1:] == (3, 36)
    loaded = files.load_flame_model(paths.model, use_cache=False)
    for key, value in vars(generated.flame).items():
        np.testing.assert_allclose(getattr(loaded, key), value, atol=1e-12, err_msg=key)
    emb = files.load_landmark_embedding(paths.static_embedding, paths.dynamic_embedding)
    for key, value in vars(generated.embedding).items():
        np.testing.assert_array_equal(getattr(emb, key), value)
    albedo = files.load_albedo(paths.albedo, len(loaded.v_template))
    np.testing.assert_allclose(albedo.basis, generated.albedo.basis, atol=1e-6)
    # Deterministic: the cached files the model uses are these files (up to float rounding: the cache
    # may have been generated with another thread count, which reorders BLAS sums at the 1e-7 level).
    cached = files.load_flame_model(builtin.builtin_files().model, use_cache=False)
    np.testing.assert_allclose(cached.shapedirs, loaded.shapedirs, rtol=1e-6, atol=1e-15)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FaceModelFileError, match="not found: .*nowhere.pkl"):
        files.load_flame_model(tmp_path / "nowhere.pkl")
    with pytest.raises(FaceModelFileError, match="albedo file not found"):
        files.load_albedo(tmp_path / "albedo.npz", 10)


def test_missing_embedding_next_to_the_model_is_explained(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch)
    with pytest.raises(FaceModelFileError, match="no landmark embedding given"):
        FaceModel(str(path))


@pytest.mark.parametrize("key,shape", [("shapedirs", "(6, 3, N)"), ("J_regressor", "(5, 6)"), ("weights", "(6, 5)"),
                                       ("posedirs", "(6, 3, 36)"), ("f", "(N, 3)")])
def test_missing_key_names_file_key_and_expected_shape(tmp_path, monkeypatch, key, shape):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch, drop=key)
    with pytest.raises(FaceModelFileError) as err:
        files.load_flame_model(path)
    message = str(err.value)
    assert str(path) in message and f"missing key '{key}'" in message and shape in message


def test_wrong_shape_names_file_key_found_and_expected(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch, posedirs=np.zeros((V, 3, 35)))
    with pytest.raises(FaceModelFileError, match=r"generic_model.pkl: key 'posedirs' has shape \(6, 3, 35\), expected \(6, 3, 36\)"):
        files.load_flame_model(path)


def test_wrong_embedding_and_albedo_shapes_are_named(tmp_path):
    with open(tmp_path / "static.pkl", "wb") as fh:
        pickle.dump({"lmk_face_idx": np.zeros(50, np.uint32), "lmk_b_coords": np.zeros((50, 3))}, fh, protocol=2)
    np.save(tmp_path / "dynamic.npy", {"lmk_face_idx": np.zeros((79, 17)), "lmk_b_coords": np.zeros((79, 17, 3))})
    with pytest.raises(FaceModelFileError, match=r"static.pkl: key 'lmk_face_idx' has shape \(50,\), expected \(51\)"):
        files.load_landmark_embedding(tmp_path / "static.pkl", tmp_path / "dynamic.npy")
    np.savez(tmp_path / "albedo.npz", mean=np.zeros((5, 3)), basis=np.zeros((6, 3, 2)))
    with pytest.raises(FaceModelFileError, match=r"albedo.npz: key 'mean' has shape \(5, 3\), expected \(6, 3\)"):
        files.load_albedo(tmp_path / "albedo.npz", 6)


def test_embedding_indices_out_of_range_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch)
    _write_embeddings(tmp_path, n_faces=50)
    with pytest.raises(FaceModelFileError, match="out of range"):
        FaceModel(str(path))


def test_corrupt_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(b"\x80\x02}q\x00(X\x01")  # truncated pickle
    with pytest.raises(FaceModelFileError, match="cannot read FLAME model pickle"):
        files.load_flame_model(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"v_template": _Exploit(marker)}, fh, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global '(posix|os|nt)\.system'"):
        files.load_flame_model(path)
    assert not marker.exists()


def test_malicious_npy_embedding_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "flame_dynamic_embedding.npy"
    np.save(path, np.array({"lmk_face_idx": _Exploit(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        files.load_npy_object(path, "dynamic landmark embedding")
    assert not marker.exists()


def test_a_flame_configured_regressor_trains_on_flame_synthetic_faces_and_logs_vertex_metrics(tmp_path, monkeypatch):
    """The face model is declared once (top-level ``face_model``) and linked into the model and the
    data module: the synthetic faces have the FLAME file's 6 vertices, so the vertex metrics are logged."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from regressor.cli import main
    from regressor.inference import Reconstructor

    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, monkeypatch)
    _write_embeddings(tmp_path)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "val_check_interval": 2,
                    "check_val_every_n_epoch": None, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                    "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path),
                    "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs"), "name": "flame"}}},
        "face_model": {"class_path": "regressor.face_model.FaceModel",
                       "init_args": {"model_path": str(path), "n_shape": 8, "n_expression": 4, "n_albedo": 3}},
        "model": {"class_path": "regressor.training.regression.RegressorModule",
                  "init_args": {"encoder": {"class_path": "regressor.models.encoder.FaceEncoder",
                                            "init_args": {"backbone": "mobilenetv3_small_050"}},
                                "renderer": {"class_path": "regressor.render.Renderer", "init_args": {"backend": "torch"}},
                                "losses": [{"name": "landmarks", "weight": 1.0}, {"name": "photometric", "weight": 1.0}]}},
        "data": {"class_path": "regressor.training.datamodule.FaceDataModule",
                 "init_args": {"image_size": 32, "batch_size": 2, "synthetic_train_samples": 4,
                               "synthetic_val_samples": 2, "synthetic_test_samples": 2}},
    }
    config_path = tmp_path / "flame.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["fit", "--config", str(config_path)]) == 0

    accumulator = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents*")).parent))
    accumulator.Reload()
    assert {"val/vertex_error_mm", "val/vertex_error_aligned_mm"} <= set(accumulator.Tags()["scalars"])
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    reconstructor = Reconstructor.from_checkpoint(checkpoint)
    assert reconstructor.pipeline.face_model.num_vertices == V
    assert reconstructor.pipeline.face_model.model_path == str(path)
