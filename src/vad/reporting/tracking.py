"""Experiment trackers: the wandb logger of ``logger=wandb``, closing tracker runs, and publishing images and reports.

``logger=wandb`` builds Lightning's WandbLogger through :func:`wandb_logger`, which picks the mode (online when
credentials exist, offline otherwise, ``WANDB_MODE`` always wins) and names the run after its Hydra job: the jobs of
a multirun share one group (the sweep folder's name) and each is named by its overrides. Offline runs live in the
run folder and upload later:

    <run>/wandb/offline-run-<time>-<id>/      run-<id>.wandb, files/media/{images,table}/...
    wandb sync <run>/wandb/offline-run-*

    with finishing(trainer.loggers):          # every job ends its own wandb run, also when it fails
        trainer.fit(...); publish_report(trainer.loggers, result, paths, step=trainer.global_step)

Publishing goes through one function per tracker kind (:data:`PUBLISHERS`); loggers without one (CSV) are skipped,
the files stay in the run folder either way.

``logger=tensorboard`` builds :class:`TensorBoardRunLogger`: Lightning's TensorBoardLogger closes its writer when
fitting ends, and the test's first scalar reopens one; tensorboardX names event files by the second and the host, so
a test starting within the same second as the end of training truncated the training curves' file. This logger only
flushes at the end of fitting and is closed by :func:`finishing`.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from vad.errors import ConfigError
from vad.evaluation.protocol import ProtocolResult

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_WANDB_HOST = "https://api.wandb.ai"


class TensorBoardRunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger with one event file per run: ``finalize`` (end of fit / test) flushes instead of
    closing the writer, so no later write reopens, and truncates, a file of the same name; :func:`finishing` closes
    it."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()

    @rank_zero_only
    def close(self) -> None:
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None


def has_wandb_credentials(env: Mapping[str, str] | None = None) -> bool:
    """Whether wandb could log in: ``WANDB_API_KEY`` is set, or the netrc file (``NETRC`` or ``~/.netrc``, where
    ``wandb login`` writes) holds an entry for the wandb host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).hostname
    path = Path(env.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return entry is not None and bool(entry[2])


def wandb_mode(requested: str, env: Mapping[str, str] | None = None) -> str:
    """The wandb mode a run uses: ``WANDB_MODE`` when set; else ``requested``, where ``auto`` means online with
    credentials and offline without them."""
    env = os.environ if env is None else env
    if requested not in MODES:
        raise ConfigError(f"logger.wandb.mode={requested!r} is not one of {list(MODES)}")
    forced = env.get("WANDB_MODE")
    if forced:
        return "offline" if forced == "dryrun" else forced
    if requested != "auto":
        return requested
    return "online" if has_wandb_credentials(env) else "offline"


def _job_naming() -> tuple[str | None, str | None]:
    """(group, name) of the running Hydra job: a multirun's jobs share the sweep folder's name as their group and
    are named ``<job number>:<overrides>``; a single run has no group and takes its run folder's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name, f"{hc.job.num}:{hc.job.override_dirname or 'defaults'}"
    return None, Path(hc.runtime.output_dir).name


def wandb_logger(
    *,
    save_dir: str,
    project: str = "vad",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    mode: str = "auto",
    log_model: bool = False,
    **init_kwargs: Any,
) -> WandbLogger:
    """Lightning's WandbLogger with the mode of :func:`wandb_mode` and the job naming of a Hydra (multi)run.

    ``group`` / ``name`` default to the Hydra job's (see module docstring); ``init_kwargs`` go to ``wandb.init``.
    """
    chosen = wandb_mode(mode)
    if chosen != "online" and log_model:
        raise ConfigError(f"logger.wandb.log_model={log_model} needs an online run (mode is {chosen}); set it false")
    job_group, job_name = _job_naming()
    if chosen == "offline" and mode == "auto" and not os.environ.get("WANDB_MODE"):
        log.info("wandb: no credentials (WANDB_API_KEY or `wandb login`): logging offline; upload with `wandb sync`")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group or job_group,
        name=name or job_name,
        tags=list(tags),
        job_type=job_type,
        mode=chosen,
        log_model=log_model,
        **init_kwargs,
    )


def _wandb_run(logger: Logger) -> Any:
    """The wandb run a WandbLogger has started, or None (not started, or on a rank other than 0)."""
    run = getattr(logger, "_experiment", None)
    return run if run is not None and hasattr(run, "finish") else None


@contextmanager
def finishing(loggers: Sequence[Logger]) -> Iterator[None]:
    """Finish every wandb run the loggers started when the block ends (exit code 1 when it raised), and close the
    TensorBoard writers (:class:`TensorBoardRunLogger`).

    Without this the next job of an in-process multirun would log into the same run: wandb keeps one active run per
    process and WandbLogger reuses it. wandb writes a finished run's last records in the background; when no other
    run is active, its service is torn down, which waits for them: the run's files are complete when the job returns
    (ready for ``wandb sync``).
    """
    code = 1
    try:
        yield
        code = 0
    finally:
        finished = False
        for logger in loggers:
            if isinstance(logger, TensorBoardRunLogger):
                logger.close()
            run = _wandb_run(logger)
            if run is not None:
                run.finish(exit_code=code)
                logger._experiment = None
                finished = True
        if finished:
            import wandb

            if wandb.run is None:
                wandb.teardown()


def describe(loggers: Sequence[Logger]) -> dict[str, Any]:
    """What the run report records about the trackers: the wandb run's id, name, group, mode and folder."""
    for logger in loggers:
        run = _wandb_run(logger)
        if run is not None:
            return {
                "wandb": {
                    "id": run.id,
                    "name": run.name,
                    "group": run.group or None,
                    "project": run.project,
                    "mode": "offline" if run.offline else "online",
                    "dir": str(Path(run.dir).parent),
                }
            }
    return {}


# -- publishing ------------------------------------------------------------------------------------------------------


def _per_video_rows(result: ProtocolResult) -> list[list[Any]]:
    """[video, scored frames, anomalous frames, AUC or None] per test video."""
    return [[v.name, len(v.frames), None if v.labels is None else int(v.labels.sum()), v.auc] for v in result.videos]


PER_VIDEO_COLUMNS = ["video", "frames", "anomalous", "auc"]
#: report files published as images, by their key in ``write_report``'s result
REPORT_IMAGES = ("score_curves", "roc", "samples")


def _wandb_images(logger: WandbLogger, images: Mapping[str, Path], step: int) -> None:
    import wandb

    logger.experiment.log({key: wandb.Image(str(path)) for key, path in images.items()} | {"trainer/global_step": step})


def _wandb_report(logger: WandbLogger, result: ProtocolResult, images: Mapping[str, Path], step: int) -> None:
    import wandb

    run = logger.experiment
    table = wandb.Table(columns=PER_VIDEO_COLUMNS, data=_per_video_rows(result))
    run.log(
        {key: wandb.Image(str(path)) for key, path in images.items()}
        | {"test/per_video_auc": table, "trainer/global_step": step}
    )
    metrics = result.to_dict()
    run.summary.update({f"test/{k}": v for k, v in metrics.items() if isinstance(v, int | float) and v is not None})


def publish_selection(loggers: Sequence[Logger], selection: Mapping[str, Any]) -> None:
    """Put how the tested checkpoint was chosen (``checkpoint_selection``, ``selected_on_test_labels``, the
    validation AUCs) into the wandb run summary, where a test-selected number must say so."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and _wandb_run(logger) is not None:
            logger.experiment.summary.update({f"selection/{k}": v for k, v in selection.items() if v is not None})


def _tensorboard_images(logger: TensorBoardLogger, images: Mapping[str, Path], step: int) -> None:
    from matplotlib.image import imread

    for key, path in images.items():
        logger.experiment.add_image(key, imread(path)[..., :3], global_step=step, dataformats="HWC")
    logger.experiment.flush()


def _tensorboard_report(
    logger: TensorBoardLogger, result: ProtocolResult, images: Mapping[str, Path], step: int
) -> None:
    from vad.reporting.summary import format_comparison

    _tensorboard_images(logger, images, step)
    rows = [dict(zip(PER_VIDEO_COLUMNS, row, strict=True)) for row in _per_video_rows(result)]
    logger.experiment.add_text("test/per_video_auc", format_comparison(rows), global_step=step)
    logger.experiment.flush()  # the report comes last, after Lightning's own final flush: write everything now


#: tracker kind -> (publish images, publish a test report)
PUBLISHERS: dict[type[Logger], tuple[Callable[..., None], Callable[..., None]]] = {
    WandbLogger: (_wandb_images, _wandb_report),
    TensorBoardLogger: (_tensorboard_images, _tensorboard_report),
}


def _publishers(logger: Logger) -> tuple[Callable[..., None], Callable[..., None]] | None:
    return next((pair for kind, pair in PUBLISHERS.items() if isinstance(logger, kind)), None)


def publish_images(loggers: Sequence[Logger], images: Mapping[str, Path], step: int) -> None:
    """Log image files (key -> PNG path) to every tracker that shows images."""
    for logger in loggers:
        pair = _publishers(logger)
        if pair is not None:
            pair[0](logger, images, step)


def publish_report(loggers: Sequence[Logger], result: ProtocolResult, paths: Mapping[str, Path], step: int) -> None:
    """Log a test report to every tracker that shows one: the plots of ``paths`` (``write_report``'s result) as
    ``test/<name>`` images, the per-video AUC table, and the metrics in the run summary."""
    images = {f"test/{name}": paths[name] for name in REPORT_IMAGES if name in paths}
    for logger in loggers:
        pair = _publishers(logger)
        if pair is not None:
            pair[1](logger, result, images, step)
