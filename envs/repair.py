"""The repair curriculum: faulty first attempts to seed episodes with, as SCoRe's MBPP-R task and
its "offline first attempts" option do. The policy then only writes the revisions.

Sources:
  mutations     single-point mutants of each task's reference solution (envs/mutations.py)
  PATH.jsonl    your own faulty programs, one {"task_id": ..., "program": ...} object per line

Candidates are run in the sandbox before training, in order, until a task has its faulty
programs: only programs that really fail the task's hidden tests are kept (a mutant can be
equivalent to the original), and the tasks that end up with none are reported. Correct first
attempts (`episode.seeded_correct_turns`) are the reference solutions rewritten
(envs/rewrite.py), kept only where they pass every test.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from envs.datasets import DatasetError
from envs.execution import ExecutionRequest, Executor
from envs.mutations import mutate
from envs.rewrite import rewrite
from envs.tasks import Task


class FaultyPrograms:
    """Verified faulty programs per task id; `draw` picks some for an episode group."""

    def __init__(self, programs: dict[str, list[str]], seed: int = 0):
        self.programs = {k: v for k, v in programs.items() if v}
        self.rng = random.Random(seed)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.programs

    def draw(self, task_id: str, k: int) -> list[str]:
        """k faulty programs of the task: distinct while there are enough, then repeated."""
        pool = self.programs[task_id]
        picked = self.rng.sample(pool, min(k, len(pool)))
        return [picked[i % len(picked)] for i in range(k)]


def candidates(tasks: Sequence[Task], source: str, per_task: int = 4, seed: int = 0) -> dict[str, list[str]]:
    """Unverified faulty programs per task id, from `source` (see the module docstring)."""
    if source == "mutations":
        found = {}
        for task in tasks:
            if not task.reference_solution:
                continue
            try:
                found[task.task_id] = mutate(task.reference_solution, seed, per_task * 3, task.entry_point or None)
            except SyntaxError:
                continue
        return found
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"episode.first_turns: {source!r} is neither 'mutations' nor an existing JSONL file")
    known = {t.task_id for t in tasks}
    found: dict[str, list[str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) or not isinstance(row.get("program"), str):
            raise DatasetError(f"{path}:{lineno}: expected an object with string fields 'task_id' and 'program'")
        if row["task_id"] in known:
            found.setdefault(row["task_id"], []).append(row["program"])
    return found


def load_faulty_programs(tasks: Sequence[Task], source: str, executor: Executor, per_task: int = 4,
                         time_limit_s: float = 5.0, memory_mb: int = 512, seed: int = 0) -> FaultyPrograms:
    """Candidates from `source`, kept only if they fail at least one hidden test (run in the
    sandbox): each task's first `per_task` failing candidates, in the candidates' order.

    Candidates run in rounds, a task's next ones only while it has fewer than `per_task` (one spare
    each): most mutants fail, so most tasks are done after the first round. The programs kept are
    the ones running every candidate would keep, for about half the runs."""
    by_id = {t.task_id: t for t in tasks}
    found = candidates(tasks, source, per_task, seed)
    kept: dict[str, list[str]] = {}
    tried = dict.fromkeys(found, 0)
    while True:
        pairs = []
        for task_id, programs in found.items():
            short = per_task - len(kept.get(task_id, []))
            if short > 0 and tried[task_id] < len(programs):
                pairs += [(task_id, program) for program in programs[tried[task_id]:tried[task_id] + short + 1]]
                tried[task_id] += short + 1
        if not pairs:
            return FaultyPrograms(kept, seed)
        requests = [ExecutionRequest(program, by_id[task_id].hidden_tests, by_id[task_id].entry_point, by_id[task_id].setup_code,
                                     time_limit_s, memory_mb) for task_id, program in pairs]
        for (task_id, program), result in zip(pairs, executor.run(requests)):
            if not result.all_passed and len(kept.get(task_id, [])) < per_task:
                kept.setdefault(task_id, []).append(program)


def load_correct_programs(tasks: Sequence[Task], executor: Executor, time_limit_s: float = 5.0,
                          memory_mb: int = 512) -> dict[str, str]:
    """Task id -> its reference solution rewritten (envs/rewrite.py), kept only where the rewrite
    passes every public and hidden test in the sandbox."""
    candidates = []
    for task in tasks:
        if task.reference_solution:
            try:
                candidates.append((task, rewrite(task.reference_solution, task.entry_point, task.setup_code)))
            except SyntaxError:
                continue
    requests = [ExecutionRequest(program, task.public_tests + task.hidden_tests, task.entry_point, task.setup_code,
                                 time_limit_s, memory_mb) for task, program in candidates]
    return {task.task_id: program for (task, program), result in zip(candidates, executor.run(requests)) if result.all_passed}


BENCHMARKS = {"repair_v1": Path(__file__).with_name("data") / "repair_benchmark_v1.jsonl"}


def load_benchmark(name_or_path: str, heldout_fraction: float = 0.25, split_seed: int = 0) -> list[Task]:
    """The held-out repair benchmark (docs/repair_benchmark.md) as one task per row: the row's
    task from the held-out split of its dataset, with the row's id as task id and its seeded
    first attempt, kind ("faulty" / "correct") and mutation in `metadata` (the `seeded`
    environment reads `first_attempt`)."""
    import dataclasses

    from envs.datasets import load_tasks

    path = BENCHMARKS.get(name_or_path, Path(name_or_path))
    if not path.is_file():
        raise DatasetError(f"benchmark {name_or_path!r}: no such file (known: {', '.join(BENCHMARKS)})")
    rows, splits = [], {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                rows.append((lineno, row, row["dataset"], row["task_id"], row["kind"], row["program"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{lineno}: not a benchmark row ({type(exc).__name__}: {exc})") from None
    tasks = []
    for lineno, row, dataset, task_id, kind, program in rows:
        if dataset not in splits:
            splits[dataset] = {t.task_id: t for t in load_tasks(dataset, "heldout", heldout_fraction, split_seed)}
        if task_id not in splits[dataset]:
            raise DatasetError(f"{path}:{lineno}: task {task_id!r} is not in the held-out split of {dataset!r}")
        base = splits[dataset][task_id]
        tasks.append(dataclasses.replace(base, task_id=str(row.get("id", f"{task_id}#{lineno}")), metadata={
            **base.metadata, "first_attempt": program, "kind": kind, "mutation": row.get("mutation"), "base_task_id": task_id}))
    return tasks


def as_reply(program: str) -> str:
    """The text a seeded first turn shows as the assistant's reply."""
    return f"```python\n{program.rstrip()}\n```"
