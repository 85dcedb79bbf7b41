"""Run multi-turn episodes: generate every active episode's reply in one batch, execute the
programs, build feedback, repeat. The engine and executor are passed in, so this is plain code."""
from __future__ import annotations

from typing import Callable, Sequence

from envs.episode import ChatFormat, Episode, Turn, extract_code, feedback_message
from envs.execution import ExecutionRequest, ExecutionResult, Executor
from envs.repair import as_reply
from envs.tasks import Task
from rewards import TurnScore
from rl.config import EpisodeConfig, SandboxConfig
from rl.rollout import Sample, SamplingSpec

GenerateFn = Callable[[list[list[int]], SamplingSpec], list[list[Sample]]]


def run_episodes(
    tasks: Sequence[Task], samples_per_task: int, generate: GenerateFn, executor: Executor,
    chat: ChatFormat, tokenizer, episode_cfg: EpisodeConfig, sandbox_cfg: SandboxConfig,
    sampling: SamplingSpec, weight_version: int, max_model_len: int,
    first_turns: dict[int, list[str]] | None = None,
) -> list[Episode]:
    """`samples_per_task` episodes per task. With `episode_cfg.revisions_per_attempt` = k > 1,
    samples_per_task / k first attempts are sampled and each is continued by k episodes, which
    then share the context of their second turn (a baseline group for that turn).

    first_turns[i] (repair curriculum): the samples_per_task / k first attempts of tasks[i] are
    these faulty programs instead of samples; the policy writes only the revisions."""
    k = episode_cfg.revisions_per_attempt
    if samples_per_task % k:
        raise ValueError(f"samples_per_task={samples_per_task} is not a multiple of episode.revisions_per_attempt={k}")
    first_turns = first_turns or {}
    episodes: list[Episode] = []
    contexts: list[list[int]] = []     # each episode's full token context so far
    first_prompts = [chat.first_prompt_ids(t) for t in tasks]
    sampled = [i for i in range(len(tasks)) if i not in first_turns]
    drawn = dict(zip(sampled, generate([first_prompts[i] for i in sampled], _with_n(sampling, samples_per_task // k)))) if sampled else {}
    for i, (task, prompt) in enumerate(zip(tasks, first_prompts)):
        if i in first_turns:
            if len(first_turns[i]) != samples_per_task // k:
                raise ValueError(f"task {task.task_id!r}: {len(first_turns[i])} seeded first turns for {samples_per_task // k} attempts")
            first_attempts = [_seeded_turn(prompt, program, tokenizer) for program in first_turns[i]]
        else:
            first_attempts = [_turn(prompt, sample, tokenizer) for sample in drawn[i]]
        for attempt, first in enumerate(first_attempts):
            for j in range(k):  # the k episodes share this Turn object: it is executed once
                episodes.append(Episode(task, attempt * k + j, weight_version, turns=[first], attempt=attempt))
                contexts.append(prompt + first.response_ids)
    _execute([(e, e.turns[0]) for e in episodes if e.sample_index % k == 0], executor, sandbox_cfg)

    active = list(range(len(episodes)))
    for _ in range(1, episode_cfg.max_turns):
        next_prompts: dict[int, list[int]] = {}
        for i in active:
            e, last = episodes[i], episodes[i].turns[-1]
            if episode_cfg.stop_on_public_pass and _public_passed(last):
                continue
            text = feedback_message(episode_cfg.feedback, last.public, e.task, episode_cfg.max_feedback_chars, episode_cfg.max_failures_shown)
            prompt = chat.feedback_ids(text, last.response_ids)
            if len(contexts[i]) + len(prompt) + sampling.max_new_tokens > max_model_len:
                continue  # the next turn would not fit the context window: the episode ends here
            e.feedback.append(text)
            next_prompts[i] = prompt
        active = list(next_prompts)
        if not active:
            break
        samples = generate([contexts[i] + next_prompts[i] for i in active], _with_n(sampling, 1))
        for i, (sample,) in zip(active, samples):
            contexts[i] += next_prompts[i] + sample.token_ids
            episodes[i].turns.append(_turn(next_prompts[i], sample, tokenizer))
        _execute([(episodes[i], episodes[i].turns[-1]) for i in active], executor, sandbox_cfg)
    return episodes


def _with_n(spec: SamplingSpec, n: int) -> SamplingSpec:
    return SamplingSpec(n, spec.temperature, spec.top_p, spec.max_new_tokens, spec.seed)


def _turn(prompt_ids: list[int], sample: Sample, tokenizer) -> Turn:
    text = tokenizer.decode(sample.token_ids, skip_special_tokens=True)
    return Turn(prompt_ids, sample.token_ids, sample.logprobs, sample.finish_reason, text, extract_code(text))


def _seeded_turn(prompt_ids: list[int], program: str, tokenizer) -> Turn:
    """A first attempt the environment wrote: shown as the assistant's reply, never trained on."""
    text = as_reply(program)
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return Turn(prompt_ids, ids, [0.0] * len(ids), "seeded", text, program, seeded=True)


def _execute(pairs: list[tuple[Episode, Turn]], executor: Executor, cfg: SandboxConfig) -> None:
    """One executor batch for all turns: public and hidden tests run together, results split."""
    runnable = [(e, t) for e, t in pairs if t.code is not None]
    requests = [
        ExecutionRequest(t.code, e.task.public_tests + e.task.hidden_tests, e.task.entry_point, e.task.setup_code,
                         cfg.time_limit_s, cfg.memory_mb)
        for e, t in runnable
    ]
    for (e, t), result in zip(runnable, executor.run(requests)):
        n_public = len(e.task.public_tests)
        t.public = ExecutionResult(result.tests[:n_public], result.isolation, result.duration_s)
        t.hidden = ExecutionResult(result.tests[n_public:], result.isolation, result.duration_s)


def _public_passed(turn: Turn) -> bool:
    return turn.public is not None and turn.public.num_tests > 0 and turn.public.all_passed


def baseline_keys(episode: Episode, revisions_per_attempt: int) -> list[tuple]:
    """The baseline group of each turn (see rl/advantages.py): turn 1 shares the task's first
    prompt; turn 2 shares the first attempt when several revisions were sampled from it; other
    turns fall back to the task's episodes at that turn (their contexts all differ)."""
    task = episode.task.task_id
    keys = []
    for t in range(len(episode.turns)):
        if t == 1 and revisions_per_attempt > 1:
            keys.append((task, t, episode.attempt))
        else:
            keys.append((task, t))
    return keys


def turn_scores(episode: Episode) -> list[TurnScore]:
    scores = []
    for t in episode.turns:
        if t.code is None:
            scores.append(TurnScore(False, 0, len(episode.task.hidden_tests), 0, len(episode.task.public_tests), t.text))
        else:
            scores.append(TurnScore(True, t.hidden.num_passed, t.hidden.num_tests, t.public.num_passed, t.public.num_tests, t.text))
    return scores
