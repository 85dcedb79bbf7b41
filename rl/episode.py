"""The episode record, from rollout to loss, and the loop that produces it.

One `Episode` per sampled conversation carries everything the step needs: its turns (the exact
environment and policy token ids, the sampling logprobs, the reply text and the environment's
verdicts and feedback), then, once credit is assigned (`rl/credit.py`), its `Credit` (rewards,
advantages, KL weights). The token layout the learner trains on is derived from the turns,
append-only: the policy's tokens are never re-tokenised.

`run_episodes` drives an environment (`envs/environments.py`) with a policy: every active
episode's reply of a turn in one generation batch, every program of a turn in one sandbox batch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

from envs.chat import ChatFormat
from envs.environments import Environment, Reply, StepResult, Verdicts
from envs.tasks import Task
from rl.advantages import ENV_TURN   # turn id of tokens the environment wrote (prompt, feedback, markup, seeded replies)
from rl.rollout import Sample, SamplingSpec, derive_seed

GenerateFn = Callable[[list[list[int]], SamplingSpec], list[list[Sample]]]


@dataclass
class Turn:
    """One attempt: the environment's tokens before it, the reply, and how it fared."""

    prompt_ids: list[int]            # environment tokens shown before this reply (the whole prompt at turn 1)
    response_ids: list[int]          # exactly the tokens vLLM sampled (or the seeded reply's tokens)
    response_logprobs: list[float]   # their logprobs under the sampling policy (0 for a seeded reply)
    finish_reason: str               # "stop", "length" or "seeded"
    text: str
    verdicts: Verdicts
    feedback: str | None = None      # shown after this turn, when another turn followed
    seeded: bool = False             # written by the environment (repair), never trained on

    @property
    def code(self) -> str | None:
        return self.verdicts.code

    @property
    def correct(self) -> bool:
        return self.verdicts.correct


@dataclass(frozen=True)
class Credit:
    """What credit assignment decided for one episode, per turn."""

    rewards: tuple[float, ...]           # the task's reward (reward function, overlong penalty)
    shaped_rewards: tuple[float, ...]    # what the returns are computed from (minus the KL when it is in the reward)
    advantages: tuple[float, ...]
    kl_coefs: tuple[float, ...]          # weight of the KL term of the loss on the turn's tokens
    baseline_keys: tuple                 # the baseline group of each turn (rl/credit.py)
    trained: bool = True                 # False: left out of the loss (a group without signal)
    # PPO's critic (rl/advantages.py): token-level advantages (gae), and where the critic is read,
    # with its targets and its rollout-time values (for value clipping).
    token_advantages: tuple[float, ...] | None = None
    value_positions: tuple[int, ...] = ()
    value_targets: tuple[float, ...] = ()
    old_values: tuple[float, ...] = ()
    turn_kl: tuple[float, ...] = ()      # the KL estimate put in the reward per turn (empty: not in the reward)
    reward_extra: dict = field(default_factory=dict)   # metrics the reward function returned
    reward_error: str | None = None      # why the reward function failed (reward.on_error=skip): not trained


@dataclass(frozen=True)
class Layout:
    """The episode flattened: what the learner's forward pass sees."""

    token_ids: list[int]
    loss_mask: list[int]          # 1 exactly on tokens the policy sampled
    turn_ids: list[int]           # turn index of each policy token, ENV_TURN elsewhere
    rollout_logprobs: list[float] # sampling-time logprob of each policy token (0.0 elsewhere)


@dataclass
class Episode:
    task: Task
    index: int                    # sample index among its task's episodes this step
    attempt: int                  # which first attempt of its task this episode continues
    weight_version: int           # the policy version that sampled it
    turns: list[Turn] = field(default_factory=list)
    credit: Credit | None = None

    @functools.cached_property
    def layout(self) -> Layout:
        """Computed once, when the episode is complete (the loop only appends turns before)."""
        ids, mask, logprobs, turn_ids = [], [], [], []
        for t, turn in enumerate(self.turns):
            policy = not turn.seeded   # a seeded first attempt is the environment's text
            ids += turn.prompt_ids + turn.response_ids
            mask += [0] * len(turn.prompt_ids) + [int(policy)] * len(turn.response_ids)
            logprobs += [0.0] * len(turn.prompt_ids) + (turn.response_logprobs if policy else [0.0] * len(turn.response_ids))
            turn_ids += [ENV_TURN] * len(turn.prompt_ids) + [t if policy else ENV_TURN] * len(turn.response_ids)
        return Layout(ids, mask, turn_ids, logprobs)

    def token_advantages(self) -> list[float]:
        """All tokens of a turn share its advantage (unless token-level advantages were set);
        environment tokens get 0."""
        if self.credit.token_advantages is not None:
            return list(self.credit.token_advantages)
        return [self.credit.advantages[t] if t != ENV_TURN else 0.0 for t in self.layout.turn_ids]

    def token_kl_coefs(self) -> list[float]:
        return [self.credit.kl_coefs[t] if t != ENV_TURN else 0.0 for t in self.layout.turn_ids]

    def to_json(self) -> dict:
        """The rollout serialisation (train's rollouts/step-N.jsonl, eval's episodes.jsonl): each
        turn's tokens, text, program, verdicts and feedback; the layout; the credit, if assigned."""
        credit = self.credit
        return {
            "task_id": self.task.task_id, "index": self.index, "attempt": self.attempt,
            "weight_version": self.weight_version,
            "turns": [{"prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "text": t.text, "code": t.code,
                       "finish_reason": t.finish_reason, "seeded": t.seeded, "feedback": t.feedback,
                       "correct": t.correct, "public_passed": t.verdicts.public_passed,
                       "public_total": t.verdicts.public_total, "hidden_passed": t.verdicts.hidden_passed,
                       "hidden_total": t.verdicts.hidden_total} for t in self.turns],
            "token_ids": self.layout.token_ids, "loss_mask": self.layout.loss_mask, "turn_ids": self.layout.turn_ids,
            "rollout_logprobs": self.layout.rollout_logprobs,
            "credit": None if credit is None else {
                "rewards": credit.rewards, "shaped_rewards": credit.shaped_rewards, "advantages": credit.advantages,
                "token_advantages": credit.token_advantages, "kl_coefs": credit.kl_coefs, "trained": credit.trained,
                "reward_extra": credit.reward_extra, "reward_error": credit.reward_error},
        }


def write_episodes(path, episodes: Sequence[Episode]) -> None:
    """One JSON line per episode (`Episode.to_json`): the one rollout file format."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(e.to_json()) + "\n" for e in episodes)


def run_episodes(tasks: Sequence[Task], env: Environment, generate: GenerateFn, chat: ChatFormat, tokenizer, *,
                 samples_per_task: int, revisions: int, sampling: SamplingSpec, weight_version: int,
                 max_model_len: int) -> list[Episode]:
    """`samples_per_task` episodes per task. With `revisions` = k > 1, samples_per_task / k first
    attempts are drawn (or seeded by the environment) and each is continued by k episodes, which
    then share their first Turn (executed once) and the context of their second turn."""
    if samples_per_task % revisions:
        raise ValueError(f"samples_per_task={samples_per_task} is not a multiple of revisions={revisions}")
    attempts = samples_per_task // revisions
    openings = env.open(tasks, attempts)
    first_prompts = [chat.first_prompt_ids(o.message) for o in openings]
    sampled = [i for i, o in enumerate(openings) if o.first_replies is None]
    drawn = dict(zip(sampled, generate([first_prompts[i] for i in sampled], _with_n(sampling, attempts, 0)))) if sampled else {}

    firsts: list[tuple[Task, list[int], Turn | None, Sample | str]] = []
    for i, (task, opening) in enumerate(zip(tasks, openings)):
        if opening.first_replies is not None and len(opening.first_replies) != attempts:
            raise ValueError(f"task {task.task_id!r}: the environment seeded {len(opening.first_replies)} first attempts for {attempts}")
        firsts += [(task, first_prompts[i], reply) for reply in (opening.first_replies or drawn[i])]
    first_texts = [_text(reply, tokenizer) for _, _, reply in firsts]
    first_results = env.step([Reply(task, 0, text) for (task, _, _), text in zip(firsts, first_texts)])

    episodes: list[Episode] = []
    results: list[StepResult] = []
    contexts: list[list[int]] = []     # each episode's full token context so far
    for attempt_index, ((task, prompt, reply), text, result) in enumerate(zip(firsts, first_texts, first_results)):
        first = _turn(prompt, reply, text, result.verdicts, tokenizer)
        attempt = attempt_index % attempts
        for j in range(revisions):   # the k episodes share this Turn object: it was executed once
            episodes.append(Episode(task, attempt * revisions + j, attempt, weight_version, [first]))
            results.append(result)
            contexts.append(prompt + first.response_ids)

    active = list(range(len(episodes)))
    turn = 0
    while active:
        turn += 1   # every active episode is at this turn: they advance together
        prompts: dict[int, list[int]] = {}
        for i in active:
            if results[i].feedback is None:
                continue
            last = episodes[i].turns[-1]
            prompt = chat.feedback_ids(results[i].feedback, last.response_ids)
            if len(contexts[i]) + len(prompt) + sampling.max_new_tokens > max_model_len:
                continue  # the next turn would not fit the context window: the episode ends here
            last.feedback = results[i].feedback
            prompts[i] = prompt
        active = list(prompts)
        if not active:
            break
        samples = generate([contexts[i] + prompts[i] for i in active], _with_n(sampling, 1, turn))
        texts = [_text(s, tokenizer) for (s,) in samples]
        replies = [Reply(episodes[i].task, len(episodes[i].turns), text) for i, text in zip(active, texts)]
        for i, (sample,), text, step in zip(active, samples, texts, env.step(replies)):
            contexts[i] += prompts[i] + sample.token_ids
            episodes[i].turns.append(_turn(prompts[i], sample, text, step.verdicts, tokenizer))
            results[i] = step
    return episodes


def _with_n(spec: SamplingSpec, n: int, turn: int) -> SamplingSpec:
    """`n` samples per prompt, with the batch seed of turn `turn` (each turn's batch its own)."""
    seed = None if spec.seed is None else derive_seed(spec.seed, "turn", turn)
    return SamplingSpec(n, spec.temperature, spec.top_p, spec.max_new_tokens, seed)


def _text(reply: Sample | str, tokenizer) -> str:
    return reply if isinstance(reply, str) else tokenizer.decode(reply.token_ids, skip_special_tokens=True)


def _turn(prompt_ids: list[int], reply: Sample | str, text: str, verdicts: Verdicts, tokenizer) -> Turn:
    if isinstance(reply, str):   # a first attempt the environment wrote: shown as the assistant's reply
        ids = tokenizer.encode(reply, add_special_tokens=False) + [tokenizer.eos_token_id]
        return Turn(prompt_ids, ids, [0.0] * len(ids), "seeded", text, verdicts, seeded=True)
    return Turn(prompt_ids, reply.token_ids, reply.logprobs, reply.finish_reason, text, verdicts)
