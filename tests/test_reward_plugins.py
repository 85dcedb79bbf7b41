"""Reward plug-ins as users already write them — an installed entry point, an OpenRLHF
reward_func file, a verl compute_score function, async functions — each driving a real training
step (episodes through the sandbox, credit, a DeepSpeed update) with the rewards it should give;
and what a raising or hanging plug-in does under reward.on_error."""
import json
import sys

import pytest

from envs.chat import ChatFormat
from envs.environments import Environment
from envs.registry import RegistryError
from envs.sandbox import make_executor
from envs.tasks import Task, TestCase
from rewards import REWARDS, RewardError, compute_turn_rewards
from rewards.base import conversation_prompts, ground_truth
from rl.advantages import estimator
from rl.config import ConfigError, RewardConfig, load_config
from rl.credit import assign_credit
from rl.episode import run_episodes
from rl.metrics import step_metrics
from rl.rollout import Sample, SamplingSpec
from tests.conftest import REPO

PLUGINS = REPO / "tests" / "plugins"
TASK = Task("t/double", "Write a function `double(x)` that returns twice x.", "double",
            public_tests=(TestCase("call", "double(2)", "4"),),
            hidden_tests=(TestCase("call", "double(5)", "10"),), source="starter")
RIGHT = "```python\ndef double(x):\n    return 2 * x\n```"
WRONG = "```python\ndef double(x):\n    return x + 2\n```"
PROSE = "Multiply by two."
FIRST = [RIGHT, WRONG, PROSE, WRONG]      # turn 1 of the four episodes; every revision is RIGHT


class Script:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompts, spec):
        texts = [FIRST] if spec.n > 1 else [[RIGHT] for _ in prompts]
        return [[self._sample(t) for t in row] for row in texts]

    def _sample(self, text):
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return Sample(ids, [-0.3] * len(ids), "stop")


@pytest.fixture(scope="module")
def episodes(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["episode.feedback=execution"])
    executor = make_executor(workers=2)
    try:
        env = Environment(cfg.episode, cfg.sandbox, executor, [TASK])
        return run_episodes([TASK], env, Script(tokenizer), ChatFormat(tokenizer), tokenizer, samples_per_task=4, revisions=1,
                            sampling=SamplingSpec(temperature=1.0, max_new_tokens=24), weight_version=0, max_model_len=1024)
    finally:
        executor.close()


@pytest.fixture(scope="module")
def learner(tiny_model):
    from rl.learner import Learner, learner_options

    cfg = _cfg()
    return Learner(tiny_model, **learner_options(cfg, estimator("grpo")), master_port=29791)


def _cfg(*overrides):
    return load_config(REPO / "configs" / "tiny.yaml", ["rollout.tasks_per_step=1", "rollout.samples_per_task=4",
                                                         "episode.feedback=execution", *overrides])


def _step(cfg, episodes, learner):
    """Credit with the configured plug-in, then one learner update on the batch."""
    from tests.records import train_step

    credited = assign_credit(cfg, 1, episodes, REWARDS.get(cfg.reward.name), estimator(cfg.algo.advantage))
    before = learner.checksum()
    sums = train_step(learner, credited)
    assert learner.checksum() != before and sums["loss_count"] == 1
    return credited, step_metrics(credited, 2)


def test_openrlhf_reward_func_file_drives_a_step(episodes, learner):
    cfg = _cfg(f"reward.name={PLUGINS / 'openrlhf_reward.py'}:reward_func", "reward.format=openrlhf")
    credited, metrics = _step(cfg, episodes, learner)
    # 1 where the reply defines double(): every turn but the prose reply's first
    assert [list(e.credit.rewards) for e in credited] == [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    assert metrics["reward_extra/defines_entry"] == pytest.approx(7 / 8)
    assert any(a != 0 for e in credited for a in e.credit.advantages)


def test_verl_compute_score_function_drives_a_step(episodes, learner):
    cfg = _cfg(f"reward.name={PLUGINS / 'verl_reward.py'}:compute_score", "reward.format=verl")
    credited, metrics = _step(cfg, episodes, learner)
    # correct - 0.5 on revisions: turn 1 right only for the first episode; every revision is right
    assert [list(e.credit.rewards) for e in credited] == [[1.0, 0.5], [0.0, 0.5], [0.0, 0.5], [0.0, 0.5]]
    assert metrics["reward_extra/turn_seen"] == pytest.approx(0.5)


def test_an_installed_entry_point_drives_a_step(episodes, learner, tmp_path, monkeypatch):
    (tmp_path / "sc_test_rewards.py").write_text(
        "async def concise(turns, task, config):\n    return [float(t.correct) - 0.001 * len(t.text) for t in turns]\n")
    info = tmp_path / "sc_test_rewards-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sc-test-rewards\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[selfcorrect.rewards]\nconcise = sc_test_rewards:concise\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg("reward.name=concise")    # validated: found through its entry point
    credited, _ = _step(cfg, episodes, learner)
    expected = [[float(t.correct) - 0.001 * len(t.text) for t in e.turns] for e in episodes]
    for e, want in zip(credited, expected):
        assert list(e.credit.rewards) == pytest.approx(want)
    with pytest.raises(ConfigError, match=r"reward\.name: unknown reward 'concis'.*Did you mean 'concise'"):
        _cfg("reward.name=concis")
    sys.modules.pop("sc_test_rewards", None)


def test_what_each_foreign_signature_receives(episodes):
    seen = {}

    def reward_func(queries, prompts, labels):
        seen.update(queries=queries, prompts=prompts, labels=labels)
        return [0.0] * len(queries)

    e = episodes[1]
    compute_turn_rewards(reward_func, "r", e.turns, TASK, RewardConfig(format="openrlhf"))
    prompts = conversation_prompts(e.turns, TASK)
    assert prompts[0] == TASK.prompt and prompts[1] == f"{TASK.prompt}\n\n{WRONG}\n\n{e.turns[0].feedback}"
    assert seen["queries"] == [f"{prompts[0]}\n\n{WRONG}", f"{prompts[1]}\n\n{RIGHT}"]
    truth = json.loads(seen["labels"][0])
    assert truth["entry_point"] == "double" and truth["hidden_tests"] == [{"kind": "call", "input": "double(5)", "expected": "10"}]
    assert seen["labels"] == [ground_truth(TASK)] * 2


@pytest.mark.parametrize("body", ["raise ValueError('bad sample')", "import time; time.sleep(30)"])
def test_a_raising_or_hanging_plugin_fails_or_skips_as_configured(body, episodes, learner, tmp_path, capsys):
    plugin = tmp_path / "flaky.py"
    plugin.write_text("def reward(turns, task, config):\n"
                      "    if 'x + 2' in turns[0].text:\n"
                      f"        {body}\n"
                      "    return [float(t.correct) for t in turns]\n")
    name = f"reward.name={plugin}:reward"
    with pytest.raises(RewardError, match=r"on task 't/double' (raised ValueError: bad sample|did not return within)"):
        assign_credit(_cfg(name, "reward.timeout_s=0.5"), 1, episodes, REWARDS.get(f"{plugin}:reward"), estimator("grpo"))
    cfg = _cfg(name, "reward.timeout_s=0.5", "reward.on_error=skip")
    credited, metrics = _step(cfg, episodes, learner)
    # the two episodes whose first reply was WRONG are left out and counted; the others scored
    assert metrics["reward/errors"] == 2
    assert [e.credit.trained for e in credited] == [True, False, True, False]
    assert [e.credit.reward_error is not None for e in credited] == [False, True, False, True]
    assert [list(e.credit.rewards) for e in credited if e.credit.trained] == [[1.0, 1.0], [0.0, 1.0]]
    assert all(e.credit.advantages == (0.0, 0.0) for e in credited if not e.credit.trained)   # each turn its own group


def test_a_plugin_that_does_not_import_is_a_config_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import no_such_module\n")
    with pytest.raises(ConfigError, match=r"reward\.name: cannot load reward plug-in .*No module named 'no_such_module'"):
        _cfg(f"reward.name={bad}:reward")
    with pytest.raises(RegistryError):
        REWARDS.get("no_such_reward_anywhere")


def test_a_plugin_with_the_wrong_signature_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"reward\.name: reward .* cannot be called as a verl reward "
                                          r"fn\(data_source, solution_str, ground_truth, extra_info\)"):
        _cfg(f"reward.name={PLUGINS / 'openrlhf_reward.py'}:reward_func", "reward.format=verl")
    one_argument = tmp_path / "short.py"
    one_argument.write_text("def reward(turns):\n    return [0.0] * len(turns)\n")
    with pytest.raises(ConfigError, match=r"cannot be called as a native reward fn\(turns, task, config\)"):
        _cfg(f"reward.name={one_argument}:reward")
