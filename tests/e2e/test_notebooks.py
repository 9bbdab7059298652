"""The notebooks run top to bottom on a fresh folder (the quickstart makes its own tiny sweep on the synthetic set;
slow: a kernel and a training subprocess), and the quickstart's cells run in this process on the sweep its command
makes (fast: the same command and the same reading of the runs, without the kernel and the fresh Python)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import nbformat
import pytest
from IPython.display import Image
from nbclient import NotebookClient

from vad.app import train as train_module

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
QUICKSTART = next(p for p in NOTEBOOKS if p.stem == "quickstart")


@pytest.mark.slow
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


@pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval")
def test_the_quickstart_cells_read_the_sweep_of_its_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAD_HOME", str(tmp_path))
    monkeypatch.delenv("VAD_NOTEBOOK_SWEEP", raising=False)
    monkeypatch.chdir(tmp_path)
    commands: list[list[str]] = []

    def in_process(command: list[str], **_: Any) -> subprocess.CompletedProcess:
        """The notebook's ``python -m vad.train -m ...``, run by vad.train's main in this process."""
        assert command[:3] == [sys.executable, "-m", "vad.train"]
        commands.append(command)
        monkeypatch.setattr(sys, "argv", ["vad.train", *command[3:]])
        train_module.main()
        return subprocess.CompletedProcess(command, 0, "", "")

    shown: list[Any] = []
    cells = [c.source for c in nbformat.read(QUICKSTART, as_version=4).cells if c.cell_type == "code"]
    namespace: dict[str, Any] = {}
    exec(cells[0], namespace)  # the imports
    namespace.update(subprocess=SimpleNamespace(run=in_process), display=shown.append)
    try:
        for cell in cells[1:]:
            exec(cell, namespace)
        figure = namespace["fig"]
        assert len(figure.axes) == len(namespace["videos"])  # the overlaid curves of the two runs, one axis a video
    finally:
        plt.close("all")
    assert len(commands) == 1
    text = capsys.readouterr().out
    assert "| job | model.optim.lr_g | status    |" in text  # the sweep summary of the two jobs
    assert "micro AUC" in text  # the two runs compared
    assert [Path(image.filename).name for image in shown if isinstance(image, Image)] == ["score_curves.png", "roc.png"]
