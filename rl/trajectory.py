"""Trajectories: an episode flattened into the token-level arrays the learner trains on."""
from __future__ import annotations

from dataclasses import dataclass, field

from envs.episode import Episode

ENV_TURN = -1   # turn id of tokens the environment wrote (prompt, feedback, chat markup)


@dataclass
class Trajectory:
    task_id: str
    group: str                    # episodes sampled from the same first prompt (the GRPO group)
    token_ids: list[int]
    loss_mask: list[int]          # 1 exactly on tokens the policy sampled
    rollout_logprobs: list[float] # sampling-time logprob of each policy token (0.0 elsewhere)
    turn_ids: list[int]           # turn index of each policy token, ENV_TURN elsewhere
    turn_rewards: list[float]
    weight_version: int
    turn_advantages: list[float] = field(default_factory=list)
    turn_kl_coefs: list[float] = field(default_factory=list)   # weight of the KL loss term per turn
    trained: bool = True          # False: left out of the loss (e.g. a group with no signal)
    # PPO with a critic (rl/critic.py): per-token advantages (token-level GAE), and where the
    # critic is read with its targets and its values at rollout time (for value clipping).
    per_token_advantages: list[float] | None = None
    value_positions: list[int] = field(default_factory=list)
    value_targets: list[float] = field(default_factory=list)
    old_values: list[float] = field(default_factory=list)

    @property
    def num_turns(self) -> int:
        return len(self.turn_rewards)

    def token_advantages(self) -> list[float]:
        """All tokens of a turn share that turn's advantage (unless token-level advantages were
        set); environment tokens get 0."""
        if self.per_token_advantages is not None:
            return list(self.per_token_advantages)
        return [self.turn_advantages[t] if t != ENV_TURN else 0.0 for t in self.turn_ids]

    def token_kl_coefs(self) -> list[float]:
        return [self.turn_kl_coefs[t] if t != ENV_TURN else 0.0 for t in self.turn_ids]


def to_trajectory(episode: Episode, turn_rewards: list[float], group: str) -> Trajectory:
    if len(turn_rewards) != len(episode.turns):
        raise ValueError(f"{len(turn_rewards)} rewards for {len(episode.turns)} turns")
    ids, mask, logprobs, turn_ids = [], [], [], []
    for t, turn in enumerate(episode.turns):
        ids += turn.prompt_ids
        mask += [0] * len(turn.prompt_ids)
        logprobs += [0.0] * len(turn.prompt_ids)
        turn_ids += [ENV_TURN] * len(turn.prompt_ids)
        ids += turn.response_ids
        policy = 0 if turn.seeded else 1   # a seeded first attempt is the environment's text
        mask += [policy] * len(turn.response_ids)
        logprobs += turn.response_logprobs if policy else [0.0] * len(turn.response_ids)
        turn_ids += [t if policy else ENV_TURN] * len(turn.response_ids)
    return Trajectory(episode.task.task_id, group, ids, mask, logprobs, turn_ids,
                      list(turn_rewards), episode.weight_version)
