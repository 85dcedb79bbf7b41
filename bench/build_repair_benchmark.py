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
import ast
import builtins
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
# the rewrite of a reference solution

_RENAMES = {
    "i": "idx", "j": "jdx", "k": "kdx", "n": "num", "m": "size", "x": "val", "y": "other", "c": "ch",
    "s": "text", "l": "items", "d": "table", "a": "first", "b": "second", "res": "out", "result": "out",
    "ans": "out", "ret": "out", "count": "counter", "total": "acc", "lst": "seq", "arr": "seq",
}


def rewrite(source: str, entry_point: str, setup_code: str = "") -> str:
    """The program with docstrings dropped and the entry point's local variables renamed.

    Only names bound inside the entry point (assignments, loop and comprehension targets, nested
    functions and their parameters, `except ... as`) are renamed, every occurrence within it to
    one fresh name, so the program means the same: not its parameters (tests may pass them by
    keyword), nor names that are also module-level, builtins, keyword arguments, imports or match
    captures. Comments disappear with the AST round trip. A program that this leaves the same up
    to formatting (a one-line function without locals or docstring) gets its parameters renamed
    instead; the sandbox check in `build` confirms the tests still pass.
    """
    original = ast.dump(ast.parse(source))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.body and _is_docstring(node.body[0]):
                node.body = node.body[1:] or [ast.Pass()]
    function = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == entry_point), None)
    if function is not None:
        mapping = _local_renames(tree, function, setup_code)
        if not mapping and ast.dump(tree) == original:
            mapping = _local_renames(tree, function, setup_code, parameters=True)
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id in mapping:
                node.id = mapping[node.id]
            elif isinstance(node, ast.arg) and node.arg in mapping:
                node.arg = mapping[node.arg]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not function and node.name in mapping:
                node.name = mapping[node.name]
            elif isinstance(node, ast.ExceptHandler) and node.name in mapping:
                node.name = mapping[node.name]
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def _local_renames(tree: ast.Module, function: ast.FunctionDef, setup_code: str,
                   parameters: bool = False) -> dict[str, str]:
    """Old name -> fresh name for the entry point's locals (its parameters only, with `parameters`)."""
    params = {a.arg for a in _arguments(function.args)}
    bound, fixed = (set(params), set()) if parameters else (set(), set())
    if parameters:
        params = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node is not function:
            bound.update(a.arg for a in _arguments(node.args))
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            fixed.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            fixed.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.keyword) and node.arg:
            fixed.add(node.arg)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            fixed.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            fixed.add(node.rest)
        elif isinstance(node, ast.ClassDef):
            fixed.add(node.name)
    module_level = _module_names(tree) | (_module_names(ast.parse(setup_code)) if setup_code.strip() else set())
    renamable = sorted(bound - params - fixed - module_level - set(dir(builtins)))
    taken = _identifiers(tree) | set(dir(builtins)) | module_level
    mapping = {}
    for name in renamable:
        new = _RENAMES.get(name, f"{name}_")
        base, suffix = new, 2
        while new in taken:
            new, suffix = f"{base}{suffix}", suffix + 1
        taken.add(new)
        mapping[name] = new
    return mapping


def _arguments(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
            *([args.kwarg] if args.kwarg else [])]


def _module_names(tree: ast.Module) -> set[str]:
    names = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        else:
            names.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names


def _identifiers(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name", "attr", "asname"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                found.add(value)
    return found


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


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
