"""Credit assignment: episodes -> rewards -> shaping -> advantages, as pure functions over the
episode records (`rl/episode.py`). Nothing here runs a model: the learner's passes it needs (the
reference's token logprobs when the KL goes in the reward, the critic's values for PPO) are asked
for once by the caller (`passes_needed`) and handed in.

    reference, values = passes_needed(cfg, estimator)
    credited = assign_credit(cfg, step, episodes, reward_fn, estimator, reference_logprobs, values)

The returned episodes are new records with `credit` set; the input is left as it was.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from rewards import RewardError, compute_turn_rewards
from rl.advantages import ENV_TURN, Estimator, uniform_groups
from rl.config import AlgoConfig, Config, RewardConfig
from rl.episode import Credit, Episode


@dataclass(frozen=True)
class Stage:
    """What is in force at one step: SCoRe switches stages; every other recipe has one."""

    reward: RewardConfig
    first_turn_kl: float
    gamma: float


def schedule(cfg: Config, step: int) -> Stage:
    """SCoRe trains stage I up to reward.score_switch_step: only the last turn is rewarded and
    every turn's return is that reward (gamma 1: the objective is r(y2) - beta2 KL on turn 1);
    then stage II: every turn its own reward plus the bonus, algo.gamma (0 in the recipe), beta1
    everywhere."""
    if cfg.reward.name != "score":
        return Stage(cfg.reward, cfg.algo.kl_coef_first_turn, cfg.algo.gamma)
    stage = cfg.reward.score_stage
    if cfg.reward.score_switch_step is not None:
        stage = 1 if step <= cfg.reward.score_switch_step else 2
    if stage == 1:
        return Stage(dataclasses.replace(cfg.reward, score_stage=1), cfg.algo.kl_coef_first_turn, 1.0)
    return Stage(dataclasses.replace(cfg.reward, score_stage=2), cfg.algo.kl_coef, cfg.algo.gamma)


def passes_needed(algo: AlgoConfig, estimator: Estimator) -> tuple[bool, bool]:
    """(reference logprobs, critic values): the learner passes credit assignment reads. The
    reference only when the KL goes in the reward with a non-zero weight."""
    kl_in_reward = algo.kl_in_reward and (algo.kl_coef > 0 or algo.kl_coef_first_turn > 0)
    return kl_in_reward, estimator.needs_critic


def assign_credit(cfg: Config, step: int, episodes: Sequence[Episode], reward_fn: Callable, estimator: Estimator,
                  reference_logprobs: Sequence[Sequence[float]] | None = None,
                  values: Sequence[Sequence[float]] | None = None) -> list[Episode]:
    """The episodes with their Credit: task rewards per turn (reward function, overlong penalty),
    KL weights (or the KL in the reward), baseline keys, the uniform-group filter, advantages."""
    stage = schedule(cfg, step)
    scored = [task_rewards(cfg, stage.reward, reward_fn, e) for e in episodes]
    rewards = [overlong_shaped(cfg, e, s.rewards) for e, s in zip(episodes, scored)]
    # An episode whose reward failed (skipped) is its own group: it shifts no one's baseline.
    keys = [baseline_keys(e, cfg.episode.revisions_per_attempt) if s.error is None
            else [("reward_error", i, t) for t in range(len(e.turns))] for i, (e, s) in enumerate(zip(episodes, scored))]
    failed = {k[0] for k, s in zip(keys, scored) if s.error is not None}
    # Decided on the task rewards: a KL penalty in the reward would make every group differ.
    uniform = uniform_groups(rewards, [k[0] for k in keys]) if cfg.algo.filter_uniform_groups else set()
    uniform |= failed
    coefs = [[stage.first_turn_kl if t == 0 else cfg.algo.kl_coef for t in range(len(r))] for r in rewards]
    shaped, kls = rewards, [()] * len(episodes)
    if reference_logprobs is not None:   # the KL goes in the reward, and so not in the loss
        kls = [tuple(turn_kl(e, ref)) for e, ref in zip(episodes, reference_logprobs)]
        shaped = [with_kl_penalty(r, k, c) for r, k, c in zip(rewards, kls, coefs)]
        coefs = [[0.0] * len(c) for c in coefs]
    elif cfg.algo.kl_in_reward:          # weights 0: the penalty is 0 and the loss has no KL either
        coefs = [[0.0] * len(c) for c in coefs]
    advantages = estimator(shaped, keys, [e.layout.turn_ids for e in episodes], values, stage.gamma, cfg.algo.lam)
    return [dataclasses.replace(e, credit=Credit(
        tuple(r), tuple(s), tuple(a.turns), tuple(c), tuple(k), k[0] not in uniform,
        None if a.tokens is None else tuple(a.tokens), tuple(a.value_positions), tuple(a.value_targets), tuple(a.old_values),
        kl, scores.extra, scores.error))
        for e, r, s, c, k, a, kl, scores in zip(episodes, rewards, shaped, coefs, keys, advantages, kls, scored)]


@dataclass(frozen=True)
class Scored:
    rewards: list[float]
    extra: dict
    error: str | None = None


def task_rewards(cfg: Config, reward_cfg: RewardConfig, reward_fn: Callable, episode: Episode) -> Scored:
    """The reward function's rewards for one episode; with reward.on_error=skip a failure gives
    zeros and the reason (the episode is then left out of the step), otherwise it is raised."""
    try:
        result = compute_turn_rewards(reward_fn, cfg.reward.name, episode.turns, episode.task, reward_cfg)
    except RewardError as exc:
        if cfg.reward.on_error == "fail":
            raise
        return Scored([0.0] * len(episode.turns), {}, str(exc))
    return Scored(result.rewards, result.extra)


def baseline_keys(episode: Episode, revisions_per_attempt: int) -> list[Hashable]:
    """The baseline group of each turn: turn 1 shares the task's first prompt; turn 2 shares the
    first attempt when several revisions were sampled from it; other turns fall back to the task's
    episodes at that turn (their contexts all differ)."""
    task = episode.task.task_id
    return [(task, t, episode.attempt) if t == 1 and revisions_per_attempt > 1 else (task, t)
            for t in range(len(episode.turns))]


def overlong_shaped(cfg: Config, episode: Episode, rewards: list[float]) -> list[float]:
    if cfg.reward.overlong_buffer is None:
        return rewards
    return [r if turn.seeded else r + cfg.reward.overlong_penalty * overlong_penalty(len(turn.response_ids), cfg.rollout.max_new_tokens, cfg.reward.overlong_buffer)
            for r, turn in zip(rewards, episode.turns)]


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment for a reply of `length` tokens with a budget of
    `max_length`: 0 up to max_length - buffer, then falling linearly to -1 at max_length
    (a reply cut off by the budget gets -1)."""
    if length <= max_length - buffer:
        return 0.0
    return max(-1.0, (max_length - buffer - length) / buffer)


def turn_kl(episode: Episode, reference_logprobs: Sequence[float]) -> list[float]:
    """Per turn, the mean over its policy tokens of log pi_rollout - log pi_ref: the KL estimate
    RLEF and CoCoS put in the reward."""
    layout = episode.layout
    sums, counts = [0.0] * len(episode.turns), [0] * len(episode.turns)
    for turn, rollout_lp, ref_lp in zip(layout.turn_ids, layout.rollout_logprobs, reference_logprobs):
        if turn != ENV_TURN:
            sums[turn] += rollout_lp - ref_lp
            counts[turn] += 1
    return [s / max(c, 1) for s, c in zip(sums, counts)]


def with_kl_penalty(turn_rewards: Sequence[float], turn_kl: Sequence[float], coefs: Sequence[float]) -> list[float]:
    """r_t - beta_t * KL_t: the KL to the reference as a per-turn reward penalty (RLEF, CoCoS)."""
    return [r - c * k for r, c, k in zip(turn_rewards, coefs, turn_kl)]
