"""The repair curriculum's faulty first attempts: mutants verified to fail, or the user's file."""
import json

import pytest

from envs.datasets import DatasetError, load_tasks
from envs.repair import FaultyPrograms, candidates, load_faulty_programs
from envs.sandbox import make_executor


def test_mutants_of_reference_solutions_that_really_fail():
    tasks = load_tasks("starter", limit=6)
    executor = make_executor(workers=2)
    try:
        faulty = load_faulty_programs(tasks, "mutations", executor, per_task=2)
        assert len(faulty.programs) >= 4 and all(1 <= len(p) <= 2 for p in faulty.programs.values())
        by_id = {t.task_id: t for t in tasks}
        from envs.execution import ExecutionRequest

        pairs = [(tid, p) for tid, ps in faulty.programs.items() for p in ps]
        results = executor.run([ExecutionRequest(p, by_id[tid].hidden_tests, by_id[tid].entry_point) for tid, p in pairs])
        assert not any(r.all_passed for r in results)          # every kept program is faulty
        assert all(p != by_id[tid].reference_solution for tid, p in pairs)
    finally:
        executor.close()


class CountingExecutor:
    """The real sandbox, counting the programs it runs."""

    def __init__(self, executor):
        self.executor, self.runs = executor, 0

    def run(self, requests):
        self.runs += len(requests)
        return self.executor.run(requests)


def test_verifying_in_rounds_keeps_what_verifying_every_candidate_keeps_in_fewer_runs():
    from envs.execution import ExecutionRequest

    tasks = load_tasks("starter", limit=8)
    by_id = {t.task_id: t for t in tasks}
    executor = make_executor(workers=2)
    try:
        found = candidates(tasks, "mutations", 3)
        pairs = [(tid, p) for tid, ps in found.items() for p in ps]
        results = executor.run([ExecutionRequest(p, by_id[tid].hidden_tests, by_id[tid].entry_point, by_id[tid].setup_code)
                                for tid, p in pairs])
        every: dict[str, list[str]] = {}
        for (tid, p), r in zip(pairs, results):
            if not r.all_passed and len(every.get(tid, [])) < 3:
                every.setdefault(tid, []).append(p)
        counting = CountingExecutor(executor)
        assert load_faulty_programs(tasks, "mutations", counting, per_task=3).programs == every
        assert counting.runs < len(pairs)
    finally:
        executor.close()


def test_draw_is_distinct_while_possible():
    faulty = FaultyPrograms({"a": ["p1", "p2"], "b": []}, seed=0)
    assert "b" not in faulty and sorted(faulty.draw("a", 2)) == ["p1", "p2"]
    assert len(faulty.draw("a", 3)) == 3 and set(faulty.draw("a", 3)) == {"p1", "p2"}


def test_user_file_of_faulty_programs(tmp_path):
    tasks = load_tasks("starter", limit=3)
    path = tmp_path / "faulty.jsonl"
    path.write_text(json.dumps({"task_id": tasks[0].task_id, "program": "def f(): pass"}) + "\n"
                    + json.dumps({"task_id": "unknown", "program": "x"}) + "\n")
    assert candidates(tasks, str(path)) == {tasks[0].task_id: ["def f(): pass"]}
    path.write_text('{"task_id": 3}\n')
    with pytest.raises(DatasetError, match=r"faulty\.jsonl:1: expected an object with string fields"):
        candidates(tasks, str(path))
    with pytest.raises(DatasetError, match="neither 'mutations' nor an existing JSONL file"):
        candidates(tasks, str(tmp_path / "missing.jsonl"))
