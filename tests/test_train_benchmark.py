"""The training run's held-out evaluation on a benchmark of seeded first attempts (eval.benchmark),
as the default job runs it: the default config's recipe at tiny scale through the real stack (a
local Ray, one vLLM (CPU) worker, the sandbox, a DeepSpeed learner), the fix and keep rates before
and after, and their paired change."""
import json
from pathlib import Path

import pytest

from launch.train import train
from rl.config import ConfigError, load_config
from tests.conftest import REPO

TINY = ["run.steps=1", "run.save_final=false", "model.max_model_len=1024", "rollout.tasks_per_step=2",
        "rollout.samples_per_task=2", "rollout.max_new_tokens=24", "algo.micro_batch_size=2", "wandb.mode=offline"]


def test_a_missing_benchmark_is_refused_before_ray(tmp_path):
    cfg = load_config(REPO / "configs" / "default.yaml", [*TINY, f"run.output_dir={tmp_path}",
                                                          f"eval.benchmark={tmp_path / 'no_such.jsonl'}"])
    with pytest.raises(ConfigError, match=r"eval.benchmark: .*no_such.jsonl"):
        train(cfg)
    assert not any(tmp_path.iterdir())   # no run directory either
    import sys
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_benchmark_with_another_environment_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.environment"):
        load_config(REPO / "configs" / "default.yaml", ["eval.benchmark=repair_v1", "eval.environment=repair"])


@pytest.mark.e2e
def test_fix_and_keep_rates_before_and_after_with_their_paired_change(tiny_model, starter_benchmark, tmp_path, capsys):
    path, rows = starter_benchmark
    cfg = load_config(REPO / "configs" / "default.yaml", [
        *TINY, f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "data.limit=8",
        "eval.before=true", "eval.after=true", f"eval.benchmark={path}"])
    result = train(cfg)
    faulty = sum(r["kind"] == "faulty" for r in rows)
    for when in ("before", "after"):
        report = result[when]
        assert report["episodes"] == len(rows)   # one episode per row
        assert (report["fix_rate_n"], report["keep_rate_n"]) == (faulty, len(rows) - faulty)
        assert report["acc_t1"] == pytest.approx((len(rows) - faulty) / len(rows))   # the seeded attempts, as judged
        for key in ("fix_rate", "keep_rate"):
            assert report[f"{key}_low"] <= report[key] <= report[f"{key}_high"]
    comparison = result["comparison"]
    # the first attempts are the benchmark's: only what the policy wrote is compared
    assert set(comparison) == {"acc_t2", "fix_rate", "keep_rate"}
    for key in ("fix_rate", "keep_rate"):
        c = comparison[key]
        assert (c["before"], c["after"]) == (pytest.approx(result["before"][key]), pytest.approx(result["after"][key]))
        assert c["low"] <= c["difference"] <= c["high"] and 0.0 <= c["p_value"] <= 1.0
    out = capsys.readouterr().out
    assert f"benchmark {path} ({len(rows)} rows)" in out
    assert "fix rate: faulty → correct" in out and "| keep rate |" in out and "noise" in out
    run_dir = Path(result["run_dir"])
    saved = json.loads((run_dir / "eval.json").read_text())
    assert set(saved["comparison"]) == set(comparison) and saved["after"]["fix_rate_n"] == faulty
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["eval_tasks"] == len(rows)
