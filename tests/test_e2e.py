"""Two training steps through the real stack: a local Ray on loopback, two vLLM (CPU) rollout
workers, the executor, and a DeepSpeed learner, on a random-init tiny model; the episodes come
from a user's environment plug-in loaded from a file (the repair environment plus a linter)."""
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from envs.datasets import load_tasks
from envs.chat import ChatFormat, first_user_message
from envs.sandbox import ISOLATED
from launch.train import train
from rl.config import load_config
from rl.weight_sync import checksum_tensors
from tests.conftest import REPO
from tests.wandb_offline import history

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", f"run.output_dir={out}", "run.save_final=true",
        f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length",
        f"episode.environment={REPO / 'tests' / 'plugins' / 'lint_feedback.py'}:LintedRepair",
        "episode.seeded_first_turns=0.5",   # some episodes start from a faulty program (repair curriculum)
        "episode.revisions_per_attempt=2",  # each first attempt is revised twice
        "eval.before=true", "eval.after=true",
    ])
    result = train(cfg)
    run_dir = Path(result["run_dir"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return cfg, run_dir, [m for m in metrics if "weight_version" in m], tiny_model


def test_both_steps_logged_to_jsonl_and_wandb(run):
    cfg, run_dir, steps, _ = run
    assert [m["step"] for m in steps] == [1, 2]
    assert [m["weight_version"] for m in steps] == [1, 2]
    for key in ("reward/mean", "train/acc_t1", "train/acc_t2", "train/delta_i2c", "train/delta_c2i",
                "learner/kl", "learner/entropy", "learner/clip_fraction", "tokens/policy",
                "time/generation", "time/execution", "time/training", "time/push"):
        assert all(key in m for m in steps), key
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    rows = [r for r in history(wandb_run) if "weight_version" in r]
    assert [r["_step"] for r in rows] == [1, 2]
    assert [r["reward/mean"] for r in rows] == pytest.approx([m["reward/mean"] for m in steps])
    # Per step, the W&B run holds the turn-transition and sample-episode tables and histograms
    # (read back from the offline run's files), and the run directory the same tables as JSON.
    for row in rows:
        for name, columns in (("transitions", ["from_turn", "to_turn", "c2c", "c2i", "i2c", "i2i"]),
                              ("episodes", ["task_id", "episode", "turn", "seeded", "program", "feedback", "correct",
                                            "public", "hidden", "reward", "advantage"])):
            assert row[f"{name}/_type"] == "table-file", name   # nested keys read back as "name/field"
            table = json.loads((wandb_run / "files" / row[f"{name}/path"]).read_text())
            assert table["columns"] == columns and table["data"], name
        (transitions,) = json.loads((wandb_run / "files" / row["transitions/path"]).read_text())["data"]
        assert transitions[:2] == [1, 2] and sum(transitions[2:]) > 0
        assert row["hist/episode_reward/_type"] == "histogram" and row["rollout/version_lag"] == 0
    saved = json.loads((run_dir / "tables" / "step-000002.json").read_text())
    episodes = min(cfg.wandb.sample_episodes, cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task)
    assert len(saved["episodes"]["rows"]) == 2 * episodes   # two turns each
    reports = json.loads((run_dir / "eval.json").read_text())
    after = reports["after"]
    assert after["episodes"] == 8 and 0.0 <= after["acc_t2"] <= 1.0   # one episode per held-out task
    # before and after on the same tasks: paired, with the noise of the difference
    for name, change in reports["comparison"].items():
        assert change["tasks"] == 8 and change["difference"] == pytest.approx(after[name] - reports["before"][name]), name
        assert change["low"] <= change["difference"] <= change["high"] and 0.0 <= change["p_value"] <= 1.0
    assert set(reports["comparison"]) == {"acc_t1", "acc_t2"}
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["environment"].endswith("lint_feedback.py:LintedRepair")
    # Model code ran isolated (unisolated levels are refused by default) and the run says how.
    assert metadata["isolation"] in ISOLATED and metadata["sandbox"]["level"] == metadata["isolation"]
    assert metadata["weight_transport"] == "shm"   # weight_sync.transport=auto, every actor on this one node


def test_learner_weights_changed_and_every_worker_holds_them(run):
    cfg, run_dir, steps, tiny_model = run
    initial = json.loads((run_dir / "metadata.json").read_text())["initial_weights_checksum"]
    assert initial == checksum_tensors(load_file(str(Path(tiny_model) / "model.safetensors")))
    v1, v2 = steps[0]["weights/checksum"], steps[1]["weights/checksum"]
    assert len({initial, v1, v2}) == 3, "each step must change the learner's weights"
    assert steps[0]["learner/grad_norm"] > 0
    # The saved policy is exactly what was pushed last.
    assert checksum_tensors(load_file(str(run_dir / "final" / "model.safetensors"))) == v2
    # Both workers' engines hold the pushed embeddings/norms byte for byte ...
    for m in steps:
        held = m["weights/held_by_workers"]
        assert len(held) == cfg.rollout.num_workers == 2 and len(set(held)) == 1
    # ... and sampled step 2 with the step-1 weights: the learner, which has them, reproduces
    # the rollout logprobs (a stale worker would be off by the whole update).
    assert steps[1]["learner/rollout_logprob_abs_diff"] < 1e-3


def test_loss_mask_covers_exactly_the_policy_tokens(run):
    cfg, run_dir, steps, tiny_model = run
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    chat = ChatFormat(tokenizer)
    tasks = {t.task_id: t for t in load_tasks(cfg.data.dataset)}
    seeded, advantages = 0, []
    for step in (1, 2):
        rows = [json.loads(line) for line in (run_dir / "rollouts" / f"step-{step:06d}.jsonl").open()]
        assert len(rows) == cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
        for row in rows:
            assert row["weight_version"] == step - 1
            ids, mask, turns = row["token_ids"], row["loss_mask"], row["turns"]
            # Rebuild the sequence turn by turn: environment ids masked out, sampled ids in.
            expected_ids, expected_mask = [], []
            for turn in turns:
                expected_ids += turn["prompt_ids"] + turn["response_ids"]
                expected_mask += [0] * len(turn["prompt_ids"]) + [0 if turn["seeded"] else 1] * len(turn["response_ids"])
            assert ids == expected_ids and mask == expected_mask
            assert sum(mask) == sum(len(t["response_ids"]) for t in turns if not t["seeded"]) > 0
            assert [t["seeded"] for t in turns[1:]] == [False] * (len(turns) - 1)   # only first attempts are seeded
            seeded += turns[0]["seeded"]
            assert len(row["credit"]["advantages"]) == len(turns) and row["credit"]["trained"]
            advantages += row["credit"]["advantages"]
            # The environment's parts are what the environment says: the task prompt, then feedback.
            assert turns[0]["prompt_ids"] == chat.first_prompt_ids(first_user_message(tasks[row["task_id"]]))
            for before, turn in zip(turns, turns[1:]):
                assert before["feedback"] in tokenizer.decode(turn["prompt_ids"])
                assert "Lint: " in before["feedback"].splitlines()[-1]   # the plug-in environment's own feedback
            assert turns[-1]["feedback"] is None
            assert len(turns) == cfg.episode.max_turns   # stop_on_public_pass is off in this recipe
            # Policy tokens carry their sampling logprobs; environment tokens carry none.
            assert all(lp == 0.0 for lp, m in zip(row["rollout_logprobs"], mask) if not m)
            assert all(lp < 0.0 for lp, m in zip(row["rollout_logprobs"], mask) if m)
    assert any(a != 0 for a in advantages)   # the rollout files record the advantages trained on
    # Both kinds of episode occurred: seeded first attempts, and sampled ones.
    assert 0 < seeded < 2 * cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task


def test_report_renders_the_run_without_wandb(run, capsys):
    from launch.cli import main as cli_main

    _, run_dir, steps, _ = run
    cli_main(["report", str(run_dir)])
    out = run_dir / "report"
    page = (out / "report.md").read_text()
    for chart in ("reward.png", "training_accuracy.png", "learner.png", "seconds_per_step.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({chart})" in page, chart
    assert "## Held-out evaluation" in page and "| after |" in page
    assert "## Turn-to-turn transitions per step" in page and "## Sample episodes of the last step" in page
    assert "report.md" in capsys.readouterr().out
