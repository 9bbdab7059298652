"""The notebooks run top to bottom on a fresh folder (the quickstart makes its own tiny sweep on the synthetic set)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAD_HOME", str(tmp_path))  # the kernel and the runs it starts write under tmp_path
    monkeypatch.delenv("VAD_NOTEBOOK_SWEEP", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    if path.stem == "quickstart":
        assert "| job | model.optim.lr_g | status    |" in text  # the sweep summary of the two jobs
        assert "micro AUC" in text  # the two runs compared
        images = [
            o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
        ]
        assert len(images) == 3  # score curves and ROC of one run, the overlaid curves of two
