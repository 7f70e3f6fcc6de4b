"""`regressor fit|validate|predict` on the quickstart config (tiny sizes): resume, predict, reuse."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from regressor.cli import main
from regressor.data.predict_folder import PredictImageDataset
from regressor.inference import Reconstructor
from tests.regression_helpers import QUICKSTART, TINY_SIZE, critic_checkpoint, shrink_config


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 2-step quickstart run: (tiny config path, output dir)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("quickstart")
    config = shrink_config(QUICKSTART, out, critic_checkpoint(out))
    assert main(["fit", "--config", str(config)]) == 0
    return config, out


def _scalar_steps(run_dir, tag="loss/total") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def test_fit_writes_last_and_best_checkpoints(fitted):
    _, out = fitted
    names = {p.name for p in (out / "dirpath").iterdir()}
    assert "last.ckpt" in names and any(n.startswith("regressor-step=") for n in names)
    checkpoint = torch.load(out / "dirpath" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2


def test_resume_from_last_continues_at_the_same_global_step(fitted):
    config, out = fitted
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "3", "--ckpt_path", "last"]) == 0
    checkpoint = torch.load(out / "dirpath" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    runs = sorted((out / "save_dir" / "tensorboard").iterdir())
    first, resumed = _scalar_steps(runs[0]), _scalar_steps(runs[-1])
    assert len(runs) == 2 and first == [0, 1]
    assert resumed == [2], "the resumed run must log only the one new step, numbered after the first run's"


def test_predict_on_an_image_folder_writes_each_image_its_own_prediction(fitted, tmp_path):
    config, out = fitted
    checkpoint = out / "dirpath" / "last.ckpt"
    images = tmp_path / "faces"
    images.mkdir()
    generator = torch.Generator().manual_seed(0)
    for name in ("anna", "ben"):
        pixels = (torch.rand(48, 40, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{name}.png")
    predictions = tmp_path / "predictions"
    assert main([
        "predict", "--config", str(config), "--ckpt_path", str(checkpoint),
        "--data.init_args.predict_dir", str(images), "--prediction_writer.output_dir", str(predictions),
        "--data.init_args.detect_landmarks", "false",  # centre crops, whether or not dlib is installed
    ]) == 0
    written = {p.name for p in predictions.iterdir()}
    for name in ("anna", "ben"):
        assert {f"{name}.obj", f"{name}.npz", f"{name}_render.png"} <= written
    # the values: each file holds what the checkpoint predicts for *its* image's crop (the Lightning
    # module, built from the config, against the Reconstructor, built from the checkpoint alone)
    dataset = PredictImageDataset(images, TINY_SIZE)  # the same centre crops, in name order: anna, ben
    crops = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    expected = Reconstructor.from_checkpoint(checkpoint).predict(crops)
    saved = {name: np.load(predictions / f"{name}.npz") for name in ("anna", "ben")}
    keys = ("shape", "expression", "global_pose", "jaw_pose", "camera", "albedo", "light")

    def matches(name: str, index: int) -> bool:
        return all(np.allclose(saved[name][key], getattr(expected.params, key)[index].numpy(), rtol=1e-4, atol=1e-7)
                   for key in keys)

    assert matches("anna", 0) and matches("ben", 1)
    assert not matches("anna", 1) and not matches("ben", 0)  # the images differ enough to tell a swapped name
    for index, name in enumerate(("anna", "ben")):
        vertices = [[float(v) for v in line.split()[1:4]]
                    for line in (predictions / f"{name}.obj").read_text().splitlines() if line.startswith("v ")]
        np.testing.assert_allclose(np.asarray(vertices), expected.mesh.vertices[index].numpy(), atol=1e-5)


def test_validate_reports_held_out_metrics(fitted, capsys):
    config, out = fitted
    assert main(["validate", "--config", str(config), "--ckpt_path", str(out / "dirpath" / "last.ckpt")]) == 0
    printed = capsys.readouterr().out
    assert "val/vertex_error_aligned_mm" in printed and "val/landmark_error_px" in printed


def test_a_cli_checkpoint_loads_in_the_reconstructor_without_the_config(fitted):
    _, out = fitted
    path = out / "dirpath" / "last.ckpt"
    reconstructor = Reconstructor.from_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    trained = {key[len("pipeline."):]: value for key, value in state.items() if key.startswith("pipeline.")}
    torch.testing.assert_close(reconstructor.pipeline.state_dict(), trained, rtol=0, atol=0)  # every weight, exactly
    result = reconstructor.predict(torch.rand(2, 3, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(1)))
    assert result.mesh.vertices.shape[0] == 2 and result.renders.shaded.shape[-1] == TINY_SIZE
    # two training steps moved the heads off the zero start: not the mean face a weightless load would give
    model = reconstructor.pipeline.face_model
    with torch.no_grad():
        mean_face = model(model.zero_params(2)).vertices
    assert (result.mesh.vertices - mean_face).norm(dim=-1).mean() > 1e-4


def test_config_with_a_class_path_from_before_the_architecture_step_names_the_new_path(tmp_path):
    from regressor.training.cli import MovedClassPathError

    old = QUICKSTART.read_text().replace(
        "regressor.training.regression.RegressorModule", "regressor.modules.regression.RegressorModule"
    )
    config = tmp_path / "old.yaml"
    config.write_text(old)
    with pytest.raises(MovedClassPathError, match="regressor.training.regression.RegressorModule"):
        main(["fit", "--config", str(config)])


@pytest.mark.parametrize("init_args, expected", [
    ({"backbone": "resnet18"}, "model.init_args.backbone has moved; write it in model.init_args.encoder: "
                               "{class_path: regressor.models.encoder.FaceEncoder, init_args: {backbone: ...}}"),
    ({"n_shape": 100}, "model.init_args.n_shape has moved; write it in the top-level face_model"),
    ({"renderer": {"backend": "torch"}}, "model.init_args.renderer is a plain dict .*components are typed now: "
                                         "write model.init_args.renderer: {class_path: regressor.render.Renderer, "
                                         "init_args: {backend: 'torch'}}"),
    ({"face_model": {"model_path": "x.pkl"}}, "model.init_args.face_model is a plain dict .*write the top-level "
                                              "face_model: {class_path: regressor.face_model.FaceModel, "
                                              "init_args: {model_path: 'x.pkl'}}"),
    ({"face_model": {"class_path": "regressor.face_model.FaceModel"}},
     "model.init_args.face_model is declared once now: move it to the top-level face_model"),
])
def test_config_keys_from_before_the_typed_components_name_the_new_key(tmp_path, init_args, expected):
    import re

    import yaml

    from regressor.training.cli import OldConfigKeyError

    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "regressor.training.regression.RegressorModule",
                                                "init_args": init_args}}))
    with pytest.raises(OldConfigKeyError, match=re.escape(expected).replace(r"\.\*", ".*")):
        main(["fit", "--config", str(config)])


def test_a_checkpoint_with_the_flat_hyper_parameters_of_before_still_loads(tmp_path):
    """Checkpoints written before the typed components hold backbone, sizes and kwargs dicts."""
    from regressor.pipeline import build_pipeline

    flat = {"backbone": "mobilenetv3_small_050", "n_shape": 10, "n_expression": 5, "n_albedo": 4, "image_size": 32,
            "encoder": {"hidden_dim": 32}, "face_model": None, "renderer": {"backend": "torch"}}
    pipeline = build_pipeline(**flat)
    state = {f"pipeline.{k}": v for k, v in pipeline.state_dict().items()}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {**flat, "lr": 1e-3, "losses": None}}, path)
    reconstructor = Reconstructor.from_checkpoint(path)
    assert reconstructor.pipeline.encoder.init_args["hidden_dim"] == 32
    torch.testing.assert_close(reconstructor.pipeline.state_dict(), pipeline.state_dict())


def test_validate_accepts_a_checkpoint_with_the_flat_hyper_parameters_of_before(fitted, tmp_path, capsys):
    """``--ckpt_path`` re-reads the checkpoint's hyper-parameters; flat ones are translated to the typed form."""
    config, out = fitted
    checkpoint = torch.load(out / "dirpath" / "last.ckpt", map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    encoder = hparams.pop("encoder")["init_args"]
    sizes = {key: encoder.pop(key) for key in ("n_shape", "n_expression", "n_albedo")}
    hparams.update(backbone=encoder.pop("backbone"), encoder=encoder, renderer=hparams["renderer"]["init_args"],
                   face_model=None, **sizes)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert main(["validate", "--config", str(config), "--ckpt_path", str(old)]) == 0
    assert "val/landmark_error_px" in capsys.readouterr().out


def test_an_old_key_on_the_command_line_names_the_new_key():
    from regressor.training.cli import OldConfigKeyError

    with pytest.raises(OldConfigKeyError, match=r"the command line: model.init_args.renderer is a plain dict .*"
                                                r"\{class_path: regressor.render.Renderer, init_args: \{backend: 'torch'\}\}"):
        main(["fit", "--config", str(QUICKSTART), "--model.init_args.renderer", "{backend: torch}"])
