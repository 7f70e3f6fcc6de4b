"""Specifications of FaceDataModule: every source yields collatable batches the model accepts."""
from __future__ import annotations

import json
import warnings
from collections import Counter

import pytest
import torch
from PIL import Image

from regressor.training.datamodule import FaceDataModule
from regressor.data.landmarks_io import load_landmarks
from regressor.data.mixing import MixedFaceDataset
from regressor.synthetic.config import SyntheticConfig
from regressor.types import FaceBatch
from tests.face_folder_fixtures import make_face_folder

FAST_SYNTHETIC = SyntheticConfig.model_only()  # geometry as usual, cheap appearance


@pytest.fixture()
def folder(tmp_path):
    make_face_folder(tmp_path / "faces", count=8, height=90, width=80)
    return tmp_path / "faces"


def small_module(**overrides) -> FaceDataModule:
    settings = dict(image_size=32, batch_size=4, synthetic_train_samples=8, synthetic_val_samples=4,
                    synthetic_test_samples=4, synthetic_config=FAST_SYNTHETIC)
    settings.update(overrides)
    return FaceDataModule(**settings)


def test_synthetic_training_and_held_out_validation_batches_build_a_face_batch():
    module = small_module()
    module.setup("fit")
    train = FaceBatch.from_dict(next(iter(module.train_dataloader())))
    assert train.image.shape == (4, 3, 32, 32) and train.params is not None and train.vertices is not None
    val_batch = next(iter(module.val_dataloader()))
    assert all(name.startswith("val_") for name in val_batch["name"])  # the held-out seed range
    assert FaceBatch.from_dict(val_batch).landmarks.shape == (4, 68, 2)


def test_folder_training_batches_are_augmented_crops_with_landmarks(folder):
    module = small_module(train_source="folder", train_dir=str(folder), val_source="folder", val_dir=str(folder))
    module.setup("fit")
    batch = FaceBatch.from_dict(next(iter(module.train_dataloader())))
    assert batch.image.shape == (4, 3, 32, 32) and batch.mask.shape == (4, 1, 32, 32)
    assert batch.params is None and torch.isfinite(batch.landmarks).all()
    assert module.datasets["train"].augment is not None and module.datasets["val"].augment is None


def test_mixed_training_draws_both_sources_into_one_collatable_batch(folder):
    module = small_module(train_source="mixed", train_dir=str(folder), mix_weights={"synthetic": 0.5, "folder": 0.5},
                          batch_size=8, samples_per_epoch=8, val_source="none")
    module.setup("fit")
    dataset = module.datasets["train"]
    assert isinstance(dataset, MixedFaceDataset) and len(dataset) == 16
    torch.manual_seed(0)
    raw = next(iter(module.train_dataloader()))
    batch = FaceBatch.from_dict(raw)
    assert batch.image.shape == (8, 3, 32, 32) and batch.vertices is None  # only keys every source has
    assert set(raw["source"].tolist()) == {0, 1}
    assert module.val_dataloader() == []


def test_mix_weights_set_each_sources_share_independently_of_its_size(folder):
    module = small_module(train_source="mixed", train_dir=str(folder), mix_weights={"synthetic": 0.25, "folder": 0.75},
                          synthetic_train_samples=100, samples_per_epoch=4000)
    module.setup("fit")
    dataset = module.datasets["train"]
    sampler = module.train_dataloader().sampler
    draws = Counter(dataset.locate(i)[0] for i in sampler)
    assert draws[1] / 4000 == pytest.approx(0.75, abs=0.03)  # 8 folder files still get 75%
    assert list(sampler) != list(sampler)  # a new draw every epoch


def test_same_seed_gives_the_same_first_training_batch(folder):
    def first_batch():
        torch.manual_seed(0)
        module = small_module(train_source="folder", train_dir=str(folder), seed=3)
        module.setup("fit")
        return next(iter(module.train_dataloader()))

    a, b = first_batch(), first_batch()
    assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])


def test_predict_reads_plain_images_with_landmarks_boxes_or_neither(tmp_path, folder):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, source in enumerate(sorted((folder / "images").iterdir())[:3]):
        source.rename(photos / f"photo_{i}.png")
    (folder / "landmarks" / "face_00.pts").rename(photos / "photo_0.pts")  # next to the image
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"photo_1": [10, 20, 60, 70]}))
    module = small_module(predict_dir=str(photos), predict_boxes=str(boxes), eval_batch_size=8,
                          detect_landmarks=False)  # the centre-crop fallback, even where dlib is installed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.setup("predict")
        batch = next(iter(module.predict_dataloader()))
    assert batch["name"] == ["photo_0", "photo_1", "photo_2"] and batch["image"].shape == (3, 3, 32, 32)
    landmarks = load_landmarks(photos / "photo_0.pts")
    low, high = landmarks.min(0), landmarks.max(0)
    x0, y0, x1, y1 = batch["box"][0].tolist()
    assert x1 - x0 == pytest.approx(1.6 * max(high - low), rel=1e-4)  # cropped from its landmarks
    assert batch["box"][1].tolist() == pytest.approx([5.0, 15.0, 65.0, 75.0])  # the given box, x1.2
    assert batch["box"][2].tolist() == pytest.approx([0.0, 5.0, 80.0, 85.0])  # centre square of 80x90
    assert module.skip_counts() == {"predict": {"unreadable_image": 1}}


def test_skip_counts_include_files_found_bad_while_loading(folder):
    jpeg = folder / "images" / "face_05.jpg"
    Image.open(folder / "images" / "face_05.png").convert("RGB").save(jpeg)
    (folder / "images" / "face_05.png").unlink()
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # header intact: only decoding fails
    (folder / "landmarks" / "face_06.pts").write_text("version: 1\nn_points: 1\n{\n1 2\n}\n")
    module = small_module(train_source="folder", train_dir=str(folder), num_workers=1, val_source="none", batch_size=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.setup("fit")
        assert module.skip_counts() == {"train": {"bad_landmarks": 1}}  # seen up front
        names = [n for batch in module.train_dataloader() for n in batch["name"]]
    assert len(names) == 7  # a full epoch over the 7 vetted files: the truncated one was replaced
    assert "face_05" not in names and "face_06" not in names
    # found inside the worker process, reported back to this one:
    assert module.skip_counts() == {"train": {"bad_landmarks": 1, "unreadable_image": 1}}
    assert "unreadable_image: 1" in module.skip_report()


def test_configuration_mistakes_are_reported_by_name():
    with pytest.raises(ValueError, match="train_source folder needs train_dir"):
        FaceDataModule(train_source="folder")
    with pytest.raises(ValueError, match="unknown train_source 'celeba'; registered: .*'synthetic'"):
        FaceDataModule(train_source="celeba")
    with pytest.raises(ValueError, match="val_source 'pool' cannot serve val"):
        FaceDataModule(val_source="pool", pool_dir="x")
    with pytest.raises(ValueError, match="mix_weights must have keys"):
        FaceDataModule(train_source="mixed", train_dir="x", mix_weights={"synthetic": 1.0, "real": 1.0})
    with pytest.raises(ValueError, match="predict needs predict_dir"):
        small_module().setup("predict")


def test_yaml_style_configuration_parses_with_jsonargparse(folder):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(FaceDataModule, "data")
    config = parser.parse_object({"data": {
        "train_source": "mixed", "train_dir": str(folder), "image_size": 32,
        "mix_weights": {"synthetic": 0.7, "folder": 0.3},
        "synthetic_config": {"yaw_max_deg": 20.0, "background": "plain"},
    }})
    module = parser.instantiate_classes(config).data
    assert isinstance(module, FaceDataModule) and module.image_size == 32
    assert module.hparams.synthetic_config.yaw_max_deg == 20.0
    assert module.hparams.mix_weights == {"synthetic": 0.7, "folder": 0.3}


def test_training_run_over_a_folder_with_ten_percent_bad_files_completes_and_logs_skips(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from regressor.training.regression import RegressorModule
    from tests.regression_helpers import tiny_module_kwargs

    faces = tmp_path / "faces"
    make_face_folder(faces, count=20, height=64, width=64)
    (faces / "images" / "face_04.png").write_bytes(b"corrupt")  # unreadable
    (faces / "landmarks" / "face_13.pts").unlink()  # missing landmarks
    torch.manual_seed(0)
    module = RegressorModule(**tiny_module_kwargs())
    data = small_module(train_source="folder", train_dir=str(faces), val_source="none", batch_size=6)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=CSVLogger(tmp_path / "logs"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 18 // 6  # the epoch ran in full on the 18 good files
    assert data.skip_counts() == {"train": {"unreadable_image": 1, "missing_landmarks": 1}}
    logged = (tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "data/skipped/train/total" in logged and "data/skipped/train/missing_landmarks" in logged


def test_raw_photos_without_landmark_files_are_detected_cached_and_faceless_ones_counted(tmp_path):
    pytest.importorskip("dlib", reason="the [detect] extra (dlib-bin) is not installed")
    skimage_data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.jpg", quality=92)  # public domain
    Image.new("RGB", (96, 96), (128, 128, 128)).save(photos / "wall.png")  # no face
    cache = tmp_path / "detected"
    module = small_module(train_source="folder", train_dir=str(photos), val_source="none", batch_size=2,
                          detect_landmarks=True, landmark_cache_dir=str(cache), predict_dir=str(photos))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.setup("fit")
        batch = next(iter(module.train_dataloader()))
    assert batch["name"] == ["astronaut", "astronaut"]  # the face-less photo was replaced
    assert module.skip_counts() == {"train": {"no_face_detected": 1}}
    assert (cache / "astronaut.pts").is_file()  # detected once, reused afterwards
    landmarks = batch["landmarks"][0]
    assert landmarks.min() > 0 and landmarks.max() < 32  # the crop frames the detected face
    module.setup("predict")
    predicted = next(iter(module.predict_dataloader()))
    x0, y0, x1, y1 = predicted["box"][0].tolist()
    assert x1 - x0 < 400  # cropped around the detected face, not the whole 512 px photo


def test_predict_detects_by_default_when_the_detector_is_installed(tmp_path, monkeypatch):
    import regressor.detect as detect

    module = small_module(predict_dir=str(tmp_path))
    monkeypatch.setattr(detect, "detector_available", lambda: True)
    assert module.landmark_provider(str(tmp_path), predicting=True) is not None
    assert module.landmark_provider(str(tmp_path)) is None  # training folders need landmark files unless asked
    monkeypatch.setattr(detect, "detector_available", lambda: False)
    with pytest.warns(UserWarning, match="not installed"):
        assert module.landmark_provider(str(tmp_path), predicting=True) is None
    assert small_module(predict_dir=str(tmp_path), detect_landmarks=False).landmark_provider(str(tmp_path), True) is None


def test_a_data_source_name_can_be_registered_once():
    from regressor.training.sources import DataSource, register_data_source

    with pytest.raises(ValueError, match=r"data source 'folder' is already registered "
                                         r"\(regressor.training.sources.folder.FolderSource\)"):
        @register_data_source("folder")
        class AnotherFolder(DataSource):
            pass


def test_synthetic_samples_come_from_the_configured_face_model():
    from regressor.face_model import build_face_model

    model = build_face_model(n_shape=8, n_expression=4, n_albedo=3)
    module = FaceDataModule(image_size=32, batch_size=2, face_model=model, synthetic_val_samples=2)
    module.setup("validate")
    assert module.datasets["val"].generator.face_model is model
    sample = module.datasets["val"][0]
    assert sample["params"]["shape"].shape == (8,)
