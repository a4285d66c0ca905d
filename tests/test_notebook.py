"""notebooks/explore_mnist.ipynb runs top to bottom in this environment's own kernel, and is stored clean."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_mnist.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def test_python3_kernel_is_this_environments_ipykernel():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # ipykernel's own spec: "python" (jupyter_client starts it with sys.executable) or this interpreter itself
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    assert spec.argv[1:3] == ["-m", "ipykernel_launcher"]
    assert (
        Path(spec.resource_dir).resolve().is_relative_to(Path(sys.prefix).resolve()) or spec.argv[0] == sys.executable
    )


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(mnist, tmp_path):
    """Every cell runs in this environment's kernel (a cell stuck for 120 s fails) and shows what it should."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"python {sys.executable}" in text  # the kernel is this interpreter, not one outside the venv
    assert "mean 0.1307  std 0.3081" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 5
    assert not list(tmp_path.iterdir())  # the notebook writes nothing
