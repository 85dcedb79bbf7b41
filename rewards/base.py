from __future__ import annotations

import math
import threading
from typing import Callable, Sequence

from envs.registry import Registry

RewardFn = Callable[..., Sequence[float]]
REWARDS: Registry[RewardFn] = Registry("reward")


class RewardError(RuntimeError):
    pass


def compute_turn_rewards(fn: RewardFn, name: str, turns: Sequence, task, config) -> list[float]:
    """Call a reward function under a deadline and check what it returns.

    A plug-in that raises, hangs, or returns the wrong shape stops the run with the task and the
    reason, instead of becoming a silent zero in the advantages.
    """
    outcome: dict = {}

    def call():
        try:
            outcome["value"] = fn(list(turns), task, config)
        except BaseException as exc:  # reported below with context
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True, name=f"reward-{name}")
    worker.start()
    worker.join(config.timeout_s)
    where = f"reward {name!r} on task {task.task_id!r}"
    if worker.is_alive():
        raise RewardError(f"{where} did not return within reward.timeout_s={config.timeout_s:g}s")
    if "error" in outcome:
        exc = outcome["error"]
        raise RewardError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    value = outcome["value"]
    try:
        rewards = [float(r) for r in value]
    except (TypeError, ValueError):
        raise RewardError(f"{where} returned {value!r}; expected a list of {len(turns)} numbers") from None
    if len(rewards) != len(turns):
        raise RewardError(f"{where} returned {len(rewards)} rewards for {len(turns)} turns")
    if not all(math.isfinite(r) for r in rewards):
        raise RewardError(f"{where} returned a non-finite reward: {rewards}")
    return rewards
