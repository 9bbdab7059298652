"""What the CPU-preset choices of experiments/ffp_cpu_preset.py and experiments/amc_cpu_preset.py share: train a
candidate (``python -m vad.train`` into ``<out>/<name>``, reused when its last checkpoint exists), validate it on
injected pseudo-anomalies (one row per score signal and smoothing sigma), choose with or without an incumbent, and
read a row's test AUC after the choice. Each candidate's training config is recorded in preset_candidates.json
(:func:`snapshot`, from its run's saved config): a preset edited after a round must not change what that round's
overrides would retrain, so a drifted candidate is refused before it is trained, and a test checks them all.

A row is ``(candidate, signal, sigma, val micro mean, val micro sd, val macro mean, val micro per injection)``.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from vad import config_dir
from vad.checkpoint_io import current_targets
from vad.evaluation.protocol import evaluate
from vad.reporting.files import read_scores_csv
from vad.selection import choose_training_then_score, paired_t, paired_wins

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from validation_auc import validate  # noqa: E402

Row = tuple[str, str, float, float, float, float, list[float]]
#: the results files keep the text below this marker when a script rewrites them
DISCUSSION = "<!-- discussion: kept by the script -->"
#: the candidates' training configs, as their runs were trained (``snapshot``); tests/test_preset_rounds.py checks
#: that each candidate's overrides still compose to it, so a later edit of a preset cannot silently change what a
#: committed round would retrain
CANDIDATE_CONFIGS = REPO / "experiments" / "preset_candidates.json"
#: config keys (exact, or a prefix ending in ".") that do not change the weights a run trains: where its files go, how
#: it is logged, scored, validated and whether it is tested after training
NOT_TRAINING = ("paths.", "hydra.", "logger.", "task_name", "tags", "test", "model.score.", "model.smoothing",
                "dataset.val_pseudo.")  # fmt: skip


def train(name: str, overrides: list[str], data: Path, out: Path, expected: dict | None = None) -> Path:
    """The candidate's last checkpoint, trained one run at a time into ``out/name`` unless it is already there; when
    ``expected`` (its :data:`CANDIDATE_CONFIGS` entry) is given, refused if its overrides no longer compose to it."""
    run = out / name
    ckpt = run / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        print(f"{name}: reusing {ckpt}", flush=True)
        return ckpt
    drift = config_drift(expected, overrides) if expected is not None else {}
    if drift:
        raise SystemExit(
            f"{name}: its overrides no longer compose to the config it was trained with ({CANDIDATE_CONFIGS.name}):"
            f" {drift} (key: (then, now)); pin those keys in its overrides"
        )
    command = [sys.executable, "-m", "vad.train", *overrides, f"paths.data_dir={data}", f"hydra.run.dir={run}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return ckpt


def validation_rows(
    name: str, ckpt: Path, data: Path, seeds: list[int], smoothing: list[float], val_pseudo: dict | None
) -> list[Row]:
    """Every (signal, sigma) of one checkpoint on the injected pseudo-anomalies of its held-out videos."""
    rows: list[Row] = []
    validated = validate(ckpt, data, REPO / ".cache" / "frames", seeds, smoothing, val_pseudo)
    for label, pairs in validated.items():
        if label.startswith(("score ", "copy-last")):
            continue  # the configured score repeats a signal; copy-last is the floor, not a candidate
        signal, _, smoothed = label.partition(", smoothed sigma ")
        micro = [p[0] for p in pairs]
        macro = [p[1] for p in pairs]
        rows.append((name, signal, float(smoothed or 0), statistics.mean(micro), statistics.stdev(micro),
                     statistics.mean(macro), micro))  # fmt: skip
    return rows


def training_config(config: dict) -> dict[str, object]:
    """A run's config (a nested dict, interpolations unresolved) as flat ``key: value`` pairs, without the keys of
    :data:`NOT_TRAINING`."""
    flat: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        key = prefix[:-1]
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_TRAINING):
            flat[key] = node

    walk(config, "")
    return flat


def composed_training_config(overrides: list[str]) -> dict[str, object]:
    """The training config that ``python -m vad.train <overrides>`` composes from today's ``conf/``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=list(overrides))
    return training_config(OmegaConf.to_container(cfg, resolve=False))


def config_drift(expected: dict[str, object], overrides: list[str]) -> dict[str, tuple[object, object]]:
    """Keys whose composed value differs from ``expected`` (a :func:`training_config`): ``key: (expected, now)``.
    A key that ``expected`` lacks is not drift (options added since keep their old behaviour by default); one that
    the composed config lacks is (a renamed or removed option)."""
    now = composed_training_config(overrides)
    expected = current_targets(expected)  # a config recorded before the restructuring names the old _target_s
    return {
        key: (value, now.get(key, "<absent>")) for key, value in expected.items() if now.get(key, "<absent>") != value
    }


def snapshot(script: str, candidates: dict[str, list[str]], runs: Path, path: Path = CANDIDATE_CONFIGS) -> None:
    """Record each candidate's training config in ``path`` under ``script`` (the other scripts' entries are kept):
    from its run's ``.hydra/config.yaml`` when ``runs/<name>`` holds one (the config it was trained with), else as
    composed today. Run it once a round's candidates are trained:

        python experiments/preset_rounds.py --snapshot amc_cpu_preset --runs <the round's --out folder>
    """
    from omegaconf import OmegaConf

    saved = json.loads(path.read_text()) if path.is_file() else {}
    entries = {}
    for name, overrides in candidates.items():
        run_config = runs / name / ".hydra" / "config.yaml"
        if run_config.is_file():
            config = training_config(OmegaConf.to_container(OmegaConf.load(run_config), resolve=False))
            source = "the config its run was trained with"
        else:
            config = composed_training_config(overrides)
            source = f"composed on {datetime.now():%Y-%m-%d} (its run was not kept)"
        entries[name] = {"source": source, "config": config}
    saved[script] = entries
    path.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")


def validate_candidates(
    script: str,
    candidates: dict[str, list[str]],
    data: Path,
    out: Path,
    *,
    seeds: list[int],
    smoothing: list[float],
    val_pseudo: dict | None,
    only_choose: bool,
) -> tuple[list[Row], float]:
    """Train what is missing (unless ``only_choose``), one run at a time, then validate every candidate: the rows
    and the seconds the validation took. ``candidates`` maps a name to its vad.train overrides; a candidate of
    ``script`` recorded in :data:`CANDIDATE_CONFIGS` is trained only if they still compose to its recorded config."""
    recorded = json.loads(CANDIDATE_CONFIGS.read_text()).get(script, {}) if CANDIDATE_CONFIGS.is_file() else {}
    rows: list[Row] = []
    seconds = 0.0
    for name, overrides in candidates.items():
        ckpt = out / name / "checkpoints" / "last.ckpt"
        if not only_choose:
            ckpt = train(name, overrides, data, out, recorded.get(name, {}).get("config"))
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt} does not exist: train the candidate {name} first (run without --only-choose)")
        start = time.perf_counter()
        rows += validation_rows(name, ckpt, data, seeds, smoothing, val_pseudo)
        seconds += time.perf_counter() - start
    return rows, seconds


def table(rows: list[Row], best: Row, out: Path) -> list[str]:
    """The report's table, rows by mean validation micro AUC, the chosen one in bold; the test columns are read here,
    after the choice, from each run's scores.csv."""
    lines = [
        f"| candidate | score signal | smoothing sigma | val micro AUC ({len(best[6])} injections) | val macro AUC "
        "| test micro AUC | test macro AUC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: -r[3]):
        name, signal, sigma, micro, sd, macro, _ = row
        tested = test_auc(out / name, signal, sigma)
        test = f"{tested[0]:.4f} | {tested[1]:.4f}" if tested else "not tested | "
        mark = "**" if row is best else ""
        lines.append(f"| {mark}{name}{mark} | {signal} | {sigma:g} | {micro:.4f} ± {sd:.4f} | {macro:.4f} | {test} |")
    return lines


def write_report(path: Path, text: str) -> None:
    """Print the report and write it to ``path``, keeping the discussion below :data:`DISCUSSION`."""
    print(text)
    kept = path.read_text().partition(DISCUSSION)[2] if path.is_file() else "\n"
    path.write_text(f"{text}\n{DISCUSSION}{kept}")


def test_auc(run: Path, signal: str, sigma: float) -> tuple[float, float] | None:
    """Micro and macro test AUC of one signal of a run's scores.csv (the test stage of vad.train, or vad.evaluate of
    a candidate trained without it, into ``<run>/test``); None when the run was not tested."""
    scores_csv = next((p for p in (run / "scores.csv", run / "test" / "scores.csv") if p.is_file()), None)
    if scores_csv is None:
        return None
    weights = {signal: -1.0 if signal == "psnr" else 1.0}
    result = evaluate(read_scores_csv(scores_csv), weights, smoothing=sigma)
    return result.auc_micro, result.auc_macro


def log_seconds(log: Path) -> float | None:
    """Seconds between the first and the last time-stamped line of a run's log (``train.log``: from the seed to the
    last checkpoint, calibration included); None when the log is missing or has no time stamp."""
    if not log.is_file():
        return None
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", log.read_text(), flags=re.MULTILINE)
    if not stamps:
        return None
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def margin_words(wins: int, n: int, t: float | None) -> str:
    words = f"a higher mean validation micro AUC AND a higher one on at least {wins} of the {n} paired injections"
    if t is not None:
        words += f" AND a mean paired difference of at least {t:g} standard errors"
    return words + " (vad.selection.keep_unless_beaten)"


def lead(aucs: list[float], reference: list[float], t: float | None) -> str:
    text = f"above on {paired_wins(aucs, reference)}/{len(reference)}"
    return text + (f", t {paired_t(aucs, reference):+.2f}" if t is not None else "")


def choose(
    rows: list[Row], incumbent: tuple[str, str, float] | None, *, wins: int = 1, t: float | None = None
) -> tuple[Row, str]:
    """The chosen row and the rule's words. Without an ``incumbent``: the highest mean validation micro AUC. With an
    incumbent (candidate, signal, sigma): :func:`vad.selection.choose_training_then_score` with the tie margin
    of :func:`vad.selection.keep_unless_beaten` (``wins`` paired injections, and ``t`` standard errors when
    given): first the training, each candidate scored by the incumbent's signal and sigma; then, within the chosen
    training, the score: its row at the incumbent's signal and sigma against every other (signal, sigma)."""
    if incumbent is None:
        return max(rows, key=lambda r: r[3]), "highest mean validation micro AUC"
    by_key = {(r[0], r[1], r[2]): r for r in rows}
    aucs = {(r[0], (r[1], r[2])): r[6] for r in rows}
    name, (signal, sigma) = choose_training_then_score(aucs, (incumbent[0], incumbent[1:]), wins=wins, t=t)
    base = by_key[incumbent][6]
    trainings = {r[0]: r[6] for r in rows if (r[1], r[2]) == incumbent[1:] and r[0] != incumbent[0]}
    reference = by_key[(name, *incumbent[1:])]
    chosen = by_key[(name, signal, sigma)]
    step1 = "; ".join(f"{n} {statistics.mean(a):.4f}, {lead(a, base, t)}" for n, a in trainings.items())
    rule = (
        f"the incumbent {incumbent[0]} scored by {incumbent[1]}, sigma {incumbent[2]:g}, stays unless beaten: a"
        f" challenger needs {margin_words(wins, len(base), t)}; first the training (each candidate scored by the"
        " incumbent's signal and sigma), then the score within the chosen training. Step 1, against the incumbent's"
        f" {by_key[incumbent][3]:.4f}: {step1} -> {name}. Step 2, within {name}, against its {incumbent[1]} sigma"
        f" {incumbent[2]:g} ({reference[3]:.4f}): "
        + (
            f"{signal} sigma {sigma:g} ({chosen[3]:.4f}, {lead(chosen[6], reference[6], t)})"
            if chosen is not reference
            else "no (signal, sigma) beats it -> kept"
        )
    )
    return chosen, rule


if __name__ == "__main__":
    import argparse
    import importlib

    parser = argparse.ArgumentParser(description="Record a preset script's candidates' training configs (snapshot).")
    parser.add_argument("--snapshot", required=True, help="the script's module name, e.g. amc_cpu_preset")
    parser.add_argument("--runs", type=Path, required=True, help="the folder of its candidates' runs (its --out)")
    args = parser.parse_args()
    module = importlib.import_module(args.snapshot)
    snapshot(args.snapshot, {name: overrides for name, (_, overrides) in module.CANDIDATES.items()}, args.runs)
