"""bf16 only where the hardware has it: the run-time decision, the encoder's fallback, and the record."""
import json
import logging

import pytest
import torch

from benchmarks.end_to_end import goal_checks
from benchmarks.output import write_json
from regressor.models import precision
from regressor.models.encoder import FaceEncoder


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this CPU 'has' native bf16 (the /proc/cpuinfo flags), and forget what was logged."""
    monkeypatch.setattr(precision, "_logged", set())

    def set_flags(flags: list[str]) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: list(flags))

    return set_flags


def _backbone_dtype(encoder: FaceEncoder) -> tuple[torch.dtype, torch.dtype]:
    """(the backbone's output dtype, the camera parameters' dtype) for a tiny batch."""
    seen = {}

    def hook(module, args, out) -> None:  # returns None: the output is left as it is
        seen["dtype"] = out.dtype

    handle = encoder.backbone.register_forward_hook(hook)
    try:
        with torch.no_grad():
            params = encoder.eval()(torch.rand(2, 3, 32, 32))
    finally:
        handle.remove()
    return seen["dtype"], params.camera.dtype


def _tiny_encoder(bf16) -> FaceEncoder:
    return FaceEncoder(backbone="mobilenetv3_small_050", n_shape=4, n_expression=3, n_albedo=2, bf16=bf16)


def test_without_bf16_hardware_the_shipped_setting_runs_fp32(cpu_bf16):
    cpu_bf16([])
    assert not precision.bf16_supported("cpu")
    assert _backbone_dtype(_tiny_encoder(True)) == (torch.float32, torch.float32)
    assert _backbone_dtype(_tiny_encoder("auto")) == (torch.float32, torch.float32)


def test_with_bf16_hardware_the_backbone_runs_under_autocast(cpu_bf16):
    cpu_bf16(["avx512_bf16"])
    assert precision.bf16_supported("cpu")
    # Backbone in bf16; the heads (and so every parameter) stay fp32.
    assert _backbone_dtype(_tiny_encoder(True)) == (torch.bfloat16, torch.float32)


def test_false_is_always_fp32_and_always_is_always_bf16(cpu_bf16):
    cpu_bf16(["amx_bf16"])
    assert _backbone_dtype(_tiny_encoder(False)) == (torch.float32, torch.float32)
    cpu_bf16([])
    assert _backbone_dtype(_tiny_encoder("always")) == (torch.bfloat16, torch.float32)


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="bf16"):
        _tiny_encoder("yes")


def test_the_choice_is_logged_once_per_device_kind(cpu_bf16, caplog):
    cpu_bf16([])
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        assert not precision.use_bf16(True, "cpu")
        assert not precision.use_bf16(True, "cpu")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "fp32" in record.getMessage()
    assert "native bf16: none" in record.getMessage()


def test_cpu_capability_is_json_ready():
    capability = precision.cpu_capability()
    assert set(capability) >= {"torch_cpu_capability", "native_bf16_flags", "bf16_supported", "model"}
    assert capability["bf16_supported"] == bool(capability["native_bf16_flags"])
    json.dumps(capability)


def test_every_benchmark_json_records_the_precision_and_the_cpu(tmp_path, cpu_bf16):
    cpu_bf16([])
    write_json(tmp_path / "figures.json", {"images_per_s": 1.0})
    write_json(tmp_path / "rows.json", [{"name": "a"}, {"name": "b"}])
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["precision"] == "fp32" and "torch_cpu_capability" in figures["cpu_capability"]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all(row["precision"] == "fp32" and "cpu_capability" in row for row in rows)
    # A benchmark's own record (e.g. a forced arm) is kept.
    write_json(tmp_path / "own.json", {"precision": "bf16-autocast"})
    assert json.loads((tmp_path / "own.json").read_text())["precision"] == "bf16-autocast"


def test_end_to_end_meets_its_goal_only_when_every_goal_is_met():
    figures = {"end_to_end_images_per_s_64": 70.0, "end_to_end_images_per_s_128": 20.0, "slowdown_against_fp32_64": 1.02,
               "goals": {"end_to_end_images_per_s_64": 60, "end_to_end_images_per_s_128": 25,
                         "slowdown_against_fp32_64": 1.5}}
    assert goal_checks(figures) == {"end_to_end_images_per_s_64": True, "end_to_end_images_per_s_128": False,
                                    "slowdown_against_fp32_64": True}
