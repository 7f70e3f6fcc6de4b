"""benchmarks.fitting: the entry point other benchmarks call to fit a FaceSet."""
import pytest
import torch

from benchmarks.fitting import evaluate, fit_benchmark_faces, noisy_landmarks, with_overrides
from benchmarks.psl_common import FaceSet
from regressor.face_model import build_face_model
from regressor.render import Renderer

SIZE = 32


def _faces(face_model, count=2):
    truth = face_model.zero_params(count)
    truth.shape = torch.randn(count, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mesh = face_model(truth)
        renders = Renderer(SIZE)(mesh, truth.camera)
    return FaceSet(image=renders.albedo_shaded, landmarks=renders.landmarks2d, landmarks_valid=torch.ones(count, 68),
                   mask=renders.mask, vertices=mesh.vertices, now_landmarks3d=mesh.now_landmarks3d,
                   seeds=torch.arange(count))


def _config():
    return {"image_size": SIZE, "face_model": {"n_shape": 10, "n_expression": 5},
            "losses": [{"name": "landmarks", "weight": 1.0}, {"name": "regularizers", "weight": 1.0}],
            "stages": [{"name": "rigid", "steps": 2, "optimize": ["global_pose", "camera"],
                        "weights": {"landmarks": 1.0}},
                       {"name": "shape", "steps": 2, "optimize": ["shape", "camera"],
                        "weights": {"landmarks": 1.0, "regularizers": 1.0}}]}


def test_fit_benchmark_faces_returns_one_mesh_per_face_in_order():
    face_model = build_face_model(n_shape=10, n_expression=5)
    faces = _faces(face_model, 3)
    fitted = fit_benchmark_faces(faces, face_model, _config(), batch_size=2)
    assert fitted.mesh.vertices.shape == faces.vertices.shape and fitted.seconds_per_image > 0
    assert fitted.mesh.now_landmarks3d.shape == (3, 7, 3)
    again = fit_benchmark_faces(faces, face_model, _config(), batch_size=3)  # same noise, other batching
    assert torch.allclose(again.mesh.vertices, fitted.mesh.vertices, atol=1e-5)
    summary = evaluate(faces, fitted.mesh, refine_steps=2)
    assert summary["median_mm"] > 0 and len(summary["per_image_median_mm"]) == 3


def test_landmark_noise_is_seeded_and_has_the_requested_sigma():
    faces = _faces(build_face_model(n_shape=10, n_expression=5), 2)
    a, b = noisy_landmarks(faces, 1.5, seed=0), noisy_landmarks(faces, 1.5, seed=0)
    assert torch.equal(a, b)
    assert (a - faces.landmarks).std().item() == pytest.approx(1.5, rel=0.15)


def test_a_set_at_another_resolution_than_the_config_is_refused():
    face_model = build_face_model(n_shape=10, n_expression=5)
    config = with_overrides(_config(), priors={"shape": 1e-4})
    config["image_size"] = 64
    with pytest.raises(ValueError, match="32 px"):
        fit_benchmark_faces(_faces(face_model), face_model, config)
