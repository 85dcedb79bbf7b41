"""rl/stats.py against published and hand-computed values, and the bootstrap's behaviour."""
import math
import random

import numpy as np
import pytest

from rl.metrics import accuracy_at, transitions
from rl.stats import (
    BootstrapResult, Statistic, accuracy, bootstrap_tasks, compare_models, delta, delta_c2i, delta_i2c,
    discordant_counts, mcnemar_exact, paired_bootstrap, rate_difference, wilson_interval,
)

# ---------------------------------------------------------------------------------------------
# Wilson


@pytest.mark.parametrize("successes, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score interval)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0000),
    # by hand: 0/n -> (0, z²/(n+z²)); 5/10 -> 0.5 ± 1.96/1.3842·sqrt(0.025 + 0.0096)
    (0, 10, 0.0000, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0000),
])
def test_wilson_published_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=6e-5)


def test_wilson_shape():
    z = 1.959963984540054
    assert wilson_interval(0, 10)[1] == pytest.approx(z * z / (10 + z * z))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo, hi = wilson_interval(3, 10)
    assert (lo, hi) == pytest.approx((1 - wilson_interval(7, 10)[1], 1 - wilson_interval(7, 10)[0]))  # symmetric
    assert wilson_interval(3, 10, 0.99)[0] < lo and wilson_interval(3, 10, 0.99)[1] > hi    # wider
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < hi - lo           # narrower with n
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for bad in ((11, 10), (-1, 10), (1, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(TypeError):
        wilson_interval(0.5, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


# ---------------------------------------------------------------------------------------------
# McNemar


@pytest.mark.parametrize("b, c, p", [
    (1, 9, 0.021484375),                 # 2·(1 + 10)/1024
    (2, 8, 0.109375),                    # 2·(1 + 10 + 45)/1024
    (0, 5, 0.0625),                      # 2/32
    (0, 1, 1.0),                         # 2·1/2
    (3, 3, 1.0),                         # capped at 1
    (0, 0, 1.0),                         # no discordant pair
    (0, 10, 2 / 1024),
    (10, 30, 2 * sum(math.comb(40, k) for k in range(11)) / 2 ** 40),
])
def test_mcnemar_exact_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)               # symmetric


def test_mcnemar_large_counts_and_bad_input():
    assert 0.0 < mcnemar_exact(480, 620) < 1e-4                     # 2^1100 does not overflow
    assert mcnemar_exact(2000, 2000) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    with pytest.raises(TypeError):
        mcnemar_exact(1.0, 3)


def test_discordant_counts():
    before = [True, True, False, False, True]
    after = [True, False, True, True, True]
    assert discordant_counts(before, after) == (1, 2)
    with pytest.raises(ValueError):
        discordant_counts([True], [True, False])


# ---------------------------------------------------------------------------------------------
# bootstrap


def _episodes(seed, tasks=80, episodes=3, turns=2, p1=0.4, p2=0.55):
    rng = random.Random(seed)
    return [[[rng.random() < p1, rng.random() < p2][:turns] for _ in range(episodes)] for _ in range(tasks)]


def test_episode_statistics_match_rl_metrics():
    per_task = _episodes(1, episodes=1)
    flat = [e for task in per_task for e in task]
    expected = transitions(flat, 2)
    assert bootstrap_tasks(per_task, delta(2), resamples=10).estimate == pytest.approx(expected["delta"])
    assert bootstrap_tasks(per_task, delta_i2c(2), resamples=10).estimate == pytest.approx(expected["delta_i2c"])
    assert bootstrap_tasks(per_task, delta_c2i(2), resamples=10).estimate == pytest.approx(expected["delta_c2i"])
    assert bootstrap_tasks(per_task, accuracy(2, 1), resamples=10).estimate == pytest.approx(accuracy_at(flat, 2)[1])


def test_tasks_weigh_the_same_and_early_stops_are_padded():
    # task A: one episode that went i->c; task B: four episodes, c at turn 1 and stopped there
    per_task = [[[False, True]], [[True]] * 4]
    assert bootstrap_tasks(per_task, delta(2), resamples=10).estimate == pytest.approx(0.5)   # (1 + 0) / 2
    assert bootstrap_tasks(per_task, accuracy(2, 0), resamples=10).estimate == pytest.approx(0.5)
    assert bootstrap_tasks(per_task, accuracy(2, -1), resamples=10).estimate == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bootstrap_tasks([[[True, True, True]]], delta(2))                # more turns than num_turns
    with pytest.raises(ValueError):
        bootstrap_tasks([[]], delta(2))                                  # a task without episodes


def test_bootstrap_is_deterministic_by_seed_and_contains_the_estimate():
    per_task = _episodes(2)
    a = bootstrap_tasks(per_task, delta(2), resamples=2000, seed=7)
    assert a == bootstrap_tasks(per_task, delta(2), resamples=2000, seed=7)
    assert a != bootstrap_tasks(per_task, delta(2), resamples=2000, seed=8)
    assert isinstance(a, BootstrapResult) and a.tasks == 80 and a.resamples == 2000 and a.statistic == "delta"
    assert a.low < a.estimate < a.high and a.contains(a.estimate)
    wider = bootstrap_tasks(per_task, delta(2), resamples=2000, seed=7, confidence=0.99)
    assert wider.low < a.low and wider.high > a.high


def test_degenerate_cases():
    same = [[[True, True]], [[False, False]], [[True, True]]]              # no episode changes
    result = bootstrap_tasks(same, delta(2), resamples=500)
    assert (result.estimate, result.low, result.high) == (0.0, 0.0, 0.0) and result.within_noise
    everywhere = [[[False, True]]] * 5                                     # every episode i->c
    r = bootstrap_tasks(everywhere, delta_i2c(2), resamples=500)
    assert (r.estimate, r.low, r.high) == (1.0, 1.0, 1.0) and not r.within_noise
    one = bootstrap_tasks([[[False, True]]], delta(2), resamples=50)       # a single task
    assert (one.low, one.high) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_tasks([], delta(2))
    with pytest.raises(ValueError):
        bootstrap_tasks(same, delta(2), resamples=0)


def test_general_callable_statistic_agrees_with_the_fast_path():
    per_task = _episodes(3, tasks=30)

    def mean_delta(items):
        return float(np.mean([np.mean([e[-1] - e[0] for e in task]) for task in items]))

    slow = bootstrap_tasks(per_task, mean_delta, resamples=3000, seed=0)
    fast = bootstrap_tasks(per_task, delta(2), resamples=3000, seed=0)
    assert slow.estimate == pytest.approx(fast.estimate)
    # different random streams, same distribution: the ends agree to Monte Carlo error
    assert slow.low == pytest.approx(fast.low, abs=0.03) and slow.high == pytest.approx(fast.high, abs=0.03)


def test_paired_bootstrap_is_tighter_than_unpaired_and_keeps_pairs():
    rng = random.Random(4)
    before = [rng.random() < 0.5 for _ in range(200)]
    after = [x if rng.random() < 0.9 else not x for x in before]            # mostly the same answers
    paired = paired_bootstrap(before, after, rate_difference(), resamples=4000)
    assert paired.estimate == pytest.approx(np.mean(after) - np.mean(before))
    # resampled independently, the two rates would each carry their full noise (~±7 points)
    half_width = (paired.high - paired.low) / 2
    unpaired = 1.96 * math.sqrt(2 * 0.25 / 200)
    assert half_width < 0.5 * unpaired
    identical = paired_bootstrap(before, before, rate_difference(), resamples=500)
    assert (identical.estimate, identical.low, identical.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap(before, after[:-1], rate_difference())


def test_coverage_on_a_synthetic_case():
    """95% intervals of a paired difference should cover the true value about 95% of the time."""
    true_difference = 0.10
    covered = 0
    trials = 200
    rng = np.random.default_rng(123)
    for trial in range(trials):
        base = rng.random(150)                                   # each task's own difficulty
        before = rng.random(150) < base
        after = rng.random(150) < np.clip(base + true_difference, 0, 1)
        # E[after − before] per task is min(base + 0.1, 1) − base; compute the exact truth
        truth = float(np.mean(np.clip(base + true_difference, 0, 1) - base))
        result = paired_bootstrap(list(before), list(after), rate_difference(), resamples=1000, seed=trial)
        covered += result.contains(truth)
    assert 0.88 <= covered / trials <= 0.99


# ---------------------------------------------------------------------------------------------
# two models


def test_compare_models_by_hand():
    # 10 tasks: 4 both right, 1 right -> wrong, 4 wrong -> right, 1 both wrong
    before = [True] * 4 + [True] + [False] * 4 + [False]
    after = [True] * 4 + [False] + [True] * 4 + [False]
    result = compare_models(before, after, resamples=2000)
    assert (result.before, result.after) == (0.5, 0.8)
    assert result.difference == pytest.approx(0.3)
    assert (result.b, result.c, result.tasks) == (1, 4, 10)
    assert result.p_value == pytest.approx(2 * (1 + 5) / 32)     # 0.375
    assert result.low <= 0.3 <= result.high
    assert result.within_noise == (result.low <= 0 <= result.high)
    assert result.summary.startswith("within noise" if result.within_noise else "beyond noise")
    assert "McNemar p = 0.375" in result.summary


def test_compare_models_tells_a_real_change_from_noise():
    rng = random.Random(5)
    before = [rng.random() < 0.4 for _ in range(300)]
    better = [x or rng.random() < 0.4 for x in before]               # fixes ~24% of tasks, breaks none
    noisy = [x if rng.random() < 0.9 else not x for x in before]     # flips 10% both ways
    real = compare_models(before, better)
    assert not real.within_noise and real.low > 0 and real.p_value < 1e-6 and real.b == 0
    assert real.summary.startswith("beyond noise") and "excludes 0" in real.summary
    noise = compare_models(before, noisy)
    assert noise.within_noise and noise.p_value > 0.05 and "includes 0" in noise.summary


def test_compare_models_with_several_episodes_per_task():
    before = [[True, False], [False, False], [True, True]]
    after = [[True, True], [False, True], [True, True]]
    result = compare_models(before, after, resamples=500)
    assert result.before == pytest.approx((0.5 + 0 + 1) / 3) and result.after == pytest.approx((1 + 0.5 + 1) / 3)
    assert (result.b, result.c) == (0, 2)
    with pytest.raises(ValueError):
        compare_models([[True, False]], [[True]])
    with pytest.raises(ValueError):
        compare_models([True], [True, False])


def test_custom_statistic_object():
    # share of tasks with at least one correct episode at the last turn (any-of-N), as a Statistic
    any_correct = Statistic("any", lambda task: (float(any(e[-1] for e in task)), 1.0),
                            lambda s: s[..., 0] / s[..., 1])
    per_task = [[[False, True], [False, False]], [[False, False]], [[True, True]]]
    assert bootstrap_tasks(per_task, any_correct, resamples=100).estimate == pytest.approx(2 / 3)


def test_pooled_comparison_weighs_every_outcome_and_resamples_tasks():
    """Task A: 3 rows, all fixed after; task B: 1 row, never fixed. Pooled over rows the fix rate
    goes 0/4 -> 3/4; with tasks weighing the same, 0 -> (1 + 0) / 2."""
    before = [[False, False, False], [False]]
    after = [[True, True, True], [False]]
    pooled = compare_models(before, after, resamples=2000, pooled=True)
    assert (pooled.before, pooled.after, pooled.difference) == (0.0, 0.75, pytest.approx(0.75))
    assert (pooled.b, pooled.c) == (0, 3)
    assert pooled.p_value == pytest.approx(0.25)   # McNemar exact: 2 * 0.5**3
    # resampling the two tasks: {A, A} gives +1, {B, B} gives 0, {A, B} the estimate
    assert pooled.low == pytest.approx(0.0) and pooled.high == pytest.approx(1.0)
    assert "(4 outcomes in 2 tasks; discordant 0 worse / 3 better" in pooled.summary   # what the counts are of
    per_task = compare_models(before, after, resamples=2000)
    assert (per_task.before, per_task.after, per_task.difference) == (0.0, 0.5, pytest.approx(0.5))
