"""Instantiate the suite's components from a composed config, and run the test + report stage.

The entry points (``vad.train``, ``vad.evaluate``) only compose, call these, and print.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from vad import report
from vad.errors import ConfigError
from vad.flow import build_flow
from vad.methods.base import VADModule


def build_model(cfg: DictConfig) -> VADModule:
    """The method of ``cfg.model``; the flow estimator is passed to methods that take one."""
    target = get_class(cfg.model._target_)
    kwargs: dict[str, Any] = {}
    if "flow" in inspect.signature(target.__init__).parameters:
        kwargs["flow"] = build_flow(cfg.flow) if cfg.get("flow") is not None else None
    model = instantiate(cfg.model, _convert_="all", **kwargs)
    if not isinstance(model, VADModule):
        raise ConfigError(f"model._target_={cfg.model._target_} is not a vad.methods.base.VADModule")
    model.run_config = {"config": OmegaConf.to_container(cfg, resolve=True), "choices": _group_choices()}
    return model


def _group_choices() -> dict[str, str]:
    """The config-group choices of the running Hydra job (model=ffp, dataset=ped2, ...), for re-composition."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate(cfg.dataset, _convert_="all")


def build_trainer(cfg: DictConfig, run_dir: Path, *, with_callbacks: bool = True) -> L.Trainer:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]
    callbacks = (
        [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
        if with_callbacks
        else []
    )
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir))


def sample_rows(samples: dict[str, np.ndarray] | None, count: int = 4) -> list[list[np.ndarray]]:
    """Rows of [last input, prediction, target, error map] images for the sample grid, from (N, C, H, W) arrays."""
    if not samples:
        return []

    def image(x: np.ndarray) -> np.ndarray:
        return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))

    rows = []
    for i in range(min(count, len(samples["target"]))):
        error = np.abs(samples["prediction"][i] - samples["target"][i]).mean(axis=0)
        rows.append([image(samples["input"][i]), image(samples["prediction"][i]), image(samples["target"][i]), error])
    return rows


def test_and_report(
    trainer: L.Trainer,
    model: VADModule,
    datamodule: Any,
    run_dir: Path,
    *,
    ckpt_path: str | None,
    selection: str,
    meta: dict[str, Any],
) -> Any:
    """Test ``model`` (weights of ``ckpt_path`` when given) and write the report into ``run_dir`` (rank 0)."""
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    result = model.test_result
    if trainer.is_global_zero and result is not None:
        meta = dict(meta)
        meta.update({"checkpoint": ckpt_path, "checkpoint_selection": selection})
        full_labels = {v.name: v.labels for v in datamodule.test_videos if v.labels is not None}
        report.write_report(run_dir, result, meta, full_labels, samples=sample_rows(model.test_samples))
    return result
