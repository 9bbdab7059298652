"""The CPU-preset rounds of experiments/ffp_cpu_preset.py and experiments/amc_cpu_preset.py stay reproducible: each
candidate's committed overrides still compose to the config its run was trained with (recorded in
experiments/preset_candidates.json), although the presets they start from have changed since."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import hydra
import pytest

from vad import config_dir

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
preset_rounds = importlib.import_module("preset_rounds")
SCRIPTS = ("ffp_cpu_preset", "amc_cpu_preset")


def overrides(script: str, name: str) -> list[str]:
    return list(importlib.import_module(script).CANDIDATES[name][1])


def recorded() -> dict[str, dict]:
    return json.loads(preset_rounds.CANDIDATE_CONFIGS.read_text())


def test_every_candidate_of_both_scripts_is_recorded() -> None:
    saved = recorded()
    for script in SCRIPTS:
        assert set(saved[script]) == set(importlib.import_module(script).CANDIDATES), script


@pytest.mark.parametrize(("script", "name"), [(s, n) for s in SCRIPTS for n in importlib.import_module(s).CANDIDATES])
def test_candidate_overrides_still_compose_to_the_config_it_was_trained_with(script: str, name: str) -> None:
    expected = recorded()[script][name]["config"]
    assert preset_rounds.config_drift(expected, overrides(script, name)) == {}


def test_drift_names_the_key_a_later_preset_edit_changed() -> None:
    # round 3 took the discriminator out of experiment=amc_ped2_cpu; the round's incumbent pins its weight of then
    pinned = overrides("amc_cpu_preset", "amc_ped2_cpu")
    expected = recorded()["amc_cpu_preset"]["amc_ped2_cpu"]["config"]
    unpinned = [o for o in pinned if not o.startswith(("model.loss.adversarial=", "trainer.max_steps="))]
    drift = preset_rounds.config_drift(expected, unpinned)
    assert drift == {"model.loss.adversarial": (0.25, 0.0), "trainer.max_steps": (3000, 6000)}


def test_a_key_the_record_lacks_is_not_drift_but_a_removed_key_is() -> None:
    base = ["experiment=amc_ped2_cpu"]
    now = preset_rounds.composed_training_config(base)
    older = {k: v for k, v in now.items() if k != "trainer.max_steps"}  # an option added after the run: not drift
    assert preset_rounds.config_drift(older, base) == {}
    renamed = {**now, "trainer.max_iterations": 6000}  # an option the suite no longer has
    assert preset_rounds.config_drift(renamed, base) == {"trainer.max_iterations": (6000, "<absent>")}


def test_training_config_leaves_out_only_what_does_not_change_the_weights() -> None:
    config = {
        "paths": {"data_dir": "/data"},
        "test": True,
        "tags": ["a"],
        "model": {"score": {"psnr": 1.0}, "smoothing": 2, "loss": {"adversarial": 0.25}, "clip_len": 2},
        "dataset": {"val_pseudo": {"object_scale": [0.5, 2.0]}, "val_videos": 2},
        "trainer": {"max_steps": 10, "precision": "32-true"},
        "callbacks": {"ema": None},
        "testing": 1,  # shares the prefix "test" but is not the key "test"
    }
    assert preset_rounds.training_config(config) == {
        "model.loss.adversarial": 0.25,
        "model.clip_len": 2,
        "dataset.val_videos": 2,
        "trainer.max_steps": 10,
        "trainer.precision": "32-true",
        "callbacks.ema": None,
        "testing": 1,
    }


def test_train_refuses_a_candidate_whose_overrides_drifted_before_starting_it(tmp_path: Path) -> None:
    expected = recorded()["amc_cpu_preset"]["amc_noadv_3k"]["config"]
    drifted = ["experiment=amc_ped2_cpu", "model.loss.adversarial=0.0", "test=false"]  # 6000 it now, 3000 then
    with pytest.raises(
        SystemExit, match=r"amc_noadv_3k: its overrides no longer compose .*'trainer.max_steps': \(3000, 6000\)"
    ):
        preset_rounds.train("amc_noadv_3k", drifted, tmp_path / "data", tmp_path / "runs", expected)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_snapshot_records_a_kept_runs_saved_config_and_composes_the_others(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    candidates = {"kept": ["experiment=amc_ped2_cpu"], "lost": ["experiment=amc_ped2_cpu", "trainer.max_steps=10"]}
    with hydra.initialize_config_dir(str(config_dir()), version_base=None):
        run_cfg = hydra.compose("train", overrides=["experiment=amc_ped2_cpu", "trainer.max_steps=1234", "test=false"])
    (tmp_path / "runs" / "kept" / ".hydra").mkdir(parents=True)
    OmegaConf.save(run_cfg, tmp_path / "runs" / "kept" / ".hydra" / "config.yaml")
    target = tmp_path / "candidates.json"
    target.write_text(json.dumps({"other_script": {"x": {"source": "s", "config": {}}}}))
    preset_rounds.snapshot("script", candidates, tmp_path / "runs", target)
    saved = json.loads(target.read_text())
    assert saved["other_script"] == {"x": {"source": "s", "config": {}}}  # other scripts' entries are kept
    kept, lost = saved["script"]["kept"], saved["script"]["lost"]
    assert kept["source"] == "the config its run was trained with"
    assert kept["config"]["trainer.max_steps"] == 1234  # the run's, not what the overrides compose to today
    assert "test" not in kept["config"]
    assert "paths.data_dir" not in kept["config"]
    assert lost["source"].startswith("composed on")
    assert lost["config"]["trainer.max_steps"] == 10
    assert preset_rounds.config_drift(kept["config"], candidates["kept"]) == {"trainer.max_steps": (1234, 6000)}
