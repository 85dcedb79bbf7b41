"""envs/data/repair_benchmark_v1.jsonl: schema, split, and every program's verdict in the sandbox."""
import ast
import collections
import difflib
import importlib.util
import json
import time
from pathlib import Path

import pytest

from envs.datasets import load_tasks
from envs.execution import ExecutionRequest, Verdict
from envs.mutations import EXTRA_OPERATORS, OPERATORS, mutants
from envs.sandbox import make_executor

REPO = Path(__file__).resolve().parents[1]
PATH = REPO / "envs" / "data" / "repair_benchmark_v1.jsonl"
FIELDS = ("id", "task_id", "dataset", "kind", "mutation", "description", "program", "version")
HELDOUT = {name: load_tasks(name, "heldout", 0.25, 0, None) for name in ("humaneval", "starter")}
TASKS = {t.task_id: t for tasks in HELDOUT.values() for t in tasks}


def _builder():
    spec = importlib.util.spec_from_file_location("build_repair_benchmark", REPO / "bench" / "build_repair_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in PATH.read_text(encoding="utf-8").splitlines()]


def test_schema_and_size(rows):
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert tuple(r) == FIELDS, r["id"]
        assert r["version"] == 1 and r["dataset"] in HELDOUT and r["kind"] in ("faulty", "correct")
        assert isinstance(r["program"], str) and r["program"].endswith("\n")
        ast.parse(r["program"])
        if r["kind"] == "faulty":
            assert r["mutation"] in OPERATORS + EXTRA_OPERATORS and isinstance(r["description"], str)
            assert r["id"] == f"{r['task_id']}:faulty:{r['mutation']}"
        else:
            assert r["mutation"] is None and r["description"] is None and r["id"] == f"{r['task_id']}:correct"
    kinds = collections.Counter(r["kind"] for r in rows)
    assert kinds["correct"] >= 50 and kinds["faulty"] >= 250
    assert len({r["mutation"] for r in rows if r["kind"] == "faulty"}) >= 6      # several kinds of bug


def test_tasks_are_held_out(rows):
    train = {name: {t.task_id for t in load_tasks(name, "train", 0.25, 0, None)} for name in HELDOUT}
    for r in rows:
        assert r["task_id"] in {t.task_id for t in HELDOUT[r["dataset"]]}, r["id"]
        assert r["task_id"] not in train[r["dataset"]]
    per_task = collections.defaultdict(list)
    for r in rows:
        per_task[r["task_id"]].append(r)
    assert set(per_task) == set(TASKS)                                           # every held-out task is there
    for task_id, mine in per_task.items():
        assert sum(r["kind"] == "correct" for r in mine) == 1, task_id
        faulty = [r["mutation"] for r in mine if r["kind"] == "faulty"]
        assert 1 <= len(faulty) <= 6 and len(set(faulty)) == len(faulty), task_id  # distinct kinds


def test_file_is_sorted_and_formatted_as_the_builder_writes_it(rows):
    builder = _builder()
    assert builder.dumps(sorted(rows, key=builder._sort_key)) == PATH.read_text(encoding="utf-8")
    assert builder.VERSION == 1 and builder.OUTPUT == PATH


def test_correct_programs_are_not_verbatim_and_faulty_ones_are_single_point_mutants(rows):
    correct = {r["task_id"]: r["program"] for r in rows if r["kind"] == "correct"}
    for task_id, program in correct.items():
        reference = TASKS[task_id].reference_solution
        assert program != reference
        assert ast.dump(ast.parse(program)) != ast.dump(ast.parse(reference)), task_id   # not just reformatted
    for r in rows:
        if r["kind"] == "faulty":
            base = correct[r["task_id"]].splitlines()
            hunks = difflib.SequenceMatcher(None, base, r["program"].splitlines()).get_opcodes()
            assert sum(tag != "equal" for tag, *_ in hunks) == 1, r["id"]


def test_every_program_has_its_verdict_in_the_sandbox(rows):
    """Faulty programs fail a hidden test; correct ones pass every hidden and public test."""
    requests = []
    for r in rows:
        task = TASKS[r["task_id"]]
        requests.append(ExecutionRequest(r["program"], task.hidden_tests + task.public_tests, task.entry_point,
                                         task.setup_code, 5.0, 512))
    executor = make_executor(workers=2)
    try:
        start = time.monotonic()
        results = executor.run(requests)
        elapsed = time.monotonic() - start
    finally:
        executor.close()
    wrong = []
    for r, result in zip(rows, results):
        hidden = result.tests[: len(TASKS[r["task_id"]].hidden_tests)]
        if r["kind"] == "correct" and not result.all_passed:
            wrong.append((r["id"], "does not pass", [t.message for t in result.tests if t.verdict is not Verdict.PASS][:2]))
        if r["kind"] == "faulty" and all(t.verdict is Verdict.PASS for t in hidden):
            wrong.append((r["id"], "passes the hidden tests"))
        if any(t.verdict in (Verdict.TIMEOUT, Verdict.SANDBOX) for t in result.tests):
            wrong.append((r["id"], "timeout or sandbox error"))
    assert not wrong, wrong
    assert elapsed < 120, f"{len(rows)} programs took {elapsed:.0f}s"


def test_extra_mutation_operators_are_opt_in():
    source = "def f(a, b):\n    return pow(a - b, 2)\n"
    default = {m.operator for m in mutants(source, "f")}
    extra = {m.operator: m for m in mutants(source, "f", extra=True)}
    assert not default & set(EXTRA_OPERATORS)
    assert set(extra) == default | {"swap_args", "swap_operands"}
    assert "pow(2, a - b)" in extra["swap_args"].source and "b - a" in extra["swap_operands"].source
    assert [m.source for m in mutants(source, "f", extra=True)][: len(mutants(source, "f"))] == \
        [m.source for m in mutants(source, "f")]                                   # default ones first, same order
