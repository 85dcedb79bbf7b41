"""The Hugging Face rollout backend (`rollout.backend=hf`) through the same end-to-end checks as
vLLM's: two training steps through Ray, the sandbox and a DeepSpeed learner; the weights change,
every worker holds the pushed weights, and its sampling logprobs agree with the learner's."""
import json
from pathlib import Path

import pytest

from launch.train import train
from rl.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_hf_backend_trains_and_holds_the_pushed_weights(tiny_model, tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "rollout.backend=hf", "rollout.num_workers=1",
        f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length", "wandb.mode=disabled"])
    run_dir = Path(train(cfg)["run_dir"])
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    assert [r["step"] for r in steps] == [1, 2]
    initial = json.loads((run_dir / "metadata.json").read_text())["initial_weights_checksum"]
    assert len({initial, *(r["weights/checksum"] for r in steps)}) == 3, "each step must change the weights"
    for r in steps:
        assert len(set(r["weights/held_by_workers"])) == 1
        # Step 2 samples with the pushed weights: the learner recomputes the engine's logprobs.
        assert r["learner/rollout_logprob_abs_diff"] < 1e-3
    episodes = [json.loads(line) for line in (run_dir / "rollouts" / "step-000002.jsonl").open()]
    assert len(episodes) == cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
    assert all(t["finish_reason"] in ("stop", "length") for e in episodes for t in e["turns"])
