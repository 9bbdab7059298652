"""Instantiate the suite's components from a composed config: the method (new, or trained from a checkpoint), its
frozen helper nets, the datamodule, the trainer, and the precision ``auto`` means here.

    model = build_model(cfg)
    trainer = build_trainer(cfg, run_dir, val_videos=datamodule.val_videos)

The entry points only compose, call these and the stages of :mod:`vad.app.stages`, and print.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from vad import precision
from vad.app.callbacks import BestValCheckpoint, NonFiniteCheckpoint
from vad.checkpoint_io import AtomicCheckpointIO, check_fits, saved_config
from vad.errors import ConfigError, unwrapped_constructor_errors
from vad.methods.base import FrozenNet, VADModule


def resolve_precision(cfg: DictConfig, started: Mapping[str, Any] | None = None) -> str | None:
    """Set ``cfg.trainer.precision=auto`` to what it means here (:func:`vad.precision.resolve`: bf16-mixed where
    bfloat16 is native, float32 otherwise), or, resuming a run whose config is ``started``, to the precision that
    run started in. Returns the line saying what was chosen and why (None when the precision was given explicitly,
    which always wins), after printing it once (rank 0)."""
    from lightning.pytorch.utilities import rank_zero_info

    requested = cfg.trainer.get("precision")
    if str(requested) != precision.AUTO:
        return None
    first = str(((started or {}).get("trainer") or {}).get("precision", precision.AUTO))
    if first != precision.AUTO:
        chosen, line = first, f"trainer.precision=auto: {first}, the precision the resumed run started in"
    else:
        chosen, line = precision.resolve(requested, cfg.trainer.get("accelerator"))
        assert line is not None
    with open_dict(cfg):
        cfg.trainer.precision = chosen
    rank_zero_info(line)
    return line


def build_frozen_nets(cfg: DictConfig, declared: Mapping[str, FrozenNet]) -> dict[str, nn.Module]:
    """The auxiliary frozen nets a method declares, each built from its config group (``cfg[spec.group]``).

    A group set to a ``none`` config (instantiating to None) or absent gives no net; the method decides whether it
    needs one. A constructor's VadError (a missing checkpoint, a bad option) is raised as it is.
    """
    nets: dict[str, nn.Module] = {}
    for name, spec in declared.items():
        node = cfg.get(spec.group)
        if node is None:
            continue
        with unwrapped_constructor_errors():
            net = instantiate(node, _convert_="all")
        if net is not None:
            nets[name] = net
    return nets


def build_model(cfg: DictConfig) -> VADModule:
    """The method of ``cfg.model``, given the auxiliary frozen nets it declares (``frozen_nets``) by name."""
    target = get_class(cfg.model._target_)
    if not (isinstance(target, type) and issubclass(target, VADModule)):
        raise ConfigError(f"model._target_={cfg.model._target_} is not a vad.methods.base.VADModule")
    kwargs: dict[str, Any] = {}
    if target.frozen_nets:
        kwargs["frozen"] = build_frozen_nets(cfg, target.frozen_nets)
    with unwrapped_constructor_errors():
        model = instantiate(cfg.model, _convert_="all", **kwargs)
    model.attach_run({"config": OmegaConf.to_container(cfg, resolve=True), "choices": _group_choices()})
    return model


def _group_choices() -> dict[str, str]:
    """The config-group choices of the running Hydra job (model=ffp, dataset=ped2, ...), for re-composition."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}


def build_datamodule(cfg: DictConfig, model: VADModule | None = None) -> L.LightningDataModule:
    """The datamodule of ``cfg.dataset``; given the ``model``, its clips carry what the method asks for
    (:meth:`VADModule.clip_requests`, e.g. flow targets) besides the frames."""
    datamodule = instantiate(cfg.dataset, _convert_="all")
    requests = model.clip_requests() if model is not None else {}
    if requests:
        datamodule.request(requests)
    return datamodule


def build_trainer(
    cfg: DictConfig, run_dir: Path, *, with_callbacks: bool = True, val_videos: int | float = 0
) -> L.Trainer:
    """The trainer of ``cfg.trainer`` with the loggers of ``cfg.logger`` and, for training (``with_callbacks``), the
    callbacks of ``cfg.callbacks`` plus :class:`~vad.app.callbacks.NonFiniteCheckpoint`, which every training run has.
    Checkpoints are written atomically (:class:`~vad.checkpoint_io.AtomicCheckpointIO`). With held-out validation
    videos (``val_videos``: the datamodule's, which says how many it holds out) the checkpoint of the best validation
    micro AUC is kept too (:class:`~vad.app.callbacks.BestValCheckpoint`, what ``test_checkpoint=best_val`` tests).
    ``trainer.precision=auto`` is resolved for this machine (:func:`resolve_precision`)."""
    resolve_precision(cfg)  # trainer.precision=auto, when the entry point has not resolved it already
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]
    callbacks = []
    if with_callbacks:
        with unwrapped_constructor_errors():
            callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
        callbacks.append(NonFiniteCheckpoint(run_dir / "checkpoints"))
        if val_videos:
            callbacks.append(BestValCheckpoint(run_dir / "checkpoints"))
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )


def model_from_checkpoint(ckpt: Path, cfg: DictConfig) -> tuple[VADModule, DictConfig]:
    """The trained method of a vad checkpoint, in eval mode, with its calibration and buffers, its weights in the memory
    format of its test (its ``setup``), and the run config it was trained with (``paths`` and ``seed`` of ``cfg``), for
    the commands that use a trained detector."""
    import torch

    saved = saved_config(ckpt)
    run_cfg = OmegaConf.create(saved["config"])
    run_cfg.paths = cfg.paths
    model = build_model(run_cfg)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    check_fits(model, checkpoint, ckpt)  # one line naming a weight that does not fit, as vad.train and vad.evaluate
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    # what a Trainer's setup hook does before vad.evaluate's test (channels-last weights for the methods that ask):
    # without it a detector scored outside a Trainer runs its convolutions in another memory format than its test
    model.setup("predict")
    return model.eval(), run_cfg
