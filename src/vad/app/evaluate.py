"""Test a trained checkpoint (or a method without weights) and write the report into a new run folder.

    python -m vad.evaluate ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m vad.evaluate ckpt_path=logs/train/runs/<run> select=best_on_test
    python -m vad.evaluate model=copy_last dataset=ped2

The checkpoint carries the config it was trained with; the model, dataset and flow settings come from there.
Command-line overrides apply on top (``dataset.root=/copy/elsewhere``), and switching a whole group
(``dataset=avenue``) takes that group's config instead. The test runs in the checkpoint's precision (its run's
``trainer.precision``, float32 or bf16-mixed), so a checkpoint's test is reproduced exactly, unless the command line
sets ``trainer.precision``. ``select=best_on_test`` tests every checkpoint of a run and
keeps the best micro AUC: that number is selected on the test labels and is reported as such.

When every test video has pixel masks (UCSD, Avenue, ShanghaiTech) the test also measures the pixel-level metrics of
the method's error maps (pixel AUC, the UCSD 40 % criterion, RBDC / TBDC; ``vad.evaluation.pixel.evaluation``):
metrics.json ``pixel`` and the printed summary. ``pixel_metrics=false`` skips them; without masks ``pixel`` is null
and ``pixel_reason`` says why.

Footage without a test split (``dataset.root=`` a folder of videos or frame folders, all of it "training" to the
dataset readers) is scored whole: every video in it is a test video (``VideoDataModule(footage_as_test=True)``).
Without labels the report says that there is nothing to evaluate against (no AUC) and scores.csv holds every scored
frame's signals.
A ``ckpt_path`` that is not a checkpoint of this suite, or whose weights do not fit the model, is refused in one line
(``vad.checkpoint_io``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vad import precision
from vad.app.cli import check_fresh, run_directory, run_hydra, show
from vad.errors import ConfigError, DataError

# torch, Lightning and the modules importing them load inside the functions: --help and a mistyped key are answered
# first (see vad.train).
#: the suite's datamodule, compared by name to avoid importing it (and torch) here
VIDEO_DATAMODULE = "vad.data.datamodule.VideoDataModule"

GROUPS = ("model", "dataset", "flow", "flow_targets")
SELECTIONS = {
    "last": "last",
    "best_on_test": (
        "best_on_test (chosen by test-set micro AUC: optimistic, not comparable to last-checkpoint results)"
    ),
}


def checkpoint_files(ckpt_path: str, select: str) -> list[Path]:
    """The checkpoint(s) to test: one file for ``last``, every ``*.ckpt`` of the run for ``best_on_test``."""
    path = Path(ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path: {path} not found; pass a .ckpt file or a run folder")
    folder = path if path.is_dir() else path.parent
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    if select == "best_on_test":
        files = sorted(folder.glob("*.ckpt"))
        if not files:
            raise ConfigError(f"ckpt_path: no .ckpt files in {folder}")
        return files
    if path.is_file():
        return [path]
    last = folder / "last.ckpt"
    if not last.is_file():
        raise ConfigError(f"ckpt_path: {folder} holds no last.ckpt; pass the checkpoint file itself")
    return [last]


def test_data_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with its dataset tested whole when it has no test split (``footage_as_test``, when it is the suite's
    VideoDataModule)."""
    if cfg.dataset.get("_target_") != VIDEO_DATAMODULE:
        return cfg
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    out.dataset.footage_as_test = True
    return out


def precision_overridden() -> bool:
    """Whether this command line sets the trainer's precision (``trainer.precision=...`` or ``trainer=<group>``)."""
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return any(o.key_or_group in ("trainer", "trainer.precision") for o in overrides)


def effective_config(cfg: DictConfig, saved: dict[str, Any]) -> DictConfig:
    """The checkpoint's config with this command line's overrides of the model / dataset / flow groups on top."""
    eff = OmegaConf.create(saved["config"])
    eff.paths = cfg.paths
    eff.seed = cfg.seed
    choices = HydraConfig.get().runtime.choices
    for group in GROUPS:
        if choices.get(group) != saved["choices"].get(group):  # the user switched the whole group
            eff[group] = cfg[group]
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        if "." in key and key.split(".", 1)[0] in GROUPS:
            OmegaConf.update(eff, key, OmegaConf.select(cfg, key), force_add=True)
    return eff


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_info

    from vad.app.build import build_datamodule, build_model, build_trainer, resolve_precision
    from vad.app.stages import test_and_report
    from vad.checkpoint_io import check_fits, read_checkpoint, saved_config
    from vad.data.datamodule import VideoDataModule
    from vad.evaluation.pixel.evaluation import PixelEvaluation
    from vad.io import atomic_path
    from vad.reporting import tracking
    from vad.reporting.machine import run_metadata
    from vad.reporting.summary import format_summary

    select = cfg.get("select", "last")
    if select not in SELECTIONS:
        raise ConfigError(f"select={select} is not one of {sorted(SELECTIONS)}")
    run_dir = run_directory()
    check_fresh(run_dir, resuming=False)
    pixel = PixelEvaluation.from_config(cfg, run_dir)  # the pixel_* settings, checked before anything runs
    L.seed_everything(cfg.seed, workers=True)
    precision_choice = None
    if cfg.get("ckpt_path"):
        files = checkpoint_files(cfg.ckpt_path, select)
        saved = saved_config(files[-1])
        eff = effective_config(cfg, saved)
        if not precision_overridden():  # as it was trained and tested where that is native (a bf16 run: bf16)
            device = precision.device_type(cfg.trainer.get("accelerator"))
            chosen, precision_choice = precision.for_scoring(precision.of_run(saved["config"]), device)
            with open_dict(cfg):
                cfg.trainer.precision = chosen
            if precision_choice is not None:
                rank_zero_info(precision_choice)
    else:
        files, eff = [], cfg
    precision_choice = resolve_precision(cfg) or precision_choice  # trainer.precision=auto given on the command line
    model = build_model(eff)
    if model.trainable and not files:
        raise ConfigError(
            f"model {eff.model._target_} has trainable weights: pass ckpt_path=<checkpoint or run folder>"
        )
    for ckpt in files:
        check_fits(model, read_checkpoint(ckpt), ckpt)
    datamodule = build_datamodule(test_data_config(eff), model)
    trainer = build_trainer(cfg, run_dir, with_callbacks=False)
    meta = run_metadata() | {"seed": cfg.seed, "run_dir": str(run_dir), "task": "evaluate"}
    meta["precision_choice"] = precision_choice
    footage = datamodule.describe_footage() if isinstance(datamodule, VideoDataModule) else None
    if footage is not None:
        if select == "best_on_test":
            raise ConfigError(f"select=best_on_test picks a checkpoint by test AUC, but the test videos are {footage}")
        meta["test_videos"] = footage
    with tracking.finishing(trainer.loggers):  # each job of a multirun finishes its own tracker run
        if select == "best_on_test" and len(files) > 1:
            scan = {}
            for ckpt in files:
                trainer.test(model, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False)
                scan[str(ckpt)] = model.test_result.auc_micro
            best = max(scan, key=lambda k: scan[k])
            with atomic_path(run_dir / "best_on_test_scan.json") as tmp:
                tmp.write_text(json.dumps(scan, indent=2))
            files = [Path(best)]
            meta["best_on_test_scan"] = scan
        result = test_and_report(
            trainer,
            model,
            datamodule,
            run_dir,
            ckpt_path=str(files[0]) if files else None,
            selection=SELECTIONS[select],
            meta=meta,
            pixel=pixel,
        )
    if result is None:  # not reached: a dataset without any video is refused by its reader
        raise DataError(f"{eff.dataset.root}: nothing was tested (no test videos)")
    if trainer.is_global_zero:
        name = eff.model._target_.rsplit(".", 1)[-1]
        checkpoint = f"{files[0]} ({SELECTIONS[select]})" if files else "none (untrained model)"
        title = f"{name} on {eff.dataset.name} [{select}]"
        summary = format_summary(
            result, title, checkpoint=checkpoint, note=footage, pixel=pixel.summary, calibrated=model.test_calibrated
        )
        show(summary)
    return result.to_dict()


def _with_checkpoint_choices(argv: list[str]) -> list[str]:
    """Prepend the checkpoint's group choices (model=..., dataset=..., flow=...) the command line does not set.

    Composing with the groups the checkpoint was trained with lets overrides of their keys (``model.gamma=...``)
    pass the config check even when they do not exist in the default groups.
    """
    ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt_path=")), None)
    select = next((a.split("=", 1)[1] for a in argv if a.startswith("select=")), "last")
    if not ckpt:
        return argv
    from vad.checkpoint_io import saved_config  # torch: only to read the checkpoint named on the command line

    try:
        choices = saved_config(checkpoint_files(ckpt, select if select in SELECTIONS else "last")[-1])["choices"]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    return [f"{g}={choices[g]}" for g in GROUPS if g in choices and g not in given] + argv


def main() -> None:
    sys.argv = [sys.argv[0], *_with_checkpoint_choices(sys.argv[1:])]
    run_hydra("eval", evaluate)


if __name__ == "__main__":
    main()
