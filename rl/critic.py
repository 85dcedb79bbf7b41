"""PPO's critic-based advantages: generalised advantage estimation over tokens (`gae`) or over
turns (`turn_value`, RLEF's turn-level value function). Pure functions over lists.

A trajectory's decision points ("steps") and where the critic is read:
  gae          every policy token is a step; its value is read at the position before it (the
               state the token was sampled in); the turn's reward arrives at its last token.
  turn_value   every turn is a step; its value is read at the last token before the reply (the
               end of the prompt / feedback); all tokens of the turn share its advantage.
Discount: gamma between turns, 1 between tokens of the same turn.
"""
from __future__ import annotations

from typing import Sequence

from rl.advantages import mean, population_std
from rl.trajectory import ENV_TURN

CRITIC_ESTIMATORS = ("gae", "turn_value")


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
