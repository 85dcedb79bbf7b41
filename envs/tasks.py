"""Tasks: a prompt, an entry point, public tests (shown as feedback) and hidden tests (reward, eval).

Everything here is plain data so it can cross process and Ray boundaries unchanged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

TestKind = Literal["call", "assert", "stdio"]


@dataclass(frozen=True)
class TestCase:
    """One unit test.

    kind="call":   `input` is a Python expression calling the entry point ("add(1, 2)") and
                   `expected` a Python expression for the value it must equal ("3").
    kind="assert": `input` is Python source with assertions (for tests that are not one call,
                   e.g. HumanEval's check bodies); `expected` is unused.
    kind="stdio":  `input` is the program's stdin and `expected` its expected stdout
                   (compared after stripping trailing whitespace on each line).
    """

    kind: TestKind
    input: str
    expected: str = ""

    def describe(self) -> str:
        """Short human-readable form used in feedback and error messages."""
        if self.kind == "call":
            return f"{self.input} == {self.expected}"
        if self.kind == "stdio":
            return f"stdin={self.input!r} expected stdout={self.expected!r}"
        return self.input


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str                          # problem statement shown to the policy
    entry_point: str                     # function name; "" for stdio programs
    public_tests: tuple[TestCase, ...]   # may be shown in feedback
    hidden_tests: tuple[TestCase, ...]   # decide reward and accuracy; never shown
    setup_code: str = ""                 # prepended to the program before tests run (imports, helpers)
    reference_solution: str = ""         # a known-good program, when the dataset has one
    source: str = ""                     # dataset name, e.g. "starter", "humaneval"
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


class TaskSampler:
    """Seeded passes over the training tasks in shuffled order; its position is a state_dict, so a
    resumed run draws the tasks the interrupted one would have drawn next."""

    def __init__(self, tasks, seed: int):
        self.tasks, self.rng = list(tasks), random.Random(seed)
        self.queue: list[int] = []   # indices into tasks of the current pass, drawn from the end

    def next(self, k: int):
        batch = []
        while len(batch) < k:
            if not self.queue:
                self.queue = self.rng.sample(range(len(self.tasks)), len(self.tasks))
            batch.append(self.tasks[self.queue.pop()])
        return batch

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "queue": list(self.queue), "task_ids": [t.task_id for t in self.tasks]}

    def load_state_dict(self, state: dict) -> None:
        if state["task_ids"] != [t.task_id for t in self.tasks]:
            changed = sorted(set(state["task_ids"]) ^ {t.task_id for t in self.tasks})
            raise ValueError(f"the training tasks are not those of the checkpoint (differing ids: {changed[:5]}, "
                             f"{len(state['task_ids'])} then, {len(self.tasks)} now)")
        self.rng.setstate(state["rng"])
        self.queue = list(state["queue"])
