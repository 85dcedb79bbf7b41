"""Helpers shared by the sandbox tests (imported by name: tests/ is not a package)."""
import os
from pathlib import Path

from envs.execution import ExecutionRequest
from envs.sandbox.local import UID_BASE
from envs.tasks import TestCase

REPO = Path(__file__).resolve().parents[2]


def run(executor, program, tests=None, entry_point="", time_limit_s=3.0, memory_mb=256, setup_code=""):
    """One request; `tests` defaults to a single stdio test with no input and no expected output."""
    tests = tuple(tests) if tests is not None else (TestCase("stdio", "", "__never__"),)
    return executor.run([ExecutionRequest(program, tests, entry_point, setup_code, time_limit_s, memory_mb)])[0]


def stdout_of(result):
    """What a stdio program printed (the judge reports it as `got`)."""
    return result.tests[0].got


def sandbox_processes():
    """Pids of live processes running as a sandbox uid (there must be none between requests)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid >= UID_BASE:
            found.append(int(pid))
    return found
