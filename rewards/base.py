"""Calling a reward function: the three signatures it may have, a deadline, and checks on what it
returns. Whatever goes wrong is a RewardError naming the reward, the task and the reason — never a
silent zero (what the caller then does is `reward.on_error`: fail the step, or skip the episode).

Signatures (`reward.format`), and exactly what each receives from an episode of T turns:

  native    fn(turns, task, config) -> T numbers (or {"rewards": [...], <metric>: number, ...})
            turns: the episode's `Turn` records (rl/episode.py), task: the `Task`, config: the
            `RewardConfig` in force (SCoRe's stage included).
  openrlhf  reward_func(queries, prompts, labels) -> T numbers, a tensor, or
            {"rewards": ..., "scores": ..., "extra_logs": {<metric>: values}} — called once per
            episode with one entry per turn t: prompts[t] = the conversation before reply t as
            plain text (the task prompt, then each earlier reply and the feedback shown after it,
            joined by blank lines), queries[t] = prompts[t] + blank line + reply t, labels[t] =
            the ground truth (`ground_truth(task)`: JSON of the entry point and the tests).
  verl      compute_score(data_source, solution_str, ground_truth, extra_info) -> number or
            {"score": number, <metric>: number, ...} — called once per turn with data_source =
            task.source, solution_str = reply t, ground_truth = as labels above, extra_info =
            {"task_id", "turn" (0-based), "prompt" (as prompts[t]), "code", "correct",
            "public_passed", "public_total", "hidden_passed", "hidden_total"}.

Any of them may be `async def`. Extra numbers a function returns are averaged per step into
the metrics as `reward_extra/<metric>`.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from envs.registry import Registry

RewardFn = Callable[..., object]
REWARDS: Registry[RewardFn] = Registry("reward", "selfcorrect.rewards")
FORMATS = ("native", "openrlhf", "verl")


class RewardError(RuntimeError):
    pass


@dataclass(frozen=True)
class TurnRewards:
    rewards: list[float]
    extra: dict[str, float] = field(default_factory=dict)   # metrics the function returned, per episode


PARAMETERS = {"native": ("turns", "task", "config"), "openrlhf": ("queries", "prompts", "labels"),
              "verl": ("data_source", "solution_str", "ground_truth", "extra_info")}


def check_signature(fn: RewardFn, name: str, fmt: str) -> None:
    """A reward function that cannot be called the way `reward.format` calls it is a config
    error before anything starts (not a crash at the first step)."""
    try:
        inspect.signature(fn).bind(*PARAMETERS[fmt])
    except TypeError as exc:
        raise RewardError(f"reward {name!r} cannot be called as a {fmt} reward {fmt_call(fmt)}: {exc}") from None
    except ValueError:   # no signature to read (a builtin): found out at the first call
        pass


def fmt_call(fmt: str) -> str:
    return f"fn({', '.join(PARAMETERS[fmt])})"


def compute_turn_rewards(fn: RewardFn, name: str, turns: Sequence, task, config) -> TurnRewards:
    """Call a reward function of `config.format` under `config.timeout_s` and check it returns one
    finite number per turn."""
    outcome: dict = {}
    call = {"native": _native, "openrlhf": _openrlhf, "verl": _verl}[config.format]

    def run():
        try:
            outcome["value"] = call(fn, list(turns), task, config)
        except BaseException as exc:  # reported below with context
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name=f"reward-{name}")
    worker.start()
    worker.join(config.timeout_s)
    where = f"reward {name!r} ({config.format}) on task {task.task_id!r}"
    if worker.is_alive():
        raise RewardError(f"{where} did not return within reward.timeout_s={config.timeout_s:g}s")
    if "error" in outcome:
        exc = outcome["error"]
        raise RewardError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    value, extra = outcome["value"]
    try:
        rewards = [float(r) for r in value]
        extra = {str(k): float(v) for k, v in extra.items()}
    except (TypeError, ValueError):
        raise RewardError(f"{where} returned {value!r} (extra {extra!r}); expected {len(turns)} numbers") from None
    if len(rewards) != len(turns):
        raise RewardError(f"{where} returned {len(rewards)} rewards for {len(turns)} turns")
    if not all(math.isfinite(r) for r in rewards + list(extra.values())):
        raise RewardError(f"{where} returned a non-finite value: {rewards} {extra}")
    return TurnRewards(rewards, extra)


def _result(value):
    """An `async def` plug-in's coroutine is run to completion here (in the reward's own thread)."""
    return asyncio.run(value) if inspect.isawaitable(value) else value


def _native(fn, turns, task, config):
    value = _result(fn(turns, task, config))
    if isinstance(value, dict):
        return value.get("rewards"), {k: v for k, v in value.items() if k != "rewards"}
    return value, {}


def _openrlhf(fn, turns, task, config):
    prompts = conversation_prompts(turns, task)
    queries = [f"{p}\n\n{t.text}" for p, t in zip(prompts, turns)]
    value = _result(fn(queries, prompts, [ground_truth(task)] * len(turns)))
    extra = {}
    if isinstance(value, dict):
        extra = {k: _mean(v) for k, v in (value.get("extra_logs") or {}).items()}
        value = value.get("rewards")
    return _floats(value), extra


def _verl(fn, turns, task, config):
    rewards, extras = [], []
    truth = ground_truth(task)
    for t, (turn, prompt) in enumerate(zip(turns, conversation_prompts(turns, task))):
        v = turn.verdicts
        info = {"task_id": task.task_id, "turn": t, "prompt": prompt, "code": v.code, "correct": v.correct,
                "public_passed": v.public_passed, "public_total": v.public_total,
                "hidden_passed": v.hidden_passed, "hidden_total": v.hidden_total}
        value = _result(fn(task.source, turn.text, truth, info))
        if isinstance(value, dict):
            extras.append({k: x for k, x in value.items() if k != "score"})
            value = value.get("score")
        rewards.append(value)
    keys = {k for e in extras for k in e}
    return rewards, {k: _mean([e[k] for e in extras if k in e]) for k in keys}


def conversation_prompts(turns: Sequence, task) -> list[str]:
    """prompts[t]: the conversation before reply t as plain text (see the module docstring)."""
    prompts, text = [], task.prompt
    for turn in turns:
        prompts.append(text)
        text = "\n\n".join([text, turn.text] + ([turn.feedback] if turn.feedback else []))
    return prompts


def ground_truth(task) -> str:
    """What a foreign reward function gets as the label: the entry point and the tests, as JSON."""
    tests = [{"kind": t.kind, "input": t.input, "expected": t.expected} for t in task.hidden_tests]
    public = [{"kind": t.kind, "input": t.input, "expected": t.expected} for t in task.public_tests]
    return json.dumps({"task_id": task.task_id, "entry_point": task.entry_point, "hidden_tests": tests, "public_tests": public})


def _floats(value) -> list:
    if hasattr(value, "tolist"):   # a tensor or an array, as OpenRLHF's functions return
        value = value.tolist()
    return value if isinstance(value, (list, tuple)) else [value]


def _mean(values) -> float:
    values = _floats(values)
    return sum(float(v) for v in values) / max(len(values), 1)
