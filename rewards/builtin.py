"""The built-in turn-level rewards. Each returns one float per executed turn."""
from __future__ import annotations

from rewards.base import REWARDS


@REWARDS.register("binary")
def binary(turns: list, task, config) -> list[float]:
    """1 for a turn whose program passes every test, else 0."""
    return [float(t.verdicts.correct) for t in turns]


@REWARDS.register("fraction")
def fraction(turns: list, task, config) -> list[float]:
    """Share of hidden tests passed (partial credit)."""
    return [t.verdicts.hidden_fraction if t.verdicts.has_code else 0.0 for t in turns]


@REWARDS.register("cocos")
def cocos(turns: list, task, config) -> list[float]:
    """CoCoS accumulated progressive reward, split per turn: r_t = gamma^(T-t) * (c_t - c_{t-1}).

    The turn rewards sum to the episode reward R = sum_t gamma^(T-t) (c_t - c_{t-1}), c_0 = 0;
    for T = 2 that is c_2 - (1 - gamma) c_1. c_t is the passed-test count, as a fraction of all
    tests when reward.normalize_counts (tasks differ in test counts) or raw, as CoCoS's code.
    """
    T = len(turns)
    counts = [0.0] + [
        (v.hidden_fraction if config.normalize_counts else float(v.hidden_passed)) if v.has_code else 0.0
        for v in (t.verdicts for t in turns)
    ]
    return [config.gamma ** (T - t) * (counts[t] - counts[t - 1]) for t in range(1, T + 1)]


@REWARDS.register("score")
def score(turns: list, task, config) -> list[float]:
    """SCoRe. Stage I: only the last turn is rewarded (turn 1 is held near the reference by the
    large first-turn KL, algo.kl_coef_first_turn). Stage II: every turn gets its own correctness,
    and each later turn a bonus alpha * (r(y_t) - r(y_{t-1})) for the progress it made."""
    r = [float(t.verdicts.correct) for t in turns]
    if config.score_stage == 1:
        return [0.0] * (len(r) - 1) + [r[-1]]
    return [r[0]] + [r[t] + config.alpha * (r[t] - r[t - 1]) for t in range(1, len(r))]


@REWARDS.register("rlef")
def rlef(turns: list, task, config) -> list[float]:
    """RLEF: +1 if the final program passes all tests, -1 otherwise, given at the last turn;
    reward.no_code_penalty (-0.2) for each turn whose reply holds no program."""
    rewards = [config.no_code_penalty if not t.verdicts.has_code else 0.0 for t in turns]
    rewards[-1] += 1.0 if turns[-1].verdicts.correct else -1.0
    return rewards
