"""Per-turn advantages: every turn gets its own return and a baseline from the samples that share
its context.

Returns are G_t = sum_{u>=t} gamma^(u-t) r_u. Episodes are put in baseline groups per turn by a
key (`rl/episodes.py:baseline_keys`): turn 1 of every episode of a task shares the first prompt;
a later turn's group is the episodes that share everything before it (the same first attempt,
when several revisions are sampled per attempt), else the task's episodes at that turn. All
tokens of a turn share its advantage. Estimators are pure functions over lists of floats.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable, Sequence

from rl.registry import Registry

# The returns of every baseline group of a batch -> their advantages, in the same shape.
Estimator = Callable[[list[list[float]]], list[list[float]]]
ADVANTAGES: Registry[Estimator] = Registry("advantage estimator")
EPS = 1e-6


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    returns, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def population_std(xs: Sequence[float]) -> float:
    """Population standard deviation."""
    m = mean(xs)
    return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5


def _centered(group: Sequence[float]) -> list[float]:
    """G - mean(G); a group of one has no baseline and gets 0."""
    if len(group) < 2:
        return [0.0] * len(group)
    m = mean(group)
    return [g - m for g in group]


@ADVANTAGES.register("grpo")
def grpo(groups: list[list[float]]) -> list[list[float]]:
    """(G - mean) / (std + eps) within each group, population std (GRPO)."""
    return [[c / (population_std(g) + EPS) for c in _centered(g)] for g in groups]


@ADVANTAGES.register("drgrpo")
def drgrpo(groups: list[list[float]]) -> list[list[float]]:
    """G - mean within each group, no std division (Dr.GRPO: the std favours easy/hard groups)."""
    return [_centered(g) for g in groups]


@ADVANTAGES.register("rloo")
def rloo(groups: list[list[float]]) -> list[list[float]]:
    """G_i - mean of the other members' returns."""
    out = []
    for g in groups:
        n, total = len(g), sum(g)
        out.append([0.0] * n if n < 2 else [x - (total - x) / (n - 1) for x in g])
    return out


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(groups: list[list[float]]) -> list[list[float]]:
    """REINFORCE++ with baseline: G - group mean, then divided by the std of those centred values
    over the whole batch (global, not per group, normalisation)."""
    centered = [_centered(g) for g in groups]
    flat = [c for g in centered for c in g]
    if not flat:
        return centered
    scale = population_std(flat) + EPS
    return [[c / scale for c in g] for g in centered]


def turn_advantages(turn_rewards: Sequence[Sequence[float]], turn_keys: Sequence[Sequence[Hashable]],
                    estimator: Estimator, gamma: float) -> list[list[float]]:
    """Advantages for every turn of every episode. turn_keys[i][t] names the baseline group of
    episode i's turn t: episodes with equal keys at a turn are each other's baseline there."""
    returns = [discounted_returns(r, gamma) for r in turn_rewards]
    members: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)
    for i, (keys, g) in enumerate(zip(turn_keys, returns)):
        if len(keys) != len(g):
            raise ValueError(f"episode {i}: {len(keys)} baseline keys for {len(g)} turns")
        for t, key in enumerate(keys):
            members[key].append((i, t))
    groups = list(members.values())
    advantages = [[0.0] * len(g) for g in returns]
    for idx, adv in zip(groups, estimator([[returns[i][t] for i, t in idx] for idx in groups])):
        for (i, t), a in zip(idx, adv):
            advantages[i][t] = a
    return advantages


def uniform_groups(turn_rewards: Sequence[Sequence[float]], first_turn_keys: Sequence[Hashable]) -> set[Hashable]:
    """Groups (by first-turn key) in which every episode got the same rewards on every turn:
    they carry no learning signal (DAPO's dynamic-sampling filter drops them)."""
    seen: dict[Hashable, set[tuple[float, ...]]] = defaultdict(set)
    for key, rewards in zip(first_turn_keys, turn_rewards):
        seen[key].add(tuple(rewards))
    return {key for key, outcomes in seen.items() if len(outcomes) == 1}
