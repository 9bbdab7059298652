"""Run the suite's Hydra entry points in-process on the real configs (as a Hydra job would), for tests."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from vad import config_dir

sys.path.insert(0, str(Path(__file__).parent))
from raw_fixtures import write_ffp

#: FFP's nets at their smallest: a width 4 U-Net of depth 2 and a small discriminator (the method's own keys)
FFP_NETS = ["model.generator.features=4", "model.generator.depth=2", "model.discriminator.features=[4,8,8,8]"]
#: a tiny FFP run: the debug=tiny settings (conf/debug/tiny.yaml: 3 iterations, quiet) and the small nets; seconds
#: per step on a loaded CPU
TINY_FFP = ["debug=tiny", *FFP_NETS]


def tiny_dataset(root: Path) -> list[str]:
    """An FFP-layout dataset of 2 training / 2 test grey videos with per-video labels; returns dataset overrides."""
    fixture = write_ffp(
        root,
        train_lengths=(10, 9),
        test_lengths=(9, 8),
        test_ranges=([(6, 8)], [(1, 4)]),
        height=32,
        width=32,
    )
    (root / "testing" / "labels").mkdir(parents=True, exist_ok=True)
    for name, labels in fixture.labels.items():
        np.save(root / "testing" / "labels" / f"{name}.npy", labels.astype(np.uint8))
    return [
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.name=tiny",
        "dataset.channels=1",
        "dataset.image_size=[32,32]",
        "dataset.num_workers=0",
        "dataset.persistent_workers=false",
        "dataset.eval_batch_size=4",
    ]


def hydra_job(config_name: str, overrides: Sequence[str], run_dir: Path, home: Path) -> DictConfig:
    """Compose like a Hydra job in ``run_dir`` (paths under ``home``) and register its HydraConfig."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[*overrides, f"hydra.run.dir={run_dir}", f"paths.root_dir={home}"],
            return_hydra_config=True,
        )
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def tiny_synthetic(root: Path) -> list[str]:
    """Overrides for a small copy of the suite's synthetic scene (generated into ``root`` on first use): 2 training
    and 2 test videos of 36 frames at 32x32 grey."""
    return [
        "dataset=synthetic",
        f"dataset.root={root}",
        "+dataset.generator.num_train=2",
        "+dataset.generator.num_test=2",
        "+dataset.generator.frames_per_video=36",
        "+dataset.generator.size=[32,32]",
        "dataset.image_size=[32,32]",
        "dataset.eval_batch_size=8",
    ]
