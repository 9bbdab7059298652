"""A Hydra sweeper that searches with Optuna (>= 4): ask a batch of trials, launch them as Hydra jobs, tell results.

    python -m vad.train hparams_search=ffp_optuna                      (conf/hparams_search/ffp_optuna.yaml)
    python -m vad.train -m hydra/sweeper=vad_optuna 'model.optim.lr_g=tag(log, interval(1e-5, 1e-3))'

Why not hydra-optuna-sweeper: its 1.3 release needs optuna < 3, whose sqlite storage in turn needs sqlalchemy < 2 and
alembic < 1.14 -- pins that reach far beyond this suite. This driver is small, runs on current Optuna and keeps
every Hydra feature: each trial is an ordinary job (its own run folder, log, wandb run) launched by the configured
launcher (basic, joblib, submitit), and the sweep summary callback sees them like any multirun.

The search space is written in Hydra's sweep syntax, in ``params`` or as command-line sweeps:
``interval(a, b)`` a float in [a, b]; ``tag(log, interval(a, b))`` log-uniform; ``tag(int, interval(a, b))`` an
integer; ``choice(x, y, ...)``, ``x,y,...`` and ``range(a, b)`` categorical. Plain overrides are fixed for every trial.

The objective is the job's returned ``metric``: by default ``val_auc_micro``, the validation AUC on pseudo-anomalies
injected into held-out normal training videos (``dataset.val_videos``; no test label). ``vad.train`` also returns the
test metrics (``auc_micro``, ...); a study that optimises one of them chose on the test labels, and its summary
(``optuna_study.md``), the log and the sweep summary say so in capitals. A job
that failed (a non-finite loss, an exception) or returned no finite value is told to Optuna as a failed trial and the
search goes on. With a ``storage`` (``sqlite:///logs/optuna.db``) the study persists: running the same command again
continues it up to ``n_trials`` finished trials, and trials left running by a killed sweep are marked failed first.
``<sweep dir>/optuna_study.md`` lists the study's trials and its best one at the end.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner runs this module before registering it in
# sys.modules, and dataclasses cannot resolve string annotations then.
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")


@dataclass
class VadOptunaSweeperConf:
    """``hydra.sweeper`` settings of :class:`VadOptunaSweeper`."""

    _target_: str = "hydra_plugins.vad_optuna_sweeper.sweeper.VadOptunaSweeper"
    #: Optuna storage URL (``sqlite:///path.db``) to persist and resume the study; null keeps it in memory
    storage: str | None = None
    study_name: str | None = None
    direction: str = "maximize"
    #: key of the job's returned mapping that is optimised (a validation metric; a test metric is labelled as such)
    metric: str = "val_auc_micro"
    #: finished trials the study should hold at the end (a resumed study runs only the missing ones)
    n_trials: int = 20
    #: trials launched together (in parallel with a parallel launcher such as joblib)
    n_jobs: int = 1
    #: an Optuna sampler (Hydra instantiates it with the sweeper)
    sampler: dict[str, Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    #: key -> search space in Hydra's sweep syntax (see the module docstring)
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="vad_optuna", node=VadOptunaSweeperConf, provider="vad")


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override (see the module docstring for the syntax)."""
    import optuna.distributions as d

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, IntervalSweep):
        if "int" in value.tags:
            return d.IntDistribution(int(value.start), int(value.end), log="log" in value.tags)
        return d.FloatDistribution(value.start, value.end, log="log" in value.tags)
    if isinstance(value, RangeSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        if any(isinstance(c, dict | list) for c in choices):
            raise ValueError(f"{key}: a search choice must be a number, string, boolean or null, got {choices}")
        return d.CategoricalDistribution(choices)
    raise ValueError(f"{key}={override.get_value_element_as_str()}: not a search space")


def override_value(value: Any) -> str:
    """A sampled value as Hydra override text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w.:/+-]+", text) else "'" + text.replace("'", "\\'") + "'"


def selects_on_test(metric: str) -> bool:
    """True when ``metric`` is not a validation metric: a search on it chooses on the test labels."""
    return not metric.startswith("val_")


TEST_SELECTED = (
    "SELECTED ON TEST LABELS: the objective {metric} is a test metric, so the best trial's numbers are optimistic"
)


def objective(ret: JobReturn, metric: str) -> tuple[float | None, str | None]:
    """(value, None) for a job that returned a finite ``metric``; (None, why) otherwise."""
    from vad.app.runs import FAILED

    if ret.status != JobStatus.COMPLETED:
        return None, f"the job raised {ret._return_value!r}"
    value = ret.return_value
    if not isinstance(value, dict):
        return None, f"the job returned {type(value).__name__}, not a mapping of metrics"
    if FAILED in value:
        return None, str(value[FAILED])
    number = value.get(metric)
    if not isinstance(number, int | float) or not math.isfinite(number):
        return None, f"the job returned no finite '{metric}' (got {number!r})"
    return float(number), None


class VadOptunaSweeper(Sweeper):
    """Optuna ask / launch / tell loop over Hydra jobs (settings: :class:`VadOptunaSweeperConf`)."""

    def __init__(
        self,
        storage: str | None,
        study_name: str | None,
        direction: str,
        metric: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        params: DictConfig | dict[str, str],
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r} is not one of {list(DIRECTIONS)}")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}")
        self.storage = storage
        self.study_name = study_name
        self.direction = direction
        self.metric = metric
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """(key -> distribution, fixed overrides) from ``params`` and the command line (which wins)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space: dict[str, Any] = {}
        fixed: dict[str, str] = {}
        for override in parser.parse_overrides(given):
            key = override.get_key_element()
            space.pop(key, None)
            fixed.pop(key, None)
            if override.is_sweep_override():
                space[key] = distribution(override)
            else:
                fixed[key] = f"{key}={override.get_value_element_as_str()}"
        if not space:
            raise ValueError("the Optuna sweep has nothing to search: give hydra.sweeper.params or sweep overrides")
        return space, list(fixed.values())

    def _study(self) -> Any:
        import optuna

        if self.storage and self.storage.startswith("sqlite:///"):
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            direction=self.direction,
            sampler=self.sampler,
            load_if_exists=True,
        )
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            log.warning("trial %d was left running by an earlier sweep: marked failed", stale.number)
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        return study

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        import optuna

        if self.config is None or self.launcher is None:
            raise RuntimeError("VadOptunaSweeper.setup() must run before sweep()")
        space, fixed = self._space(arguments)
        study = self._study()
        done = [state for state in optuna.trial.TrialState if state.is_finished()]
        finished = len(study.get_trials(deepcopy=False, states=done))
        remaining = max(self.n_trials - finished, 0)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Optuna study '%s': %d finished trials, %d to run", study.study_name, finished, remaining)
        if selects_on_test(self.metric):
            log.warning(TEST_SELECTED.format(metric=self.metric))
            with open(sweep_dir / "SELECTED_ON_TEST_LABELS", "w") as f:
                f.write(TEST_SELECTED.format(metric=self.metric) + "\n")
        returns: list[JobReturn] = []
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = [fixed + [f"{k}={override_value(t.params[k])}" for k in space] for t in trials]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=len(returns))
            for trial, ret in zip(trials, results, strict=True):
                trial.set_user_attr("job_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
                value, failure = objective(ret, self.metric)
                if failure is None:
                    study.tell(trial, value)
                else:
                    log.warning("trial %d failed: %s", trial.number, failure)
                    trial.set_user_attr("error", failure)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            returns.extend(results)
            remaining -= len(trials)
        write_study_summary(study, self.metric, sweep_dir / "optuna_study.md")
        return returns


def write_study_summary(study: Any, metric: str, path: Path) -> Path:
    """Markdown: the best trial (value, parameters, job folder) and a table of every trial of the study."""
    import optuna

    from vad.io import atomic_path
    from vad.reporting.summary import format_comparison

    trials = study.get_trials(deepcopy=False)
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            metric: t.value,
            **t.params,
            "job": t.user_attrs.get("job_dir", ""),
        }
        for t in trials
    ]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    lines = [f"# Optuna study {study.study_name} ({study.direction.name.lower()} {metric})", ""]
    if selects_on_test(metric):
        lines += [f"**{TEST_SELECTED.format(metric=metric)}.**", ""]
    if complete:
        best = study.best_trial
        params = ", ".join(f"{k}={override_value(v)}" for k, v in best.params.items())
        lines += [
            f"Best: trial {best.number}, {metric} = {best.value:.4f}: {params}",
            f"({best.user_attrs.get('job_dir', '')})",
            "",
        ]
    else:
        lines += ["No trial completed.", ""]
    lines.append(format_comparison(rows) if rows else "(no trials)")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
