"""The built wheel works on its own: build it, install it outside the repository, run ``regressor predict``
from another working directory on two images (issue: the shipped weights were found by paths relative to
the repository). The shipped files are package data (``regressor.assets``)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from regressor.assets import SHIPPED_CHECKPOINTS, is_shipped_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "regressor", "callbacks", "checkpoints", "configs")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the sources (no build/ or egg-info in the repository)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True,
                   env=dict(os.environ, PIP_NO_INPUT="1"))
    (found,) = out.glob("face_psl_regressor-*.whl")
    return found


@pytest.mark.slow
def test_wheel_holds_exactly_the_shipped_files_byte_for_byte(wheel):
    with zipfile.ZipFile(wheel) as archive:
        data = {name: archive.read(name) for name in archive.namelist() if name.startswith("regressor/_assets/")}
    checkpoints = {name.rsplit("/", 1)[1] for name in data if name.startswith("regressor/_assets/checkpoints/")}
    assert checkpoints == set(SHIPPED_CHECKPOINTS)  # the experiments' critics in checkpoints/ stay out
    configs = {name[len("regressor/_assets/configs/"):] for name in data if name.startswith("regressor/_assets/configs/")}
    expected = {str(p.relative_to(REPO_ROOT / "configs")) for p in (REPO_ROOT / "configs").rglob("*.yaml")}
    assert configs == {c for c in expected if is_shipped_config(c)} and "fitting/default.yaml" in configs
    for name, content in data.items():
        repository_path = REPO_ROOT / name[len("regressor/_assets/"):]
        assert _digest(content) == _digest(repository_path.read_bytes()), name


@pytest.mark.slow
def test_installed_wheel_predicts_two_images_from_another_directory(wheel, tmp_path):
    from regressor.synthetic.synth_cli import main as synth

    faces = tmp_path / "faces"  # two held-out synthetic faces with their landmark files
    synth(["--out", str(faces), "--num", "2", "--size", "128", "--split", "test", "--no-progress"])
    site = tmp_path / "site"  # `pip install --target`: the package and a `regressor` console script
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the install folder
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    out = elsewhere / "meshes"
    done = subprocess.run([str(site / "bin" / "regressor"), "predict", "--images", str(faces / "images"),
                           "--out", "meshes"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "predictions.json").read_text())
    # the weights came from the installed package, not from the repository
    assert Path(record["checkpoint"]).resolve().is_relative_to(site.resolve()), record["checkpoint"]
    assert {name: image["crop"] for name, image in record["images"].items()} == {
        "test_0000000": "landmarks", "test_0000001": "landmarks"}
    for name in ("test_0000000", "test_0000001"):
        assert (out / f"{name}.obj").stat().st_size > 0 and (out / f"{name}_render.png").is_file()
    import numpy as np

    shapes = [np.load(out / f"{name}.npz")["shape"] for name in ("test_0000000", "test_0000001")]
    assert np.abs(shapes[0] - shapes[1]).max() > 1e-3  # two faces, two different predictions
    assert "predicted 2 face(s)" in done.stdout
