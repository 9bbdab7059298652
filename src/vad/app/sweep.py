"""The end of every multirun: a summary table of all jobs, and a failing exit status when a job failed.

    python -m vad.train -m model.loss.flow=0,1,2 model.loss.adversarial=0,0.05
    -> logs/train/multiruns/<time>/sweep_summary.{md,csv}: job, varied overrides, status, metrics, error

:class:`SweepSummary` is a Hydra callback (``conf/hydra/default.yaml`` registers it for every entry point); it works
with every sweeper and launcher, since it only reads the job folders (``vad.app.runs``) once the sweep has returned.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vad.app import runs
from vad.reporting.summary import format_comparison

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Write ``sweep_summary.md`` / ``.csv`` into the sweep folder, print the table, exit 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path, jobs = runs.write_summary(config.hydra.sweep.dir)
        rows = runs.summary_rows(jobs)
        if rows:
            print(format_comparison([{k: v for k, v in row.items() if k != "error"} for row in rows]))
        log.info("sweep summary: %s", path)
        failed = [job for job in jobs if job.status != "completed"]
        if failed:
            print(
                f"error: {len(failed)} of {len(jobs)} jobs did not complete ({', '.join(j.name for j in failed)}); "
                f"see {path}",
                file=sys.stderr,
            )
            raise SystemExit(1)
