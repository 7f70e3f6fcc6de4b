"""The pre-rendered training pool: written once, memory-mapped, refused clearly when broken."""
import json

import numpy as np
import pytest
import torch

from regressor.data.landmarks_io import load_landmarks
from regressor.synthetic.generator import SyntheticFaceGenerator
from regressor.synthetic.pool import FacePool, PoolError, PoolSpec, write_pool
from regressor.synthetic.splits import sample_seed
from regressor.synthetic.synth_cli import main as synth_main


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, face_model):
    out = tmp_path_factory.mktemp("pool")
    write_pool(PoolSpec(out=out, num=3, image_size=32, split="train", seed_offset=5, workers=1), show_progress=False)
    return out


@pytest.fixture(scope="module")
def face_model():
    from regressor.face_model import build_face_model

    return build_face_model()


def test_pool_sample_equals_the_generator_for_its_seed(pool_dir, face_model):
    pool = FacePool(pool_dir)
    assert len(pool) == 3
    sample = pool[1]
    expected = SyntheticFaceGenerator(face_model, 32).generate([sample_seed("train", 1, 5)])
    assert int(sample["seed"]) == sample_seed("train", 1, 5)
    # images are stored as uint8: equal up to quantisation
    assert torch.allclose(sample["image"], expected.image[0].clamp(0, 1), atol=1 / 255 + 1e-6)
    assert torch.allclose(sample["landmarks"], expected.landmarks[0], atol=1e-5)
    assert torch.allclose(sample["params"]["shape"], expected.params.shape[0])
    assert torch.allclose(sample["params"]["camera"], expected.params.camera[0])


def test_pool_without_manifest_is_refused(pool_dir, tmp_path):
    for path in pool_dir.glob("*.npy"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(PoolError, match="manifest.json is missing"):
        FacePool(tmp_path)


def test_truncated_pool_array_is_refused(pool_dir, tmp_path):
    for path in pool_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    images = tmp_path / "images.npy"
    images.write_bytes(images.read_bytes()[:200])
    with pytest.raises(PoolError, match="images.npy"):
        FacePool(tmp_path)


def test_pool_count_mismatch_is_refused(pool_dir, tmp_path):
    for path in pool_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["num"] = 7
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoolError, match="manifest says 7 faces"):
        FacePool(tmp_path)


def test_synth_pts_round_trip_gives_the_projected_landmarks(tmp_path):
    assert synth_main(["--out", str(tmp_path), "--num", "2", "--size", "32", "--no-progress"]) == 0
    annotation = np.load(tmp_path / "annotations" / "train_0000001.npz")
    points = load_landmarks(tmp_path / "landmarks" / "train_0000001.pts")
    np.testing.assert_allclose(points, annotation["landmarks"], atol=1e-3)


def test_synth_cli_writes_a_pool(tmp_path):
    assert synth_main(["--out", str(tmp_path / "pool"), "--num", "2", "--size", "32", "--pool", "--no-progress"]) == 0
    assert len(FacePool(tmp_path / "pool")) == 2
