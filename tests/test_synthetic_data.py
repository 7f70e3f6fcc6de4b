"""Specification of the synthetic splits, the on-the-fly dataset and the synth / contact-sheet CLIs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from regressor.synthetic.contact_sheet import main as contact_sheet_main
from regressor.synthetic.splits import (
    DEFAULT_SPLIT_SIZES, HELD_OUT_SPLITS, SPLIT_SEEDS, SPLIT_STRIDE, TRAINING_SPLITS, overlapping_splits, sample_seed,
    split_seed_range,
)
from regressor.synthetic.synth_cli import main as synth_main
from regressor.synthetic.generator import SyntheticFaceDataset
from regressor.synthetic.config import SyntheticConfig
from regressor.face_model import build_face_model
from regressor.types import FaceBatch

SIZE = 32


@pytest.fixture(scope="module")
def face_model():
    torch.manual_seed(0)
    return build_face_model()


def test_every_split_at_its_default_size_owns_seeds_no_other_split_uses():
    ranges = sorted(((split_seed_range(name, size), name) for name, size in DEFAULT_SPLIT_SIZES.items()),
                    key=lambda item: item[0].start)
    for (first, name), (second, other) in zip(ranges, ranges[1:]):
        assert first.stop <= second.start, f"{name} {first} runs into {other} {second}"
    assert {name for _, name in ranges} == set(TRAINING_SPLITS) | set(HELD_OUT_SPLITS)
    assert not set(TRAINING_SPLITS) & set(HELD_OUT_SPLITS)


def test_a_split_cannot_reach_into_the_next_seed_range():
    last_train = split_seed_range("train", 5, seed_offset=SPLIT_STRIDE - 5)
    assert last_train.stop == SPLIT_SEEDS["val"]
    assert overlapping_splits({"train": 5, "val": 5}, offsets={"train": SPLIT_STRIDE - 5}) == []
    with pytest.raises(ValueError, match="leaves the split's seed range"):
        split_seed_range("train", 10, seed_offset=SPLIT_STRIDE - 3)


def test_sample_seeds_follow_the_documented_formula_and_reject_unknown_splits():
    assert sample_seed("val", 7, seed_offset=100) == 10_000_000 + 107
    with pytest.raises(KeyError, match="unknown synthetic split 'valid'"):
        sample_seed("valid", 0)


def test_dataset_yields_the_project_sample_dict(face_model):
    dataset = SyntheticFaceDataset(4, image_size=SIZE, split="val", face_model=face_model)
    sample = dataset[2]
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["mask"].shape == (1, SIZE, SIZE)
    assert sample["landmarks"].shape == (68, 2) and sample["landmarks_valid"].shape == (68,)
    assert sample["vertices"].shape == (face_model.num_vertices, 3)
    assert sample["name"] == "val_0000002" and int(sample["index"]) == 2
    assert int(sample["seed"]) == SPLIT_SEEDS["val"] + 2
    assert set(sample["params"]) >= {"shape", "expression", "camera", "light"}


def test_dataloader_workers_and_batches_reproduce_single_samples(face_model):
    dataset = SyntheticFaceDataset(4, image_size=SIZE, split="train", seed_offset=50, face_model=face_model)
    single = [dataset[i] for i in range(4)]
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    seeds = torch.cat([b["seed"] for b in batches])
    assert seeds.tolist() == [50, 51, 52, 53]  # every sample once, none repeated across workers
    images = torch.cat([b["image"] for b in batches])
    torch.testing.assert_close(images, torch.stack([s["image"] for s in single]), atol=2e-3, rtol=0)
    typed = FaceBatch.from_dict(batches[0])
    assert typed.params.shape.shape == (2, face_model.n_shape) and typed.vertices.shape[0] == 2


def test_train_and_held_out_datasets_share_no_sample():
    train = SyntheticFaceDataset(1000, split="train")
    held_out = {SyntheticFaceDataset(1000, split=name).seed_of(i) for name in HELD_OUT_SPLITS for i in range(1000)}
    assert held_out.isdisjoint(train.seed_of(i) for i in range(1000))


def test_synth_cli_writes_images_annotations_and_manifest(tmp_path, face_model):
    out = tmp_path / "synth"
    assert synth_main(["--out", str(out), "--num", "3", "--size", str(SIZE), "--split", "test", "--seed", "5",
                       "--batch-size", "2", "--no-progress"]) == 0
    names = [f"test_{i:07d}" for i in (5, 6, 7)]
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == names
    assert sorted(p.stem for p in (out / "annotations").glob("*.npz")) == names
    assert sorted(p.stem for p in (out / "landmarks").glob("*.pts")) == names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num"] == 3 and manifest["first_seed"] == SPLIT_SEEDS["test"] + 5 and manifest["names"] == names

    annotation = np.load(out / "annotations" / f"{names[1]}.npz")
    expected = SyntheticFaceDataset(8, image_size=SIZE, split="test", face_model=face_model)[6]
    assert int(annotation["seed"]) == SPLIT_SEEDS["test"] + 6
    np.testing.assert_allclose(annotation["landmarks"], expected["landmarks"].numpy(), atol=1e-4)
    np.testing.assert_allclose(annotation["vertices"], expected["vertices"].numpy(), atol=1e-6)
    np.testing.assert_allclose(annotation["params_shape"], expected["params"]["shape"].numpy(), atol=1e-6)
    assert annotation["mask"].shape == (SIZE, SIZE) and annotation["now_landmarks"].shape == (7, 2)
    image = np.asarray(Image.open(out / "images" / f"{names[1]}.png"))
    assert image.shape == (SIZE, SIZE, 3)
    assert np.abs(image / 255.0 - expected["image"].permute(1, 2, 0).numpy()).max() < 1.0 / 255 + 2e-3


def test_synth_cli_reads_a_yaml_config_and_names_bad_keys(tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text("yaw_max_deg: 10.0\nnot_a_field: 1\n")
    with pytest.raises(KeyError, match="not_a_field"):
        synth_main(["--out", str(tmp_path / "x"), "--num", "1", "--config", str(config), "--no-progress"])


def test_contact_sheet_cli_writes_a_grid(tmp_path):
    out = tmp_path / "sheet.png"
    assert contact_sheet_main(["--out", str(out), "--num", "4", "--size", str(SIZE), "--landmarks"]) == 0
    assert Image.open(out).size == (2 * SIZE + 3 * 2, 2 * SIZE + 3 * 2)


def test_model_only_dataset_config_is_plain(face_model):
    sample = SyntheticFaceDataset(1, image_size=SIZE, config=SyntheticConfig.model_only(), face_model=face_model)[0]
    background = sample["image"] * (1 - sample["mask"])
    assert float(background.abs().max()) == 0.0  # constant black backdrop, no noise, no clutter
