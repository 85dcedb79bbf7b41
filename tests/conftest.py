import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random-init 2-layer Llama with the default model's real tokenizer (no download)."""
    from rl.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def starter_benchmark(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A repair benchmark file of two held-out starter tasks (docs/repair_benchmark.md's rows): a
    faulty mutant of each, verified to fail in the sandbox, and each reference solution; returns
    (path, rows)."""
    from envs.datasets import load_tasks
    from envs.execution import ExecutionRequest
    from envs.mutations import mutate
    from envs.sandbox import make_executor

    rows = []
    executor = make_executor(workers=2)
    try:
        for task in [t for t in load_tasks("starter", "heldout", 0.25, 0) if t.reference_solution][:2]:
            for program in mutate(task.reference_solution, 0, 8, task.entry_point):
                (result,) = executor.run([ExecutionRequest(program, task.hidden_tests, task.entry_point, task.setup_code)])
                if not result.all_passed:
                    rows.append({"id": f"{task.task_id}/f", "task_id": task.task_id, "dataset": "starter", "kind": "faulty",
                                 "program": program})
                    break
            rows.append({"id": f"{task.task_id}/c", "task_id": task.task_id, "dataset": "starter", "kind": "correct",
                         "program": task.reference_solution})
    finally:
        executor.close()
    path = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
