"""Every preset composes to the config it composed to before the restructuring of src/vad (commit 9aa94c9).

``tests/data/preset_configs_9aa94c9.json`` holds ``compose("train", ["experiment=<name>"])`` of every
``conf/experiment/*.yaml`` at that commit, unresolved (interpolations as written). Today's composition must equal it
except for what the restructuring moved on purpose, listed here:

- the callbacks' classes moved from ``vad.callbacks`` to ``vad.app.callbacks`` (their ``_target_``; the table of
  moved targets is :data:`vad.checkpoint_io.MOVED_TARGETS`, which also renames them in old checkpoints' configs);
- ``model.smoothing`` is now declared in every model config with its default 0 (a preset that set it keeps its value).

Regenerate the file only for a preset change made on purpose, never to make a refactoring pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vad import config_dir
from vad.checkpoint_io import current_targets

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "preset_configs_9aa94c9.json"
BEFORE: dict[str, Any] = json.loads(SNAPSHOT.read_text())


@pytest.fixture(scope="module")
def composed() -> dict[str, Any]:
    out = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for name in BEFORE:
            out[name] = OmegaConf.to_container(compose("train", overrides=[f"experiment={name}"]), resolve=False)
    return out


def test_the_snapshot_covers_every_preset() -> None:
    assert sorted(BEFORE) == sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_preset_composes_as_before_the_restructuring(composed: dict[str, Any], name: str) -> None:
    before, now = current_targets(BEFORE[name]), json.loads(json.dumps(composed[name]))
    if "smoothing" not in before["model"]:
        assert now["model"].pop("smoothing", 0.0) == 0.0  # the declared default, which is what its absence meant
    assert now == before
