"""The notebooks execute headless (nbclient) and are committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
#: The five slowest notebooks (about 160 s together on 2 cores) run with ``-m slow`` only, so the default
#: suite stays under 10 minutes; their analyses are tested in the default run (test_toy_mixture.py,
#: test_shell.py, test_norm_angle.py, test_digits_benchmark.py, test_flow_analyses.py), and their
#: committed form (no outputs) is checked here.
SLOW = {"toy_mixture", "prop32_shell", "prop31_norm_angle", "digits", "flow"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p for p in NOTEBOOKS],
                         ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("AMDM_GEOM_RUNS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let the kernel use its inline backend
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(o.output_type == "display_data" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if "AMDM_GEOM_RUNS" in "".join(c.source for c in nb.cells):
        assert list(tmp_path.glob("*.zarr"))  # the runs went where the environment said


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"prop31_norm_angle", "prop32_shell", "gaussianity"}
