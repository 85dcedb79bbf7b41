"""Running programs against tests: the small interface every executor implements.

An executor takes a batch of `ExecutionRequest`s and returns one `ExecutionResult` per request,
in order, with a verdict per test. Executors never raise for anything the *program* does
(crash, hang, flood): that is a verdict. A failure of the sandbox machinery on one program is
that program's `Verdict.SANDBOX`, counted and logged, so one program cannot lose a batch; an
executor raises only when it is broken as a whole, so a bad sandbox is loud instead of a silent
zero reward.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from envs.tasks import TestCase


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"                  # ran, wrong answer / assertion failed
    ERROR = "error"                # raised, or the program did not load
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT_LIMIT = "output_limit"
    SANDBOX = "sandbox_error"      # the sandbox machinery failed on this program (not the program's fault)


@dataclass(frozen=True)
class ExecutionRequest:
    program: str
    tests: tuple[TestCase, ...]
    entry_point: str = ""
    setup_code: str = ""
    time_limit_s: float = 5.0      # wall time for the whole request
    memory_mb: int = 512


@dataclass(frozen=True)
class TestResult:
    verdict: Verdict
    message: str = ""              # assertion message, traceback tail or limit that was hit
    got: str = ""                  # repr of the value / stdout the program produced (truncated)


@dataclass(frozen=True)
class ExecutionResult:
    tests: tuple[TestResult, ...]
    isolation: str = ""            # which isolation level produced this result
    duration_s: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_passed(self) -> int:
        return sum(t.verdict is Verdict.PASS for t in self.tests)

    @property
    def num_tests(self) -> int:
        return len(self.tests)

    @property
    def all_passed(self) -> bool:
        return bool(self.tests) and self.num_passed == self.num_tests


class Executor(Protocol):
    isolation: str                 # the level in force, e.g. "namespaces"
    info: dict                     # the level, slots and limits in force (for logs and run metadata)

    def run(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]: ...

    def close(self) -> None: ...
