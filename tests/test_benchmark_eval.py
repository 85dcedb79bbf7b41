"""The held-out repair benchmark as the evaluator runs it: one task per row with its seeded first
attempt (the `seeded` environment), fix and keep rates with Wilson intervals. The policy is a
script (the vLLM path of `selfcorrect eval` is in test_eval_cli.py); sandbox and tokenizer are real."""
import json

import pytest

from envs.chat import ChatFormat
from envs.datasets import DatasetError, load_tasks
from envs.environments import make_environment
from envs.repair import as_reply, load_benchmark
from envs.sandbox import make_executor
from rl.config import EpisodeConfig, SandboxConfig
from rl.episode import run_episodes
from rl.metrics import benchmark_rows, correctness, paired_comparisons, repair_metrics
from rl.rollout import Sample, SamplingSpec


@pytest.fixture(scope="module")
def executor():
    ex = make_executor(workers=2)
    yield ex
    ex.close()


class Replies:
    """Replies with each task's reference solution, or with no program at all."""

    def __init__(self, tokenizer, by_prompt_task, fix: bool):
        self.tokenizer, self.by_prompt_task, self.fix = tokenizer, by_prompt_task, fix

    def __call__(self, prompts, spec):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            task = next(t for t in self.by_prompt_task if t.prompt.strip() in text)
            reply = as_reply(task.reference_solution) if self.fix else "I am not sure."
            ids = self.tokenizer.encode(reply, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            out.append([Sample(ids, [-0.1] * len(ids), "stop")] * spec.n)
        return out


def benchmark_episodes(path, executor, tiny_model, fix: bool):
    from transformers import AutoTokenizer

    tasks = load_benchmark(str(path))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    env = make_environment("seeded", EpisodeConfig(max_turns=2, feedback="execution"), SandboxConfig(), executor, tasks)
    return tasks, run_episodes(tasks, env, Replies(tokenizer, tasks, fix), ChatFormat(tokenizer), tokenizer, samples_per_task=1,
                               revisions=1, sampling=SamplingSpec(temperature=0.0, max_new_tokens=64), weight_version=0,
                               max_model_len=2048)


@pytest.mark.parametrize("fix, rates", [(True, (1.0, 1.0)), (False, (0.0, 0.0))])
def test_fix_and_keep_rates_from_seeded_first_attempts(fix, rates, starter_benchmark, executor, tiny_model):
    path, rows = starter_benchmark
    tasks, episodes = benchmark_episodes(path, executor, tiny_model, fix)
    assert [t.task_id for t in tasks] == [r["id"] for r in rows]
    assert [t.metadata["kind"] for t in tasks] == [r["kind"] for r in rows]
    # The seeded attempt is what the row says, and is judged as the row's kind says.
    assert [e.turns[0].seeded for e in episodes] == [True] * len(rows)
    assert [e.turns[0].correct for e in episodes] == [r["kind"] == "correct" for r in rows]
    m = repair_metrics(episodes)
    assert (m["fix_rate"], m["keep_rate"]) == rates
    assert m["fix_rate_n"] == sum(r["kind"] == "faulty" for r in rows) and m["keep_rate_n"] == 2
    assert m["keep_rate_low"] <= m["keep_rate"] <= m["keep_rate_high"] and m["keep_rate_high"] - m["keep_rate_low"] > 0.3


def test_a_policy_that_fixes_against_one_that_does_not_paired_by_row(starter_benchmark, executor, tiny_model):
    """The records of two evaluations of the benchmark, compared as `selfcorrect compare` does:
    every faulty row goes wrong -> right, every correct row right -> wrong."""
    path, rows = starter_benchmark
    _, silent = benchmark_episodes(path, executor, tiny_model, fix=False)
    _, fixing = benchmark_episodes(path, executor, tiny_model, fix=True)
    assert benchmark_rows(silent) == {r["id"]: {"kind": r["kind"], "task": r["task_id"]} for r in rows}
    change = paired_comparisons(correctness(silent), correctness(fixing), 2, benchmark_rows(silent))
    faulty = sum(r["kind"] == "faulty" for r in rows)
    assert (change["fix_rate"]["before"], change["fix_rate"]["after"]) == (0.0, 1.0)
    assert (change["fix_rate"]["b"], change["fix_rate"]["c"]) == (0, faulty)
    assert (change["keep_rate"]["before"], change["keep_rate"]["after"]) == (0.0, 1.0)
    assert change["acc_t1"]["difference"] == 0.0   # the seeded attempts


def test_a_row_outside_the_heldout_split_is_refused(tmp_path):
    train_task = load_tasks("starter", "train", 0.25, 0)[0]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "task_id": train_task.task_id, "dataset": "starter", "kind": "correct", "program": "x"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: task .* is not in the held-out split"):
        load_benchmark(str(path))
    path.write_text('{"id": "x"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not a benchmark row"):
        load_benchmark(str(path))
