"""Self-correction metrics over per-episode, per-turn correctness (pure functions).

`correct[e][t]` says whether episode e's program after turn t+1 passes every test. An episode that
stopped early keeps its last program for the remaining turns (`pad_turns`), so Acc@t always
describes the program a user would have after t turns. Definitions (docs/evaluation.md):

- Acc@t: share of episodes whose turn-t program is correct (with one episode per task: of tasks;
  with n episodes per task it equals the mean over tasks of c_t / n, i.e. pass@1 at turn t).
- Δ(t1,tT) = Acc@tT − Acc@t1; Δi→c: share of episodes wrong at t1 and right at tT; Δc→i: right
  at t1 and wrong at tT; Δ = Δi→c − Δc→i.
- Transition table of turns t → t+1: the number of episodes c→c, c→i, i→c, i→i.
- pass@k (unbiased, n samples of which c correct): 1 − C(n−c, k) / C(n, k).
- n@k as RLEF defines it: every turn costs one sample, so n episodes of at most T turns cost
  k = n·T samples, and n@(n·T) is the chance that at least one of the n episodes' final programs
  is correct: pass_at_k(N, c_T, n) from N sampled episodes per task, c_T of them right at turn T.
"""
from __future__ import annotations

from typing import Sequence

TRANSITIONS = ("c2c", "c2i", "i2c", "i2i")


def pad_turns(correct: Sequence[Sequence[bool]], num_turns: int) -> list[list[bool]]:
    return [list(c) + [c[-1]] * (num_turns - len(c)) for c in correct]


def accuracy_at(correct: Sequence[Sequence[bool]], num_turns: int) -> list[float]:
    """Acc@t for t = 1..num_turns."""
    padded = pad_turns(correct, num_turns)
    return [sum(c[t] for c in padded) / len(padded) for t in range(num_turns)] if padded else [0.0] * num_turns


def transitions(correct: Sequence[Sequence[bool]], num_turns: int, first: int = 0, last: int | None = None) -> dict:
    """Δ, Δi→c and Δc→i between turn `first` and turn `last` (0-based; default: the last turn)."""
    padded = pad_turns(correct, num_turns)
    last = num_turns - 1 if last is None else last
    n = max(len(padded), 1)
    i2c = sum((not c[first]) and c[last] for c in padded) / n
    c2i = sum(c[first] and not c[last] for c in padded) / n
    return {"delta": i2c - c2i, "delta_i2c": i2c, "delta_c2i": c2i}


def self_correction_report(correct: Sequence[Sequence[bool]], num_turns: int) -> dict[str, float]:
    """Acc@t1..Acc@tT plus the first-to-last-turn transitions, as flat metric names."""
    report = {f"acc_t{t + 1}": a for t, a in enumerate(accuracy_at(correct, num_turns))}
    if num_turns > 1:
        report.update(transitions(correct, num_turns))
    return report


# ---------------------------------------------------------------------------------------------
# turn-to-turn transition tables


def transition_counts(correct: Sequence[Sequence[bool]], num_turns: int) -> list[dict[str, int]]:
    """One 2x2 table per consecutive pair of turns (t, t+1), t = 1..T−1: how many episodes went
    c→c, c→i, i→c, i→i (c: correct, i: incorrect), after padding early stops with their last
    program. Each table sums to the number of episodes."""
    padded = pad_turns(correct, num_turns)
    tables = []
    for t in range(num_turns - 1):
        table = dict.fromkeys(TRANSITIONS, 0)
        for c in padded:
            table[("c" if c[t] else "i") + "2" + ("c" if c[t + 1] else "i")] += 1
        tables.append(table)
    return tables


def per_turn_report(correct: Sequence[Sequence[bool]], num_turns: int) -> dict[str, float]:
    """Everything `self_correction_report` gives (acc_t1..acc_tT; delta, delta_i2c, delta_c2i from
    turn 1 to turn T) plus, flat name → float:

      episodes             the number of episodes
      t{t}_t{t+1}_{x}      transition counts between consecutive turns, x in c2c, c2i, i2c, i2i
      delta_t{t}_t{t+1}    Acc@t+1 − Acc@t   (only when T > 2: for T = 2 it is `delta`)
    """
    report = self_correction_report(correct, num_turns)
    report["episodes"] = float(len(correct))
    n = max(len(correct), 1)
    for t, table in enumerate(transition_counts(correct, num_turns), start=1):
        for x in TRANSITIONS:
            report[f"t{t}_t{t + 1}_{x}"] = float(table[x])
        if num_turns > 2:
            report[f"delta_t{t}_t{t + 1}"] = (table["i2c"] - table["c2i"]) / n
    return report


# ---------------------------------------------------------------------------------------------
# sampled evaluation: pass@k and n@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):

        pass@k = 1 − C(n−c, k) / C(n, k) = 1 − prod_{i=n−c+1}^{n} (1 − k / i)

    the chance that at least one of k samples drawn without replacement from the n is correct.
    The product form avoids huge binomials. Needs 0 ≤ c ≤ n and 1 ≤ k ≤ n."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def group_by_task(task_ids: Sequence[str], correct: Sequence[Sequence[bool]]) -> dict[str, list[list[bool]]]:
    """Per-episode correctness grouped by task id, tasks in first-seen order."""
    groups: dict[str, list[list[bool]]] = {}
    for task_id, c in zip(task_ids, correct, strict=True):
        groups.setdefault(task_id, []).append(list(c))
    return groups


def sampled_report(per_task: Sequence[Sequence[Sequence[bool]]], num_turns: int, ks: Sequence[int]) -> dict[str, float]:
    """pass@k per turn and n@k over tasks that each have the same number N of sampled episodes.

    per_task[i][j][t]: whether episode j of task i is correct after turn t+1 (early stops padded).
    Returns, averaged over tasks (flat name → float):

      pass@{k}_t{t}   mean over tasks of pass_at_k(N, c_t, k), c_t = episodes right at turn t
      pass@{k}        = pass@{k}_t1: the usual single-turn pass@k (k independent first attempts)
      {n}@{n*T}       RLEF's n@k for n in ks: every turn costs a sample, so n episodes of at most
                      T turns cost n·T; the chance that at least one of n episodes' final (turn-T)
                      programs is correct = mean over tasks of pass_at_k(N, c_T, n)

    Every k must be ≤ N. With N = 1 and greedy decoding, pass@1_t{t} = Acc@t and 1@T = Acc@tT.
    """
    if not per_task:
        raise ValueError("sampled_report: no tasks")
    sizes = {len(episodes) for episodes in per_task}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"sampled_report: every task needs the same positive number of episodes, got sizes {sorted(sizes)}")
    (n,) = sizes
    ks = sorted(set(ks))
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"sampled_report: each k must be in [1, {n}] (the episodes per task), got {ks}")
    counts = [[sum(c[t] for c in pad_turns(episodes, num_turns)) for t in range(num_turns)] for episodes in per_task]
    report: dict[str, float] = {}
    for k in ks:
        for t in range(num_turns):
            report[f"pass@{k}_t{t + 1}"] = sum(pass_at_k(n, c[t], k) for c in counts) / len(counts)
        report[f"pass@{k}"] = report[f"pass@{k}_t1"]
    for k in ks:
        report[f"{k}@{k * num_turns}"] = sum(pass_at_k(n, c[-1], k) for c in counts) / len(counts)
    return report


# ---------------------------------------------------------------------------------------------
# reports over episode records (rl/episode.py)


def correctness(episodes) -> dict[str, list[list[bool]]]:
    """Task id -> its episodes -> whether the program of each turn run passed every test."""
    return group_by_task([e.task.task_id for e in episodes], [[t.correct for t in e.turns] for e in episodes])


def benchmark_rows(episodes) -> dict[str, dict]:
    """A repair benchmark's row id -> {"kind": faulty | correct, "task": its base task}, for
    paired_comparisons; empty for episodes of a plain task set."""
    return {e.task.task_id: {"kind": e.task.metadata["kind"], "task": e.task.metadata.get("base_task_id", e.task.task_id)}
            for e in episodes if "kind" in e.task.metadata}


def evaluation_metrics(episodes, num_turns: int, ks: Sequence[int], confidence: float = 0.95) -> dict[str, float]:
    """What an evaluation reports (train's before/after and `selfcorrect eval`): per_turn_report
    plus sampled_report over the episodes grouped by task, the 95 % interval of every Acc@t
    and Δ as `<name>_low` / `<name>_high` (`intervals`), and on a repair benchmark's rows the fix
    and keep rates (`repair_metrics`: nothing for plain tasks)."""
    by_task = correctness(episodes)
    report = {**per_turn_report([c for cs in by_task.values() for c in cs], num_turns),
              **sampled_report(list(by_task.values()), num_turns, ks)}
    return {**report, **intervals(list(by_task.values()), num_turns, confidence), **repair_metrics(episodes, confidence)}


def intervals(per_task: Sequence[Sequence[Sequence[bool]]], num_turns: int, confidence: float = 0.95) -> dict[str, float]:
    """Intervals over per-task episodes [task][episode][turn]: Wilson for Acc@t when every task
    has one episode (the tasks are the independent trials); otherwise, and for Δ, Δi→c and Δc→i,
    a bootstrap over tasks (episodes of one task are not independent)."""
    from rl import stats

    out: dict[str, float] = {}
    single = all(len(episodes) == 1 for episodes in per_task)
    for t in range(num_turns):
        if single:
            low, high = stats.wilson_interval(sum(pad_turns(e, num_turns)[0][t] for e in per_task), len(per_task), confidence)
        else:
            result = stats.bootstrap_tasks(per_task, stats.accuracy(num_turns, t), confidence=confidence)
            low, high = result.low, result.high
        out[f"acc_t{t + 1}_low"], out[f"acc_t{t + 1}_high"] = low, high
    if num_turns > 1:
        for name, statistic in (("delta", stats.delta), ("delta_i2c", stats.delta_i2c), ("delta_c2i", stats.delta_c2i)):
            result = stats.bootstrap_tasks(per_task, statistic(num_turns), confidence=confidence)
            out[f"{name}_low"], out[f"{name}_high"] = result.low, result.high
    return out


def step_metrics(episodes, num_turns: int) -> dict[str, float]:
    """A training step's episode metrics, from records with credit: self-correction over the
    sampled episodes (train/*), the repair curriculum's (repair/*), rewards per turn, lengths,
    filtering and sandbox failures."""
    sampled = [[t.correct for t in e.turns] for e in episodes if not e.turns[0].seeded]
    seeded = [[t.correct for t in e.turns] for e in episodes if e.turns[0].seeded]
    metrics = {f"train/{k}": v for k, v in self_correction_report(sampled, num_turns).items()} if sampled else {}
    metrics["repair/seeded_fraction"] = len(seeded) / len(episodes)
    faulty, correct = [c for c in seeded if not c[0]], [c for c in seeded if c[0]]
    if faulty:
        metrics["repair/fixed"] = sum(c[-1] for c in faulty) / len(faulty)
    if correct:
        metrics["repair/kept"] = sum(c[-1] for c in correct) / len(correct)
    rewards = [e.credit.rewards for e in episodes]
    for t in range(num_turns):
        at_t = [r[t] for r in rewards if len(r) > t]
        if at_t:
            metrics[f"reward/turn{t + 1}"] = sum(at_t) / len(at_t)
    metrics["reward/mean"] = sum(sum(r) for r in rewards) / len(rewards)
    metrics["reward/errors"] = sum(e.credit.reward_error is not None for e in episodes)
    kl = [k for e in episodes for k in e.credit.turn_kl]
    if kl:   # the KL went in the reward
        metrics["kl/reward_mean"] = sum(kl) / len(kl)
    extra: dict[str, list[float]] = {}
    for e in episodes:
        for k, v in e.credit.reward_extra.items():
            extra.setdefault(k, []).append(v)
    metrics.update({f"reward_extra/{k}": sum(v) / len(v) for k, v in extra.items()})
    turns = [t for e in episodes for t in e.turns]
    metrics["episode/filtered_fraction"] = sum(not e.credit.trained for e in episodes) / len(episodes)
    metrics["episode/turns"] = len(turns) / len(episodes)
    metrics["episode/no_code_fraction"] = sum(t.code is None for t in turns) / len(turns)
    metrics["episode/sandbox_failures"] = sum(t.verdicts.sandbox_failures for t in turns)
    metrics["tokens/policy"] = sum(sum(e.layout.loss_mask) for e in episodes)
    metrics["tokens/total"] = sum(len(e.layout.token_ids) for e in episodes)
    return metrics


def paired_comparisons(before: dict[str, list[list[bool]]], after: dict[str, list[list[bool]]], num_turns: int,
                       rows: dict[str, dict] | None = None) -> dict[str, dict]:
    """Two evaluations of the same tasks, each as task id -> episodes -> per-turn correctness (as
    run; early stops are padded here): for Acc@t1 and Acc@tT, the paired difference after −
    before with its task-bootstrap interval, the discordant counts and the exact McNemar p-value
    (rl/stats.py:compare_models), as plain dicts. With `rows` (a repair benchmark's row id ->
    {"kind": "faulty" | "correct", "task": its base task}), also fix_rate and keep_rate: the last
    program's correctness over the faulty and over the correct rows, the rows of one base task
    resampled together (they are not independent)."""
    import dataclasses

    from rl import stats

    if before.keys() != after.keys():
        only = sorted(before.keys() ^ after.keys())
        raise ValueError(f"the two evaluations are not of the same tasks: {len(only)} tasks in only one of them, e.g. {only[:3]}")
    tasks = sorted(before)
    out = {}
    for t in sorted({0, num_turns - 1}):
        b, a = ([[c[t] for c in pad_turns(ev[k], num_turns)] for k in tasks] for ev in (before, after))
        out[f"acc_t{t + 1}"] = dataclasses.asdict(stats.compare_models(b, a))
    for kind, name in (("faulty", "fix_rate"), ("correct", "keep_rate")):
        groups: dict[str, list[str]] = {}
        for row in tasks:
            if rows and rows[row]["kind"] == kind:
                groups.setdefault(rows[row]["task"], []).append(row)
        if groups:
            b, a = ([[c[-1] for row in members for c in ev[row]] for members in groups.values()] for ev in (before, after))
            out[name] = dataclasses.asdict(stats.compare_models(b, a, pooled=True))   # over rows, as repair_metrics
    return out


def repair_metrics(episodes, confidence: float = 0.95) -> dict[str, float]:
    """On the repair benchmark (episodes of the `seeded` environment, one per row): fix_rate, the
    share of faulty first attempts whose last program is correct, and keep_rate, the share of
    correct first attempts still correct at the end, each with its count and a 95 % interval: the
    envelope of a bootstrap over the benchmark's tasks (the rows of one task are not independent)
    and Wilson's interval over the rows (which stays open at 0 % and 100 %, where the bootstrap
    collapses to a point)."""
    from rl import stats

    out: dict[str, float] = {}
    share = stats.Statistic("rate", lambda outcomes: (float(sum(outcomes)), float(len(outcomes))),
                            lambda sums: sums[..., 0] / sums[..., 1])
    for kind, name in (("faulty", "fix_rate"), ("correct", "keep_rate")):
        by_task: dict[str, list[bool]] = {}
        for e in episodes:
            if e.task.metadata.get("kind") == kind:
                by_task.setdefault(e.task.metadata.get("base_task_id", e.task.task_id), []).append(e.turns[-1].correct)
        if by_task:
            result = stats.bootstrap_tasks(list(by_task.values()), share, confidence=confidence)
            rows = [x for v in by_task.values() for x in v]
            low, high = stats.wilson_interval(sum(rows), len(rows), confidence)
            out[name], out[f"{name}_low"], out[f"{name}_high"] = result.estimate, min(low, result.low), max(high, result.high)
            out[f"{name}_n"] = float(len(rows))
    return out
