"""The config system: YAML + dotted overrides, typed validation, and the CLI failing fast."""
import subprocess
import sys
import time

import pytest

from rl.config import ConfigError, all_keys, describe, load_config
from tests.conftest import REPO


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  temperature: 0.7\n  samples_per_task: 8\nreward:\n  name: cocos\n")
    cfg = load_config(path, ["rollout.temperature=0.5", "algo.lr=3e-6", "run.name=exp 1"])
    assert cfg.rollout.temperature == 0.5          # command line wins over the file
    assert cfg.rollout.samples_per_task == 8       # file wins over the default
    assert cfg.reward.name == "cocos"
    assert cfg.algo.lr == pytest.approx(3e-6) and isinstance(cfg.algo.lr, float)
    assert cfg.run.name == "exp 1"
    assert cfg.episode.max_turns == 2              # untouched default


def test_shipped_configs_are_valid():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize("source, expected", [
    ("rollout:\n  temprature: 0.5\n", r"c\.yaml: unknown config key 'rollout\.temprature' \(did you mean 'rollout\.temperature'\?\)"),
    ("rollouts:\n  temperature: 0.5\n", r"unknown config key 'rollouts\.temperature'"),
    ("rollout:\n  temperature: hot\n", r"c\.yaml: rollout\.temperature: expected a number, got 'hot'"),
    ("rollout:\n  samples_per_task: 2.5\n", r"rollout\.samples_per_task: expected an integer, got 2\.5"),
    ("rollout:\n  temperature: 0\n", r"rollout\.temperature: 0\.0 is below the minimum 0\.01"),
    ("episode:\n  feedback: loud\n", r"episode\.feedback: 'loud' is not one of 'instruction', 'execution'"),
    ("episode:\n  stop_on_public_pass: maybe\n", r"episode\.stop_on_public_pass: expected true or false"),
    ("rollout: 3\n", r"section 'rollout' must be a mapping"),
    ("- a\n- b\n", r"expected a mapping of sections"),
    ("rollout: [\n", r"not valid YAML"),
])
def test_bad_file_is_rejected_with_key_and_file(tmp_path, source, expected):
    path = tmp_path / "c.yaml"
    path.write_text(source)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


@pytest.mark.parametrize("override, expected", [
    ("algo.lr", r"command line: override 'algo\.lr' is not of the form section\.key=value"),
    ("algo.learning_rate=1", r"command line: unknown config key 'algo\.learning_rate'"),
    ("reward.name=nonsense", r"reward\.name: .*nonsense"),
    ("reward.name=no_such_module:fn", r"reward\.name: .*no_such_module"),
    ("algo.advantage=ppo_gae_nope", r"algo\.advantage: .*ppo_gae_nope"),
    ("data.dataset=nope", r"data\.dataset: .*nope"),
    ("data.dataset=jsonl", r"data\.path: the jsonl dataset needs a file"),
    ("rollout.samples_per_task=1", r"rollout\.samples_per_task: grpo needs a group of at least 2"),
    ("algo.mini_batches=3", r"algo\.mini_batches: 3 does not divide the rollout batch of 16"),
    ("algo.micro_batch_size=3", r"algo\.micro_batch_size: 3 does not divide the 16 episodes"),
    ("model.max_model_len=256", r"model\.max_model_len: 256 leaves no room"),
    ("sandbox.workers=0", r"sandbox\.workers: 0 is below the minimum 1"),          # null, not 0, means one per CPU
    ("episode.environment=no_such_env", r"episode\.environment: unknown environment 'no_such_env'"),
    (f"episode.environment={REPO}/tests/plugins/reply_length.py:reply_length", r"not a subclass of envs.environments.Environment"),
    ("episode.environment=repair episode.seeded_first_turns=0", None),
    ("episode.environment=repair episode.seeded_first_turns=0.6 episode.seeded_correct_turns=0.5",
     r"episode\.seeded_correct_turns: 0\.5 with episode\.seeded_first_turns=0\.6 seeds more than every task"),
])
def test_bad_override_is_rejected_by_name(override, expected):
    expected = expected or r"episode\.seeded_first_turns: 0 with episode\.environment=repair seeds no episode"
    with pytest.raises(ConfigError, match=expected):
        load_config(None, override.split(" "))


def test_null_means_off_or_automatic():
    cfg = load_config(None, ["reward.overlong_buffer=16", "algo.grad_clip=null", "sandbox.workers=~"])
    assert (cfg.reward.overlong_buffer, cfg.algo.grad_clip, cfg.sandbox.workers) == (16, None, None)
    assert cfg.data.limit is None and cfg.ray.num_cpus is None and cfg.run.checkpoint_every is None
    assert "  algo.clip_eps_high (float|null, default null)" in describe()


def test_reward_plugin_is_loaded_while_validating():
    cfg = load_config(None, [f"reward.name={REPO}/tests/plugins/reply_length.py:reply_length"])
    assert cfg.reward.name.endswith("reply_length.py:reply_length")
    with pytest.raises(ConfigError, match=r"reward\.name: cannot load reward plug-in .*has no attribute 'reward'"):
        load_config(None, [f"reward.name={REPO}/tests/plugins/reply_length.py:reward"])


def test_help_documents_every_key():
    text = describe()
    for key in all_keys():
        assert f"  {key} (" in text, key


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_help_lists_the_config():
    out = _cli("--help")
    assert out.returncode == 0
    assert "rollout.samples_per_task (int, default 4)" in out.stdout and "reward.name" in out.stdout


def test_cli_rejects_a_bad_key_before_ray_or_vllm_start(tmp_path):
    start = time.monotonic()
    out = _cli("--config", str(REPO / "configs/tiny.yaml"), "rollout.num_workerz=2", f"run.output_dir={tmp_path}")
    assert out.returncode == 2
    assert "config error" in out.stderr and "'rollout.num_workerz'" in out.stderr and "rollout.num_workers" in out.stderr
    # Nothing started: no Ray banner, no vLLM engine log, no run directory, and fast.
    assert "Ray" not in out.stdout + out.stderr and "vllm" not in (out.stdout + out.stderr).lower()
    assert not any(tmp_path.iterdir())
    assert time.monotonic() - start < 60


def test_cli_rejects_a_malformed_dataset_before_ray_starts(tmp_path):
    bad = tmp_path / "tasks.jsonl"
    good = (REPO / "envs/data/starter_tasks.jsonl").read_text().splitlines()[0]
    bad.write_text(good + "\nnot json\n")
    out = _cli("data.dataset=jsonl", f"data.path={bad}", f"run.output_dir={tmp_path / 'runs'}")
    assert out.returncode == 2
    assert f"{bad}:2: not valid JSON" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_rows_are_skipped_and_counted_when_asked(tmp_path, capsys):
    from launch.runtime import load_split

    good = (REPO / "envs/data/starter_tasks.jsonl").read_text().splitlines()[:3]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join([good[0], "not json", good[1], '{"task_id": "x"}', good[2]]) + "\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: not valid JSON"):
        load_split(load_config(None, ["data.dataset=jsonl", f"data.path={path}"]), "all", None)
    tasks = load_split(load_config(None, ["data.dataset=jsonl", f"data.path={path}", "data.bad_rows=skip"]), "all", None)
    assert len(tasks) == 3
    err = capsys.readouterr().err
    assert "skipped 2 malformed row(s)" in err and f"{path}:2: not valid JSON" in err and f"{path}:4: missing" in err


def test_cli_rejects_a_missing_model_before_ray_starts(tmp_path):
    out = _cli("model.path=/no/such/model", f"run.output_dir={tmp_path / 'runs'}")
    assert out.returncode == 2
    assert "config error: model.path: '/no/such/model': no such folder" in out.stderr
    assert "Ray" not in out.stdout + out.stderr and not (tmp_path / "runs").exists()


def test_cli_rejects_a_resume_that_cannot_continue_before_ray_starts(tmp_path):
    out = _cli(f"run.resume={tmp_path / 'nothing-here'}", f"run.output_dir={tmp_path / 'runs'}")
    assert out.returncode == 2
    assert f"config error: run.resume: '{tmp_path / 'nothing-here'}' is neither a checkpoint" in out.stderr
    assert "Ray" not in out.stdout + out.stderr and not (tmp_path / "runs").exists()
