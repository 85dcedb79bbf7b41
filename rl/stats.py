"""Measurements that can tell a change from noise (pure functions: stdlib and numpy only).

A result on a few hundred tasks moves by several points between two runs that differ only in
their seed. Before a change is called an improvement, put an interval on it:

    wilson_interval(successes, n)               a rate's confidence interval (e.g. Acc@t1 = 37/164)
    mcnemar_exact(b, c)                         exact two-sided p-value of a paired before/after
                                                comparison from its discordant counts
    bootstrap_tasks(per_task, statistic)        a percentile interval for any statistic of a set
                                                of tasks, resampling TASKS with replacement
    paired_bootstrap(before, after, statistic)  the same for two measurements of the same tasks
                                                (task i of `before` stays paired with task i of
                                                `after` in every resample)
    compare_models(before, after)               two models on the same tasks: paired difference of
                                                the rate, its bootstrap interval, the discordant
                                                counts, McNemar's p and a "within noise" phrase

Ready statistics (`Statistic` objects, fast: each task is reduced to a few sums once, and every
resample is a weighted sum of those):

    accuracy(num_turns, turn)                   Acc@t over per-task episodes [episode][turn]
    delta(num_turns), delta_i2c(num_turns),     Δ = Acc@tT − Acc@t1, Δi→c, Δc→i within one model,
    delta_c2i(num_turns)                        over per-task episodes [episode][turn]
    rate_difference()                           after − before, for `paired_bootstrap` over
                                                per-task correctness (a bool or a list of bools)

Why tasks are the resampling unit: episodes of one task are not independent (a task that is
hard is hard for all its samples, and a greedy model gives the same answer every time), so
resampling episodes would understate the noise. Every task has the same weight, as in
rl/metrics.py and docs/evaluation.md: a task with N episodes contributes the mean of its N.
Early stops are padded with the episode's last program (`rl.metrics.pad_turns`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "wilson_interval", "mcnemar_exact", "discordant_counts",
    "Statistic", "BootstrapResult", "bootstrap_tasks", "paired_bootstrap",
    "accuracy", "delta", "delta_i2c", "delta_c2i", "rate_difference",
    "ModelComparison", "compare_models",
]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.95996... for 0.95."""
    _check_confidence(confidence)
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


# ---------------------------------------------------------------------------------------------
# a single rate


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927; Newcombe 1998, method 3) for a rate successes / n.

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 − p)/n + z²/4n²)

    Unlike the normal approximation p ± z·sqrt(p(1−p)/n) it stays inside [0, 1] and does not
    collapse to a point at 0/n or n/n: 0/10 gives (0, 0.2775). With n = 0 nothing is known and
    the interval is (0, 1).
    """
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"wilson_interval: {name} must be an integer, got {value!r}")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes}/{n}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    low, high = centre - half, centre + half
    # exact ends: the formula gives them up to rounding (1e-17 instead of 0)
    return (0.0 if successes == 0 else max(0.0, low)), (1.0 if successes == n else min(1.0, high))


# ---------------------------------------------------------------------------------------------
# McNemar's exact test


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of a paired comparison.

    b: pairs right before and wrong after; c: wrong before and right after (the order does not
    matter: the test is symmetric). Under "no change" each discordant pair is equally likely to
    go either way, so min(b, c) is Binomial(b + c, 1/2):

        p = min(1, 2 · Σ_{k=0}^{min(b,c)} C(b+c, k) / 2^(b+c))

    p = 1 when b + c = 0 (no discordant pair: no evidence of a change). Computed exactly with
    integers, so it stays right for any b + c.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"mcnemar_exact: {name} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"mcnemar_exact: {name} must be >= 0, got {value}")
    n, k = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def discordant_counts(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int]:
    """(b, c) of paired outcomes: b = right before and wrong after, c = wrong before and right after."""
    if len(before) != len(after):
        raise ValueError(f"discordant_counts: {len(before)} outcomes before and {len(after)} after")
    b = sum(bool(x) and not bool(y) for x, y in zip(before, after))
    c = sum(not bool(x) and bool(y) for x, y in zip(before, after))
    return b, c


# ---------------------------------------------------------------------------------------------
# the task bootstrap


@dataclass(frozen=True)
class Statistic:
    """A statistic of a set of tasks that is a function of per-task sums.

    per_task(item) -> tuple of floats: what one task contributes (e.g. its mean Δ and 1).
    combine(sums)  -> value: from the column sums over the tasks of a sample, shape (..., k), to
                      the statistic, shape (...). Vectorised: it gets every resample at once.
    """

    name: str
    per_task: Callable[[Any], Sequence[float]]
    combine: Callable[[np.ndarray], np.ndarray]

    def table(self, items: Sequence[Any]) -> np.ndarray:
        return np.array([[float(x) for x in self.per_task(item)] for item in items], dtype=float)


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    tasks: int
    statistic: str = ""

    @property
    def within_noise(self) -> bool:
        """The interval includes 0: the data cannot tell this from no change."""
        return self.low <= 0.0 <= self.high

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def bootstrap_tasks(per_task: Sequence[Any], statistic: Statistic | Callable[[list], float],
                    resamples: int = 10000, confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Percentile bootstrap over tasks: resample the tasks with replacement `resamples` times,
    compute `statistic` on each resample, and report the (1−confidence)/2 and (1+confidence)/2
    quantiles of those values around the statistic of the data itself.

    per_task: one item per task, whatever `statistic` reads (e.g. that task's episodes
    [episode][turn]). statistic: a `Statistic` (fast), or any callable from a list of items to a
    float (general, slower: called once per resample). Deterministic for a given seed.
    """
    _check_confidence(confidence)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    items = list(per_task)
    n = len(items)
    if n == 0:
        raise ValueError("bootstrap_tasks: no tasks")
    rng = np.random.default_rng(seed)
    if isinstance(statistic, Statistic):
        table = statistic.table(items)
        estimate = float(statistic.combine(table.sum(axis=0)))
        values = np.empty(resamples)
        chunk = max(1, min(resamples, 2_000_000 // n))
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)   # times each task is drawn
            values[start:start + size] = statistic.combine(counts @ table)
        name = statistic.name
    else:
        estimate = float(statistic(items))
        values = np.array([float(statistic([items[i] for i in rng.integers(0, n, size=n)]))
                           for _ in range(resamples)])
        name = getattr(statistic, "__name__", "")
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(estimate, float(low), float(high), confidence, resamples, n, name)


def paired_bootstrap(per_task_before: Sequence[Any], per_task_after: Sequence[Any],
                     statistic: Statistic | Callable[[list], float], resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """`bootstrap_tasks` over pairs (before[i], after[i]): task i's two measurements are drawn
    together, which is what makes a before/after comparison on the same tasks far tighter than
    two separate intervals. `statistic` reads items that are (before_i, after_i) tuples;
    `rate_difference()` is the usual one."""
    if len(per_task_before) != len(per_task_after):
        raise ValueError(f"paired_bootstrap: {len(per_task_before)} tasks before and {len(per_task_after)} after; "
                         "the same tasks, in the same order, are needed")
    return bootstrap_tasks(list(zip(per_task_before, per_task_after)), statistic, resamples, confidence, seed)


# ---------------------------------------------------------------------------------------------
# ready statistics


def _ratio(sums: np.ndarray) -> np.ndarray:
    return sums[..., 0] / sums[..., 1]


def _episodes(item: Sequence[Sequence[bool]], num_turns: int) -> list[list[bool]]:
    if len(item) == 0 or any(len(e) == 0 for e in item):
        raise ValueError("every task needs at least one episode of at least one turn")
    if any(len(e) > num_turns for e in item):
        raise ValueError(f"an episode has more than num_turns={num_turns} turns")
    return [list(e) + [e[-1]] * (num_turns - len(e)) for e in item]   # early stops keep their last program


def _turn(num_turns: int, turn: int | None, default: int) -> int:
    t = default if turn is None else turn
    if not -num_turns <= t < num_turns:
        raise ValueError(f"turn {t} outside 0..{num_turns - 1}")
    return t % num_turns


def _episode_statistic(name: str, num_turns: int, outcome: Callable[[list[bool]], float]) -> Statistic:
    if num_turns < 1:
        raise ValueError(f"num_turns must be >= 1, got {num_turns}")

    def per_task(item):
        episodes = _episodes(item, num_turns)
        return sum(outcome(e) for e in episodes) / len(episodes), 1.0

    return Statistic(name, per_task, _ratio)


def accuracy(num_turns: int, turn: int = 0) -> Statistic:
    """Acc@t (turn 0-based) over per-task episodes [episode][turn]; each task weighs the same."""
    t = _turn(num_turns, turn, 0)
    return _episode_statistic(f"acc_t{t + 1}", num_turns, lambda e: float(e[t]))


def delta(num_turns: int, first: int = 0, last: int | None = None) -> Statistic:
    """Δ = Acc@t_last − Acc@t_first (0-based turns; default: turn 1 to turn T)."""
    a, z = _turn(num_turns, first, 0), _turn(num_turns, last, num_turns - 1)
    return _episode_statistic("delta", num_turns, lambda e: float(e[z]) - float(e[a]))


def delta_i2c(num_turns: int, first: int = 0, last: int | None = None) -> Statistic:
    """Δi→c: share of episodes wrong at t_first and right at t_last."""
    a, z = _turn(num_turns, first, 0), _turn(num_turns, last, num_turns - 1)
    return _episode_statistic("delta_i2c", num_turns, lambda e: float((not e[a]) and e[z]))


def delta_c2i(num_turns: int, first: int = 0, last: int | None = None) -> Statistic:
    """Δc→i: share of episodes right at t_first and wrong at t_last."""
    a, z = _turn(num_turns, first, 0), _turn(num_turns, last, num_turns - 1)
    return _episode_statistic("delta_c2i", num_turns, lambda e: float(e[a] and not e[z]))


def _outcomes(value) -> list[float]:
    """A task's outcomes: a bool (one), or a sequence of bools (its episodes or rows)."""
    return [float(value)] if isinstance(value, (bool, np.bool_, int, np.integer, float)) else [float(v) for v in value]


def _rate(value) -> float:
    """A task's correctness: the mean of its outcomes."""
    values = _outcomes(value)
    if not values:
        raise ValueError("a task has no outcomes")
    return sum(values) / len(values)


def _pooled_pair(pair) -> tuple[float, float]:
    """A task's (after − before) successes and its number of outcomes."""
    before, after = _outcomes(pair[0]), _outcomes(pair[1])
    return sum(after) - sum(before), float(len(before))


def rate_difference(pooled: bool = False) -> Statistic:
    """after − before of a rate, for `paired_bootstrap` over per-task correctness: each task's
    value is a bool, or a list of bools (its episodes or rows), e.g. final-turn correctness.
    Tasks weigh the same (a list is averaged), or with `pooled` every outcome does (the rate over
    all outcomes, as a benchmark's fix rate over its rows; tasks are still what is resampled)."""
    if pooled:
        return Statistic("pooled_rate_difference", _pooled_pair, _ratio)
    return Statistic("rate_difference", lambda pair: (_rate(pair[1]) - _rate(pair[0]), 1.0), _ratio)


# ---------------------------------------------------------------------------------------------
# two models on the same tasks


@dataclass(frozen=True)
class ModelComparison:
    """Two models (or a model before and after a change) on the same tasks."""

    before: float                 # rate of model A (tasks weigh the same)
    after: float                  # rate of model B
    difference: float             # after − before
    low: float                    # bootstrap interval of the difference (over tasks)
    high: float
    confidence: float
    tasks: int
    b: int                        # discordant pairs: right before, wrong after
    c: int                        # discordant pairs: wrong before, right after
    p_value: float                # McNemar exact, from b and c
    within_noise: bool            # the interval includes 0
    summary: str                  # one phrase for a report


def _counted(outcomes: int, tasks: int) -> str:
    """What a comparison was over: "16 tasks", or "57 outcomes in 38 tasks" when a task has several."""
    return f"{tasks} tasks" if outcomes == tasks else f"{outcomes} outcomes in {tasks} tasks"


def compare_models(before: Sequence[Any], after: Sequence[Any], resamples: int = 10000,
                   confidence: float = 0.95, seed: int = 0, pooled: bool = False) -> ModelComparison:
    """Paired comparison of two models' per-task correctness on the same tasks (same order).

    Each item is a bool (one episode per task, e.g. greedy) or a list of bools (several
    episodes; the two lists of a task are paired episode by episode for McNemar's counts).
    Tasks weigh the same, or with `pooled` every outcome does (`rate_difference`).
    McNemar's test assumes independent pairs: exact with one episode per task; with several
    sampled episodes per task its p-value is optimistic, and the task bootstrap interval is the
    measure to trust.
    """
    if len(before) != len(after):
        raise ValueError(f"compare_models: {len(before)} tasks before and {len(after)} after")
    if not before:
        raise ValueError("compare_models: no tasks")
    flat_before, flat_after = [], []
    for i, (x, y) in enumerate(zip(before, after)):
        xs, ys = _outcomes(x), _outcomes(y)
        if len(xs) != len(ys):
            raise ValueError(f"compare_models: task {i} has {len(xs)} outcomes before and {len(ys)} after")
        flat_before += xs
        flat_after += ys
    b, c = discordant_counts(flat_before, flat_after)
    result = paired_bootstrap(before, after, rate_difference(pooled), resamples, confidence, seed)
    if pooled:
        rate_before, rate_after = sum(flat_before) / len(flat_before), sum(flat_after) / len(flat_after)
    else:
        rate_before = sum(_rate(x) for x in before) / len(before)
        rate_after = sum(_rate(y) for y in after) / len(after)
    p = mcnemar_exact(b, c)
    verdict = "within noise" if result.within_noise else "beyond noise"
    word = "includes" if result.within_noise else "excludes"
    summary = (f"{verdict}: {100 * rate_before:.1f}% -> {100 * rate_after:.1f}%, "
               f"difference {100 * result.estimate:+.1f} points, {100 * confidence:g}% interval "
               f"[{100 * result.low:+.1f}, {100 * result.high:+.1f}] {word} 0 "
               f"({_counted(len(flat_before), len(before))}; discordant {b} worse / {c} better, McNemar p = {p:.3g})")
    return ModelComparison(rate_before, rate_after, result.estimate, result.low, result.high, confidence,
                           len(before), b, c, p, result.within_noise, summary)
