"""Instantiate the suite's components from a composed config, and run the test + report stage.

The entry points (``vad.train``, ``vad.evaluate``) only compose, call these, and print. The report goes to the run
folder and to every tracker of the trainer (``vad.reporting.tracking``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from vad import precision
from vad.app.callbacks import BestValCheckpoint, NonFiniteCheckpoint
from vad.checkpoint_io import AtomicCheckpointIO, check_fits
from vad.errors import ConfigError, unwrapped_constructor_errors
from vad.evaluation import protocol as scoring
from vad.evaluation.pixel.evaluation import PixelEvaluation
from vad.methods.base import FrozenNet, VADModule
from vad.reporting import report, tracking


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
    # model.smoothing belongs to the protocol, not to a method's constructor: every method gets it the same way
    node = cfg.model.copy()
    with open_dict(node):
        smoothing = scoring.check_smoothing(node.pop("smoothing", 0.0))
    with unwrapped_constructor_errors():
        model = instantiate(node, _convert_="all", **kwargs)
    model.smoothing = smoothing
    model.run_config = {"config": OmegaConf.to_container(cfg, resolve=True), "choices": _group_choices()}
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


def build_trainer(cfg: DictConfig, run_dir: Path, *, with_callbacks: bool = True) -> L.Trainer:
    """The trainer of ``cfg.trainer`` with the loggers of ``cfg.logger`` and, for training (``with_callbacks``), the
    callbacks of ``cfg.callbacks`` plus :class:`~vad.app.callbacks.NonFiniteCheckpoint`, which every training run has.
    Checkpoints are written atomically (:class:`~vad.checkpoint_io.AtomicCheckpointIO`). With held-out validation
    videos (``dataset.val_videos``) the checkpoint of the best validation micro AUC is kept too
    (:class:`~vad.app.callbacks.BestValCheckpoint`, what ``test_checkpoint=best_val`` tests). ``trainer.precision=auto``
    is resolved for this machine (:func:`resolve_precision`)."""
    resolve_precision(cfg)  # trainer.precision=auto, when the entry point has not resolved it already
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]
    callbacks = []
    if with_callbacks:
        with unwrapped_constructor_errors():
            callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
        callbacks.append(NonFiniteCheckpoint(run_dir / "checkpoints"))
        if cfg.dataset.get("val_videos"):
            callbacks.append(BestValCheckpoint(run_dir / "checkpoints"))
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )


def test_and_report(
    trainer: L.Trainer,
    model: VADModule,
    datamodule: Any,
    run_dir: Path,
    *,
    ckpt_path: str | None,
    selection: str,
    meta: dict[str, Any],
    pixel: PixelEvaluation | None,
) -> Any:
    """Test ``model`` (weights of ``ckpt_path`` when given), write the report into ``run_dir`` and publish it to the
    trainer's trackers (rank 0). ``meta`` is recorded in metrics.json with the checkpoint, the world size and the
    tracker runs, and the test's wall time (``test_seconds``). With ``pixel`` the test also measures the pixel-level
    metrics (``vad.evaluation.pixel.evaluation``), recorded as ``pixel`` (null when not computed, ``pixel_reason`` saying why)."""
    start = time.perf_counter()
    model.pixel_evaluation = pixel
    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    finally:
        model.pixel_evaluation = None
        if pixel is not None:
            pixel.cleanup()
    seconds = time.perf_counter() - start
    result = model.test_result
    if trainer.is_global_zero and result is not None:
        meta = dict(meta)
        meta.update({"checkpoint": ckpt_path, "checkpoint_selection": selection, "world_size": trainer.world_size})
        meta["precision"] = str(trainer.precision)  # the test's arithmetic (bf16-mixed: bfloat16 autocast)
        meta.setdefault("selected_on_test_labels", selection.startswith("best_on_test"))
        tracking.publish_selection(
            trainer.loggers,
            {k: meta.get(k) for k in ("checkpoint_selection", "selected_on_test_labels", "val_auc_micro")},
        )
        meta["test_seconds"] = round(seconds, 3)
        if pixel is not None:
            meta["pixel"] = pixel.block
            if pixel.block is None:
                meta["pixel_reason"] = pixel.reason
        model.test_calibrated = None
        if model.calibration is not None:
            meta["calibrated"] = model.test_calibrated = calibrated_metrics(model, result)
        meta.update(tracking.describe(trainer.loggers))
        full_labels = {v.name: v.labels for v in datamodule.test_videos if v.labels is not None}
        paths = report.write_report(run_dir, result, meta, full_labels, samples=model.test_samples)
        tracking.publish_report(trainer.loggers, result, paths, step=trainer.global_step)
    return result


def model_from_checkpoint(ckpt: Path, cfg: DictConfig) -> tuple[VADModule, DictConfig]:
    """The trained method of a vad checkpoint, in eval mode, with its calibration and buffers, its weights in the memory
    format of its test (its ``setup``), and the run config it was trained with (``paths`` and ``seed`` of ``cfg``), for
    the commands that use a trained detector."""
    import torch

    from vad.app.evaluate import saved_config

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


#: the false-alarm rate of the alert threshold ``vad.evaluate`` reports (``vad.score``'s default)
REPORTED_FPR = 0.01


def calibrated_metrics(model: VADModule, result: Any) -> dict[str, Any]:
    """The test scored as a stream would be (``vad.evaluation.calibration``: no per-video min-max; each video's scores smoothed
    causally as the calibration says, as ``vad.score`` smooths an input's), beside the protocol's numbers: the micro
    AUC of the calibrated scores, and the precision / recall / false-alarm rate of the alerts at the threshold of a
    1% false-alarm rate on the calibration frames."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from vad.evaluation.calibration import alert_metrics

    calibration = model.calibration
    assert calibration is not None
    labelled = [v for v in result.videos if v.labels is not None]
    out: dict[str, Any] = {
        "source": calibration.source,
        "frames": calibration.frames,
        "smoothing": calibration.smoothing,
        "fpr": REPORTED_FPR,
    }
    if not labelled:
        return out
    scores = np.concatenate([calibration.stream_scores(v.signals, result.weights) for v in labelled])
    labels = np.concatenate([v.labels for v in labelled]).astype(int)
    threshold = calibration.threshold(REPORTED_FPR)
    out["threshold"] = threshold
    out["auc_micro"] = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None
    out |= {f"alert_{k}": v for k, v in alert_metrics(scores, labels, threshold).items()}
    return out
