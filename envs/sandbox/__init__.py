"""The code sandbox: isolated, pre-forked execution of untrusted programs against tests.

    executor = make_executor()                 # the strongest level this machine allows
    results = executor.run(requests)           # list[ExecutionResult], in order
    executor.info                              # the level and the limits in force
    executor.close()

Levels, strongest first (docs/sandbox.md has what each one enforces):
  namespaces  pre-forked server; per task fresh mount/pid/net/ipc/uts namespaces, read-only
              chroot, private tmpfs, own uid, cgroups, rlimits. Needs root.
  bubblewrap  one `bwrap` sandbox per request; no root needed; no per-task uid, no cgroups.
  rlimits     one process per request with rlimits (and its own uid when root). NOT isolated:
              it can read the host's files and reach the network.
  none        the judge only, with a wall-clock limit.
"auto" picks the first that works here. rlimits and none run model code without isolation and
are refused unless `allow_unisolated=True`.
"""
from __future__ import annotations

import logging
import os
import shutil

from envs.execution import ExecutionRequest, Executor
from envs.sandbox.local import LocalExecutor, SandboxOptions
from envs.tasks import TestCase

log = logging.getLogger(__name__)

LEVELS = ("namespaces", "bubblewrap", "rlimits", "none")
ISOLATED = ("namespaces", "bubblewrap")

__all__ = ["LEVELS", "ISOLATED", "SandboxOptions", "SandboxUnavailable", "make_executor"]


class SandboxUnavailable(RuntimeError):
    """No level allowed by the configuration works on this machine."""


# A request every level must judge right before it is used: a stdio program and a function.
_CANARY = ExecutionRequest(
    "import sys\ndef double(x):\n    return 2 * x\nif __name__ == '__main__':\n    print(int(sys.stdin.read()) * 3)\n",
    (TestCase("stdio", "7", "21"), TestCase("call", "double(4)", "8")), "double", time_limit_s=10.0,
)


def make_executor(level: str = "auto", allow_unisolated: bool = False, workers: int = 0,
                  backend: str = "local", options: SandboxOptions | None = None, **pool_options) -> Executor:
    """An executor at `level` ("auto" or one of LEVELS) with `workers` parallel slots.

    workers: slots per machine (0: one per CPU of this machine, or of each node with the Ray pool).
    backend: "local" runs here; "ray" spreads over every node through a pool of Ray actors
             (needs ray.init() first; `pool_options` go to RayExecutorPool).
    Raises SandboxUnavailable when nothing allowed works, ValueError for a bad argument.
    """
    options = options or SandboxOptions()
    if level != "auto" and level not in LEVELS:
        raise ValueError(f"sandbox level {level!r}: expected auto or one of {', '.join(LEVELS)}")
    if backend == "ray":
        from envs.sandbox.pool import RayExecutorPool
        return RayExecutorPool(level, allow_unisolated, workers, options, **pool_options)
    if backend != "local":
        raise ValueError(f"sandbox backend {backend!r}: expected local or ray")
    if pool_options:
        raise ValueError(f"options {sorted(pool_options)} apply to the ray backend only")
    return local_executor(level, allow_unisolated, workers or os.cpu_count() or 1, options)


def local_executor(level: str, allow_unisolated: bool, workers: int, options: SandboxOptions) -> LocalExecutor:
    candidates = LEVELS if level == "auto" else (level,)
    reasons = []
    for candidate in candidates:
        if candidate not in ISOLATED and not allow_unisolated:
            reasons.append(f"{candidate}: runs model code without isolation; set allow_unisolated to permit it")
            continue
        reason = _unusable(candidate)
        if reason is None:
            try:
                executor = LocalExecutor(candidate, workers, options)
            except (OSError, RuntimeError) as exc:
                reason = str(exc)
            else:
                reason = _canary_failure(executor)
                if reason is None:
                    log.log(logging.INFO if candidate in ISOLATED else logging.WARNING,
                            "sandbox level %s: %s", candidate, executor.info)
                    return executor
                executor.close()
        reasons.append(f"{candidate}: {reason}")
        if level == "auto":
            log.info("sandbox level %s unavailable: %s", candidate, reason)
    raise SandboxUnavailable("no usable sandbox level:\n  " + "\n  ".join(reasons))


def _unusable(level: str) -> str | None:
    if level == "namespaces" and os.geteuid() != 0:
        return "needs root (it creates namespaces, cgroups and per-task uids)"
    if level == "bubblewrap" and shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    return None


def _canary_failure(executor: LocalExecutor) -> str | None:
    try:
        (result,) = executor.run([_CANARY])
    except RuntimeError as exc:
        return f"canary request failed: {exc}"
    if not result.all_passed:
        return "canary request not judged right: " + "; ".join(f"{t.verdict.value} {t.message}" for t in result.tests)
    return None
