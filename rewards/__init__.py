"""Turn-level rewards: each function maps an episode's turns to one reward per turn.

Built-ins implement the published recipes (formulas in docs/algorithms.md). A user plug-in is any
function with the same signature, named in config as 'package.module:function' or
'path/to/file.py:function':

    def my_reward(turns: list[Turn], task: Task, config: RewardConfig) -> list[float]

Each turn (rl/episode.py:Turn) has `text` (the reply), `code` (the extracted program or None),
`correct`, `seeded`, `finish_reason`, `response_ids` and `verdicts` (envs/environments.py:
`has_code`, `public_passed`, `public_total`, `hidden_passed`, `hidden_total`, `hidden_fraction`
and the per-test results `public` / `hidden`).
"""
from rewards.base import REWARDS, RewardError, compute_turn_rewards
from rewards import builtin  # noqa: F401  (registers the built-in rewards)

__all__ = ["REWARDS", "RewardError", "compute_turn_rewards"]
