"""Per-turn advantages: every turn gets its own return and a baseline from its group.

Returns are G_t = sum_{u>=t} gamma^(u-t) r_u. The baseline for turn t is computed over the
episodes of the same group (same task, same first prompt) that reached turn t; all tokens of a
turn share its advantage. Estimators are pure functions over lists of floats.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

from rl.registry import Registry

Estimator = Callable[[Sequence[float]], list[float]]   # one group's returns -> advantages
ADVANTAGES: Registry[Estimator] = Registry("advantage estimator")


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    returns, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


@ADVANTAGES.register("grpo")
def grpo(returns: Sequence[float], eps: float = 1e-6) -> list[float]:
    """(G - mean) / (std + eps), population std; a group with one member has no baseline: 0."""
    n = len(returns)
    if n < 2:
        return [0.0] * n
    mean = sum(returns) / n
    std = (sum((g - mean) ** 2 for g in returns) / n) ** 0.5
    return [(g - mean) / (std + eps) for g in returns]


@ADVANTAGES.register("rloo")
def rloo(returns: Sequence[float]) -> list[float]:
    """G_i - mean of the other members' returns."""
    n = len(returns)
    if n < 2:
        return [0.0] * n
    total = sum(returns)
    return [g - (total - g) / (n - 1) for g in returns]


def turn_advantages(turn_rewards: Sequence[Sequence[float]], groups: Sequence[str], estimator: Estimator,
                    gamma: float) -> list[list[float]]:
    """Advantages for every turn of every episode, grouped by (group, turn index)."""
    returns = [discounted_returns(r, gamma) for r in turn_rewards]
    members: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (group, g) in enumerate(zip(groups, returns)):
        for t in range(len(g)):
            members[(group, t)].append(i)
    advantages = [[0.0] * len(g) for g in returns]
    for (_, t), idx in members.items():
        for i, a in zip(idx, estimator([returns[i][t] for i in idx])):
            advantages[i][t] = a
    return advantages
