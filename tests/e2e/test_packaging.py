"""vad as an installed package: the configs ship inside it (``pkg://vad.conf``), a user's own config folder plugs in
(``--config-dir`` or ``hydra.searchpath``) and passes the checks made before Hydra runs, and a wheel built with
``python -m build`` runs ``vad-train`` from an empty folder (slow: it builds, installs and trains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from vad.app.cli import fast_help
from vad.app.overrides import check_overrides
from vad.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# a preset of the user's own: the quickstart with fewer steps, in <folder>/experiment/mine.yaml
USER_PRESET = "# @package _global_\ndefaults:\n  - quickstart\ntrainer:\n  max_steps: 3\n"


@pytest.fixture
def user_conf(tmp_path: Path) -> Path:
    folder = tmp_path / "my_conf"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(USER_PRESET)
    return folder


def test_a_users_config_folder_passes_the_override_check(user_conf: Path) -> None:
    with pytest.raises(ConfigError, match="unknown choice 'mine' for experiment"):
        check_overrides("train", ["experiment=mine"])
    check_overrides("train", ["--config-dir", str(user_conf), "experiment=mine"])
    check_overrides("train", [f"--config-dir={user_conf}", "experiment=mine", "trainer.max_steps=4"])
    check_overrides("train", [f"hydra.searchpath=[file://{user_conf}]", "experiment=mine"])
    # the user's preset is composed, not only admitted: its key's default is what a wrong type is checked against
    with pytest.raises(ConfigError, match=r"trainer.max_steps=abc: expected an integer \(default 3\)"):
        check_overrides("train", ["-cd", str(user_conf), "experiment=mine", "trainer.max_steps=abc"])
    with pytest.raises(ConfigError, match=r"additional config directory .* not found"):
        check_overrides("train", ["--config-dir", str(user_conf / "missing"), "experiment=mine"])


def test_help_lists_the_groups_of_a_users_config_folder(user_conf: Path) -> None:
    for extra in (["--config-dir", str(user_conf)], [f"hydra.searchpath=[file://{user_conf}]"]):
        text = fast_help("train", ["--help", *extra, "experiment=mine"])
        experiments = next(line for line in text.splitlines() if line.startswith("experiment: "))
        assert "mine" in experiments.split(": ", 1)[1].split(", ")
        assert "quickstart" in experiments


def _wheel_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: no checkout on PYTHONPATH, none of the suite's folder variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAD_") and k != "PYTHONPATH"}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment (no system site-packages) with vad's wheel installed; returns its ``bin``.

    vad comes from the wheel; its dependencies (torch and the rest, gigabytes to install) come from this test's own
    environment, through a ``.pth`` line that puts that site-packages AFTER the new one. Only plain paths are taken
    from it: the ``.pth`` files there (the checkout's editable install among them) are not processed."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (work / "dist").glob("vad-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "zz_vad_dependencies.pth").write_text("\n".join(ours) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", wheel],
        check=True,
        timeout=600,
    )
    return venv / "bin"


@pytest.mark.slow
def test_the_wheel_trains_from_an_empty_folder(installed_wheel: Path, tmp_path: Path, user_conf: Path) -> None:
    here = tmp_path / "empty"
    here.mkdir()
    env = _wheel_env(tmp_path)
    where = subprocess.run(
        [installed_wheel / "python", "-c", "import vad, vad.conf; print(vad.__file__); print(vad.config_dir())"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    venv = installed_wheel.parent
    assert all(Path(p).is_relative_to(venv) for p in where), f"vad not imported from the wheel: {where}"

    # a user's preset from their own folder: composed (and checked) from the installed configs
    shown = subprocess.run(
        [installed_wheel / "vad-train", "--config-dir", str(user_conf), "experiment=mine", "--cfg", "job"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "max_steps: 3" in shown.stdout
    assert not any(here.iterdir()), "--cfg job wrote into the folder"

    run = subprocess.run(
        [installed_wheel / "vad-train", "experiment=quickstart", "trainer.max_steps=5"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (metrics,) = here.glob("logs/train/runs/*/metrics.json")
    assert '"auc_micro"' in json.dumps(json.loads(metrics.read_text()))
    assert (here / "data").is_dir(), "the synthetic scene was not generated under the folder it ran from"
