"""Choosing without test labels: rules over the validation AUCs of paired pseudo-anomaly injections.

The validation set (:mod:`vad.data.pseudo.validation`) gives one validation AUC per injection seed; two
configurations scored on the same seeds are paired. These rules choose a checkpoint, a preset or a sweep winner from
those numbers alone, never from test labels: :func:`paired_wins` and :func:`paired_t` compare two configurations,
:func:`keep_unless_beaten` keeps the one in use unless a challenger beats it by a margin, and
:func:`choose_training_then_score` applies that first to the training, then to the way of scoring it.

    keep_unless_beaten([0.86, 0.88, 0.87], {"noadv": [0.88, 0.89, 0.88]}, wins=3)        # "noadv"
    choose_training_then_score(aucs, ("w32", ("patch_max", 4.0)), wins=7, t=2.0)

Pure functions on numbers; imports nothing of vad but the core.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from vad.errors import ConfigError


def paired_wins(aucs: Sequence[float], reference: Sequence[float]) -> int:
    """On how many of the paired injections (the same seeds, the same clips) ``aucs`` is strictly higher than
    ``reference``; the two must hold one validation AUC per injection, in the same order."""
    if len(aucs) != len(reference):
        raise ConfigError(f"paired_wins: {len(aucs)} validation AUCs against {len(reference)}; they must be paired")
    return sum(a > b for a, b in zip(aucs, reference, strict=True))


def paired_t(aucs: Sequence[float], reference: Sequence[float]) -> float:
    """The mean paired difference ``aucs - reference`` divided by its standard error (sample standard deviation over
    sqrt(n)): how many standard errors ahead ``aucs`` is, over the same injections. +inf / -inf / 0 when every
    difference is the same (ahead, behind, level); at least 2 paired values are needed."""
    if len(aucs) != len(reference):
        raise ConfigError(f"paired_t: {len(aucs)} validation AUCs against {len(reference)}; they must be paired")
    if len(aucs) < 2:
        raise ConfigError(f"paired_t: {len(aucs)} paired validation AUC; a standard error needs at least 2")
    diff = np.asarray(aucs, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else float(np.copysign(np.inf, mean))
    return mean / (sd / np.sqrt(len(diff)))


def keep_unless_beaten(
    incumbent: Sequence[float], challengers: Mapping[Hashable, Sequence[float]], *, wins: int, t: float | None = None
) -> Hashable | None:
    """A choice by validation AUC with a tie margin, over paired injections (the same seeds, the same clips).

    ``incumbent`` and each challenger (keyed by any hashable: a name, a (signal, sigma) pair) hold one validation AUC
    per injection, in the same order. The incumbent (the configuration already in use) stays unless a challenger has
    a higher mean AND is higher on at least ``wins`` of the injections (:func:`paired_wins`) AND, when ``t`` is
    given, is ahead by at least ``t`` standard errors of the paired differences (:func:`paired_t`); among the
    challengers that qualify, the highest mean wins. Returns that challenger's key, or None when the incumbent stays.
    The margin keeps a preset from flipping on a difference that a few injections' noise can make: a challenger
    ahead on the mean because of one injection is a tie, not a win. ``wins`` counts wins, not their size; ``t`` adds
    the size (a challenger ahead by a thousandth on 7 of 10 injections, with differences of a few thousandths either
    way, is a tie under t=2).
    """
    n = len(incumbent)
    if n == 0:
        raise ConfigError("keep_unless_beaten: the incumbent has no validation AUC")
    if not 1 <= wins <= n:
        raise ConfigError(f"keep_unless_beaten: wins={wins} must be between 1 and the number of injections ({n})")
    if t is not None and (n < 2 or not t > 0):
        raise ConfigError(f"keep_unless_beaten: t={t} needs a positive value and at least 2 injections (have {n})")
    base = float(np.mean(incumbent))
    qualified: dict[Hashable, float] = {}
    for key, aucs in challengers.items():
        if len(aucs) != n:
            raise ConfigError(f"keep_unless_beaten: {key!r} has {len(aucs)} validation AUCs, the incumbent {n}")
        mean = float(np.mean(aucs))
        if mean > base and paired_wins(aucs, incumbent) >= wins and (t is None or paired_t(aucs, incumbent) >= t):
            qualified[key] = mean
    return max(qualified, key=qualified.__getitem__) if qualified else None


def choose_training_then_score(
    aucs: Mapping[tuple[Hashable, Hashable], Sequence[float]],
    incumbent: tuple[Hashable, Hashable],
    *,
    wins: int,
    t: float | None = None,
) -> tuple[Hashable, Hashable]:
    """A preset's two-step choice with :func:`keep_unless_beaten`'s margin, over paired injections.

    ``aucs`` maps (training, score) — a run and a way of scoring it, e.g. ``("noadv_11k", ("patch_max", 2.0))`` — to
    its validation AUC per injection; ``incumbent`` is the (training, score) in use. First the training: every other
    training scored by the incumbent's score challenges the incumbent (a training better only under another score does
    not count here). Then, within the chosen training, the score: its row at the incumbent's score against each of its
    other scores. Returns the chosen (training, score); each step keeps what it has unless beaten by the margin.
    """
    if incumbent not in aucs:
        raise ConfigError(f"choose_training_then_score: the incumbent {incumbent!r} has no validation AUCs")
    training, score = incumbent
    trainings = {run: values for (run, how), values in aucs.items() if how == score and run != training}
    training = keep_unless_beaten(aucs[incumbent], trainings, wins=wins, t=t) or training
    reference = aucs[(training, score)]
    scores = {how: values for (run, how), values in aucs.items() if run == training and how != score}
    return training, keep_unless_beaten(reference, scores, wins=wins, t=t) or score
