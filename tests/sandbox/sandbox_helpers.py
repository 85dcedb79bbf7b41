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
    """Pids of live processes running as a sandbox uid that are ours: descendants of this test
    process, or orphans adopted by the host's init (what an escaped daemon would be).

    Other sandboxes on the machine (another run of these tests) are not counted."""
    parents, uids = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        parents[int(pid)] = int(fields["PPid"])
        uids[int(pid)] = int(fields["Uid"].split()[0])

    def ours(pid):
        seen = set()
        while pid not in (0, 1) and pid not in seen:
            if pid == os.getpid():
                return True
            seen.add(pid)
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, uid in uids.items() if uid >= UID_BASE and (parents.get(pid) == 1 or ours(pid))]
