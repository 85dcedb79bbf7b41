"""Build envs/data/repair_benchmark_v1.jsonl: a fixed, held-out self-correction benchmark.

    python bench/build_repair_benchmark.py            # (re)write the file and print a summary
    python bench/build_repair_benchmark.py --check    # rebuild in memory; exit 1 if the file differs

Every row is a seeded first attempt at a held-out task, to be revised by the model:
  faulty   a single-point mutant of the task's (rewritten) reference solution that FAILS the
           task's hidden tests in the sandbox; "mutation" names its kind (envs/mutations.py)
  correct  the reference solution, rewritten so it is not verbatim (docstrings and comments
           dropped, local variables renamed, through an AST round trip), that PASSES every test
A model that self-corrects well fixes the first kind and keeps the second. docs/repair_benchmark.md
has the format, the counts and the rules (the file never changes; a new version is a new file).
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.datasets import load_tasks  # noqa: E402
from envs.execution import ExecutionRequest, ExecutionResult, Verdict  # noqa: E402
from envs.mutations import mutants  # noqa: E402
from envs.rewrite import rewrite  # noqa: E402
from envs.sandbox import make_executor  # noqa: E402
from envs.tasks import Task  # noqa: E402

VERSION = 1
OUTPUT = Path(__file__).resolve().parents[1] / "envs" / "data" / f"repair_benchmark_v{VERSION}.jsonl"
DATASETS = ("humaneval", "starter")     # leetcode: no reference solutions, nothing to mutate or keep
HELDOUT_FRACTION, SPLIT_SEED = 0.25, 0  # the split training uses by default: never trained on
SEED = 0
FAULTY_PER_TASK = 6                     # faulty rows per task at most, each of a distinct mutation kind
CANDIDATES_PER_KIND = 3                 # mutants of each kind tried per task, in seeded order
TIME_LIMIT_S, MEMORY_MB = 5.0, 512
ROUNDS = 2                              # every verdict must agree in each of ROUNDS runs
# A verdict that depends on the machine's speed or load is not a fixed property of the program
_UNSTABLE = (Verdict.TIMEOUT, Verdict.MEMORY, Verdict.OUTPUT_LIMIT, Verdict.SANDBOX)


# ---------------------------------------------------------------------------------------------
# candidates, verification, rows


def request(task: Task, program: str) -> ExecutionRequest:
    """How a benchmark program is judged: the task's hidden then public tests, as in training."""
    return ExecutionRequest(program, task.hidden_tests + task.public_tests, task.entry_point, task.setup_code,
                            TIME_LIMIT_S, MEMORY_MB)


def _candidates(task: Task, correct: str) -> dict[str, list]:
    """Up to CANDIDATES_PER_KIND mutants of each kind, in an order fixed by (SEED, task, kind)."""
    by_kind: dict[str, list] = collections.defaultdict(list)
    for mutant in mutants(correct, task.entry_point, extra=True):
        by_kind[mutant.operator].append(mutant)
    chosen = {}
    for kind in sorted(by_kind):
        pool = list(by_kind[kind])
        random.Random(f"{SEED}:{task.task_id}:{kind}").shuffle(pool)   # str seeds are stable across runs
        chosen[kind] = pool[:CANDIDATES_PER_KIND]
    return chosen


def _outcome(task: Task, results: list[ExecutionResult]) -> str:
    """'pass', 'fail' (a hidden test fails) or 'unstable' (a limit or sandbox verdict, or rounds disagree)."""
    signatures = {tuple(t.verdict for t in r.tests) for r in results}
    if len(signatures) != 1:
        return "unstable"
    (verdicts,) = signatures
    if any(v in _UNSTABLE for v in verdicts) or len(verdicts) != len(task.hidden_tests) + len(task.public_tests):
        return "unstable"
    if all(v is Verdict.PASS for v in verdicts):
        return "pass"
    hidden = verdicts[: len(task.hidden_tests)]
    return "fail" if any(v is not Verdict.PASS for v in hidden) else "public_only"


def build(workers: int = 2, log=print) -> list[dict]:
    """Every row of the benchmark, sorted; runs each candidate ROUNDS times in the sandbox."""
    plan = []   # (dataset, task, kind, mutation, description, program)
    for dataset in DATASETS:
        for task in load_tasks(dataset, "heldout", HELDOUT_FRACTION, SPLIT_SEED, None):
            if not task.reference_solution:
                continue
            correct = rewrite(task.reference_solution, task.entry_point, task.setup_code)
            plan.append((dataset, task, "correct", None, None, correct))
            for kind, found in _candidates(task, correct).items():
                plan += [(dataset, task, "faulty", kind, f"{m.description} (line {m.line})", m.source + "\n") for m in found]
    executor = make_executor(workers=workers)
    try:
        log(f"sandbox {executor.isolation}: {len(plan)} programs x {ROUNDS} rounds")
        rounds = [executor.run([request(task, program) for _, task, *_, program in plan]) for _ in range(ROUNDS)]
    finally:
        executor.close()
    outcomes = [_outcome(entry[1], [r[i] for r in rounds]) for i, entry in enumerate(plan)]
    rows, dropped = [], collections.Counter()
    verified: dict[str, dict[str, tuple]] = collections.defaultdict(dict)
    for (dataset, task, kind, mutation, description, program), outcome in zip(plan, outcomes):
        if kind == "correct":
            if outcome != "pass":
                raise RuntimeError(f"{task.task_id}: the rewritten reference solution does not pass ({outcome})")
            rows.append(_row(dataset, task, "correct", None, None, program))
        elif outcome == "fail":
            verified[task.task_id].setdefault(mutation, (dataset, task, description, program))
        else:
            dropped["equivalent (passes)" if outcome == "pass" else outcome] += 1
    for task_id, kinds in verified.items():
        order = sorted(kinds)
        random.Random(f"{SEED}:{task_id}:kinds").shuffle(order)
        for mutation in order[:FAULTY_PER_TASK]:
            dataset, task, description, program = kinds[mutation]
            rows.append(_row(dataset, task, "faulty", mutation, description, program))
    log(f"candidates dropped: {dict(sorted(dropped.items()))}")
    kinds_per_task = collections.Counter(len(k) for k in verified.values())
    kinds_per_task[0] = len({entry[1].task_id for entry in plan}) - len(verified)
    log(f"tasks by number of mutation kinds with a verified faulty program: {dict(sorted(kinds_per_task.items()))}")
    return sorted(rows, key=_sort_key)


def _row(dataset: str, task: Task, kind: str, mutation: str | None, description: str | None, program: str) -> dict:
    return {
        "id": f"{task.task_id}:{kind}" + (f":{mutation}" if mutation else ""),
        "task_id": task.task_id, "dataset": dataset, "kind": kind, "mutation": mutation,
        "description": description, "program": program, "version": VERSION,
    }


def _sort_key(row: dict):
    natural = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", row["task_id"])]
    return (DATASETS.index(row["dataset"]), natural, row["kind"] != "correct", row["mutation"] or "")


def dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def summary(rows: list[dict]) -> str:
    lines = [f"{len(rows)} rows, {len({r['task_id'] for r in rows})} tasks"]
    for dataset in DATASETS:
        mine = [r for r in rows if r["dataset"] == dataset]
        kinds = collections.Counter(r["kind"] for r in mine)
        mutations = collections.Counter(r["mutation"] for r in mine if r["kind"] == "faulty")
        lines.append(f"  {dataset}: {len(mine)} rows, {len({r['task_id'] for r in mine})} tasks; "
                     + ", ".join(f"{k} {kinds[k]}" for k in ("correct", "faulty")))
        lines.append("    faulty by mutation: " + ", ".join(f"{m} {n}" for m, n in sorted(mutations.items())))
    total = collections.Counter(r["mutation"] for r in rows if r["kind"] == "faulty")
    lines.append("  all faulty by mutation: " + ", ".join(f"{m} {n}" for m, n in sorted(total.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--workers", type=int, default=2, help="sandbox slots (default 2)")
    parser.add_argument("--check", action="store_true", help="rebuild in memory and compare with --output")
    args = parser.parse_args(argv)
    text = dumps(build(args.workers, log=lambda m: print(m, file=sys.stderr)))
    print(summary([json.loads(line) for line in text.splitlines()]))
    if args.check:
        same = args.output.is_file() and args.output.read_text(encoding="utf-8") == text
        print(f"{args.output}: {'identical' if same else 'DIFFERS from a fresh build'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
