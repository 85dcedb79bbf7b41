"""Turn-level rewards: each function maps an episode's per-turn test outcomes to one reward per turn.

Built-ins implement the published recipes (formulas in docs/algorithms.md). A user plug-in is any
function with the same signature, named in config as 'package.module:function' or
'path/to/file.py:function':

    def my_reward(turns: list[TurnScore], task: Task, config: RewardConfig) -> list[float]
"""
from rewards.base import REWARDS, RewardError, TurnScore, compute_turn_rewards
from rewards import builtin  # noqa: F401  (registers the built-in rewards)

__all__ = ["REWARDS", "RewardError", "TurnScore", "compute_turn_rewards"]
