"""Advantage estimators: pure functions over lists of floats, and the registry that names them.

Two kinds, told apart by what they need, never by name:

  group baselines  every turn gets its own return G_t = sum_{u>=t} gamma^(u-t) r_u and a baseline
                   from the samples that share its context (baseline keys, rl/credit.py): turn 1
                   of every episode of a task shares the first prompt; a later turn's group is the
                   episodes that share everything before it (the same first attempt, when several
                   revisions are sampled per attempt), else the task's episodes at that turn. All
                   tokens of a turn share its advantage. grpo, drgrpo, rloo, reinforce_pp, and any
                   plug-in function `groups -> advantages` (returns of every group -> same shape).
  critic           PPO's generalised advantage estimation from a learned value head, over tokens
                   (`gae`) or over turns (`turn_value`, RLEF's turn-level value function).

A trajectory's decision points ("steps") and where the critic is read:
  gae          every policy token is a step; its value is read at the position before it (the
               state the token was sampled in); the turn's reward arrives at its last token.
  turn_value   every turn is a step; its value is read at the last token before the reply (the
               end of the prompt / feedback); all tokens of the turn share its advantage.
Discount: gamma between turns, 1 between tokens of the same turn.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from envs.registry import Registry

ENV_TURN = -1   # the turn id of environment tokens (rl/episode.py)
EPS = 1e-6

# The returns of every baseline group of a batch -> their advantages, in the same shape.
GroupFn = Callable[[list[list[float]]], list[list[float]]]


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


def grpo(groups: list[list[float]]) -> list[list[float]]:
    """(G - mean) / (std + eps) within each group, population std (GRPO)."""
    return [[c / (population_std(g) + EPS) for c in _centered(g)] for g in groups]


def drgrpo(groups: list[list[float]]) -> list[list[float]]:
    """G - mean within each group, no std division (Dr.GRPO: the std favours easy/hard groups)."""
    return [_centered(g) for g in groups]


def rloo(groups: list[list[float]]) -> list[list[float]]:
    """G_i - mean of the other members' returns."""
    out = []
    for g in groups:
        n, total = len(g), sum(g)
        out.append([0.0] * n if n < 2 else [x - (total - x) / (n - 1) for x in g])
    return out


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


def gae(rewards: Sequence[float], values: Sequence[float], discounts: Sequence[float], lam: float) -> tuple[list[float], list[float]]:
    """A_j = delta_j + d_j lam A_{j+1}, delta_j = r_j + d_j V_{j+1} - V_j, with d_j the discount
    from step j to j+1 (the last step's is ignored: nothing follows it). Returns (advantages,
    returns = A + V, the critic's targets)."""
    n = len(rewards)
    advantages, running = [0.0] * n, 0.0
    for j in reversed(range(n)):
        last = j == n - 1
        d = 0.0 if last else discounts[j]
        next_value = 0.0 if last else values[j + 1]
        delta = rewards[j] + d * next_value - values[j]
        running = delta + d * lam * (0.0 if last else running)
        advantages[j] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


def token_steps(turn_ids: Sequence[int], turn_rewards: Sequence[float], gamma: float):
    """(action positions, value positions, rewards, discounts) with one step per policy token."""
    actions = [k for k, t in enumerate(turn_ids) if t != ENV_TURN]
    rewards, discounts = [], []
    for j, k in enumerate(actions):
        turn = turn_ids[k]
        ends_turn = j + 1 == len(actions) or turn_ids[actions[j + 1]] != turn
        rewards.append(turn_rewards[turn] if ends_turn else 0.0)
        discounts.append(gamma if ends_turn else 1.0)
    return actions, [k - 1 for k in actions], rewards, discounts


def turn_steps(turn_ids: Sequence[int], turn_rewards: Sequence[float], gamma: float):
    """(turn indices, value positions, rewards, discounts) with one step per turn the policy wrote."""
    turns, positions = [], []
    for k, t in enumerate(turn_ids):
        if t != ENV_TURN and t not in turns:
            turns.append(t)
            positions.append(k - 1)
    return turns, positions, [turn_rewards[t] for t in turns], [gamma] * len(turns)


def whiten(groups: Sequence[Sequence[float]], eps: float = 1e-6) -> list[list[float]]:
    """Advantages shifted and scaled to mean 0, std 1 over the whole batch (PPO's usual step)."""
    flat = [a for g in groups for a in g]
    if len(flat) < 2:
        return [list(g) for g in groups]
    center, scale = mean(flat), population_std(flat) + eps
    return [[(a - center) / scale for a in g] for g in groups]


# ---------------------------------------------------------------------------------------------
# estimators as the credit assignment calls them


@dataclass(frozen=True)
class Advantages:
    """One episode's advantages: per turn, or per token (gae), and the critic's training data."""

    turns: list[float]
    tokens: list[float] | None = None
    value_positions: list[int] = ()
    value_targets: list[float] = ()
    old_values: list[float] = ()


class Estimator:
    """What credit assignment calls: (per-episode turn rewards, baseline keys, token turn ids,
    the critic's values at every position or None, gamma, lambda) -> Advantages per episode.
    The attributes say what an estimator needs, so no caller tests its name."""

    needs_critic = False    # reads the critic's values (the learner then trains a value head)
    min_group_size = 1      # samples per task it needs


@dataclass(frozen=True)
class GroupBaseline(Estimator):
    """Per-turn returns against a baseline over each turn's group (needs >= 2 samples per group)."""

    fn: GroupFn
    min_group_size = 2

    def __call__(self, rewards, keys, turn_ids, values, gamma: float, lam: float) -> list[Advantages]:
        return [Advantages(a) for a in turn_advantages(rewards, keys, self.fn, gamma)]


@dataclass(frozen=True)
class Critic(Estimator):
    """GAE from the critic's values at every position of each episode; whitened over the batch."""

    per_token: bool
    needs_critic = True

    def __call__(self, rewards, keys, turn_ids, values, gamma: float, lam: float) -> list[Advantages]:
        steps_of = token_steps if self.per_token else turn_steps
        raw = []
        for r, ids, v in zip(rewards, turn_ids, values):
            where, positions, step_rewards, discounts = steps_of(ids, r, gamma)
            old = [v[p] for p in positions]
            adv, targets = gae(step_rewards, old, discounts, lam)
            raw.append((where, adv, positions, targets, old))
        out = []
        for (where, _, positions, targets, old), adv, r, ids in zip(raw, whiten([a for _, a, *_ in raw]), rewards, turn_ids):
            turns = [0.0] * len(r)
            tokens = None
            if self.per_token:
                tokens = [0.0] * len(ids)
                for k, a in zip(where, adv):
                    tokens[k] = a
            else:
                for t, a in zip(where, adv):
                    turns[t] = a
            out.append(Advantages(turns, tokens, positions, targets, old))
        return out


ADVANTAGES: Registry[Estimator] = Registry("advantage estimator")
for _name, _fn in (("grpo", grpo), ("drgrpo", drgrpo), ("rloo", rloo), ("reinforce_pp", reinforce_pp)):
    ADVANTAGES.register(_name)(GroupBaseline(_fn))
ADVANTAGES.register("gae")(Critic(per_token=True))
ADVANTAGES.register("turn_value")(Critic(per_token=False))


def estimator(name: str) -> Estimator:
    """The estimator named in algo.advantage; a plug-in function is a group baseline."""
    found = ADVANTAGES.get(name)
    return found if isinstance(found, Estimator) else GroupBaseline(found)
