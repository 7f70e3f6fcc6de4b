"""The notebooks run top to bottom (tiny settings), so they never rot; outputs stay out of git."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
SHIPPED_CRITIC = REPO_ROOT / "checkpoints" / "critic.pt"


def _python3_kernel() -> str:
    """The name of a kernel running *this* interpreter; installs the venv's spec if missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix)  # into <venv>/share/jupyter/kernels/python3
    # jupyter_client runs a spec whose argv starts with "python" with sys.executable, i.e. the venv.
    return "python3"


def test_both_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"demo.ipynb", "critic_explained.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_with_tiny_settings(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_PSL_NOTEBOOK_TINY", "1")
    # The shipped critic when there is one. Without it, demo shows the untrained fallback and
    # critic_explained loads a tiny critic file, so both code paths run in every state of the repo.
    critic = SHIPPED_CRITIC
    if not critic.is_file() and path.stem == "critic_explained":
        from tests.regression_helpers import tiny_critic_checkpoint

        critic = tiny_critic_checkpoint(tmp_path / "critic.pt")
    monkeypatch.setenv("FACE_PSL_CRITIC", str(critic))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures become outputs
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name=_python3_kernel(), resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "TINY=True" in text
    if critic.is_file():
        assert f"loaded the critic {critic}" in text
    else:
        assert "UNTRAINED critic" in text
    figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    expected = {"demo": 3, "critic_explained": 2}.get(path.stem, 1)
    assert figures >= expected, f"{path.name} drew {figures} figures, expected at least {expected}"
