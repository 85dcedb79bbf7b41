"""Behaviour is pinned: two steps of five recipes, on the random-init tiny model with fixed seeds,
through the real sandbox, credit assignment and DeepSpeed learner (a scripted policy in place of
vLLM, so the episodes are exact), give the rewards, advantages, KL weights and learner losses
recorded in tests/data/pinned_two_steps.json.

Those values were recorded at commit 7ddb151 (before the episode record, the environments and
the credit module existed) by running this same scenario through that commit's API
(rl/episodes.py:run_episodes with first_turns for the seeded task, launch/train.py:assign_credit,
rl/learner.py:Learner.train_step). A change that moves any of them changes what the trainer does.
"""
import json
import zlib

import pytest

from envs.chat import ChatFormat
from envs.environments import make_environment
from envs.sandbox import make_executor
from envs.tasks import Task, TestCase
from rewards import REWARDS
from rl.advantages import estimator
from rl.config import load_config
from rl.credit import assign_credit, passes_needed
from rl.episode import run_episodes
from rl.rollout import Sample, SamplingSpec
from tests.conftest import REPO

TASKS = [
    Task("pin/double", "Write a function `double(x)` that returns twice x.", "double",
         public_tests=(TestCase("call", "double(2)", "4"), TestCase("call", "double(0)", "0")),
         hidden_tests=(TestCase("call", "double(5)", "10"), TestCase("call", "double(-1)", "-2"), TestCase("call", "double(0)", "0"))),
    Task("pin/last", "Write a function `last(xs)` that returns the last element of a non-empty list.", "last",
         public_tests=(TestCase("call", "last([1, 2])", "2"),),
         hidden_tests=(TestCase("call", "last([3])", "3"), TestCase("call", "last([1, 2, 9])", "9"))),
]
REPLIES = {
    "double": ["Here:\n```python\ndef double(x):\n    return 2 * x\n```",
               "```python\ndef double(x):\n    return x + 2\n```",
               "```python\ndef double(x):\n    return x * x\n```",
               "Multiply it by two."],
    "last": ["```python\ndef last(xs):\n    return xs[-1]\n```",
             "```python\ndef last(xs):\n    return xs[0]\n```",
             "```python\ndef last(xs):\n    return xs[len(xs) - 1]\n```",
             "```python\ndef last(xs):\n    return None\n```"],
}
REPAIR_PROGRAM = "def double(x):\n    return x * 3"
COMMON = ["rollout.tasks_per_step=2", "rollout.samples_per_task=4", "algo.micro_batch_size=2", "algo.lr=1e-3",
          "rollout.max_new_tokens=64", "model.max_model_len=1024", "run.seed=0"]
# name: (recipe, overrides, task 0 starts from a faulty program: the repair environment). "default"
# is the config's defaults, which is what configs/default.yaml trained when these were pinned
# (two turns, SCoRe's generic note, binary rewards, GRPO, KL 0.01); the default job has since
# become the repair curriculum.
SCENARIOS = {
    "default": (None, COMMON, False),
    "cocos": ("cocos", COMMON, False),
    "rlef": ("rlef", COMMON, False),
    "score": ("score", COMMON + ["reward.score_switch_step=1"], False),
    "grpo_minis_repair": ("grpo", COMMON + ["episode.max_turns=2", "episode.feedback=execution", "algo.mini_batches=2",
                                            "algo.loss_aggregation=token_mean", "algo.filter_uniform_groups=true"], True),
}
PINNED = json.loads((REPO / "tests" / "data" / "pinned_two_steps.json").read_text())


class ScriptedPolicy:
    """Replies chosen by a hash of the prompt's token ids and the step, shifted by the sample
    index: the same prompts get the same replies in whatever order they are asked."""

    def __init__(self, tokenizer):
        self.tokenizer, self.step = tokenizer, 1

    def __call__(self, prompts, spec):
        return [[self._sample(p, j) for j in range(spec.n)] for p in prompts]

    def _sample(self, prompt, j):
        entry = "double" if "double(x)" in self.tokenizer.decode(prompt) else "last"
        h = zlib.crc32(bytes(str((prompt, self.step)), "ascii")) + j
        ids = self.tokenizer.encode(REPLIES[entry][h % 4], add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return Sample(ids, [-(0.1 + ((h >> (i % 24)) & 7) / 10) for i in range(len(ids))], "stop")


@pytest.fixture(scope="module")
def executor():
    ex = make_executor(workers=2)
    yield ex
    ex.close()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_steps_match_the_values_pinned_before_the_refactor(name, tiny_model, executor, tmp_path):
    from transformers import AutoTokenizer

    from rl.learner import Learner, learner_options
    from tests.records import train_step

    recipe, overrides, repair = SCENARIOS[name]
    if repair:
        faulty = tmp_path / "faulty.jsonl"
        faulty.write_text(json.dumps({"task_id": "pin/double", "program": REPAIR_PROGRAM}) + "\n")
        overrides = overrides + ["episode.environment=repair", "episode.seeded_first_turns=1.0", f"episode.first_turns={faulty}"]
    cfg = load_config(recipe and REPO / "configs" / f"{recipe}.yaml", overrides)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    est = estimator(cfg.algo.advantage)
    learner = Learner(tiny_model, **learner_options(cfg, est), master_port=29811 + list(SCENARIOS).index(name))
    env = make_environment(cfg.episode.environment, cfg.episode, cfg.sandbox, executor, TASKS, cfg.run.seed)
    policy = ScriptedPolicy(tokenizer)
    spec = SamplingSpec(1, cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens)
    for step, pinned in zip((1, 2), PINNED[name]):
        policy.step = step
        episodes = run_episodes(TASKS, env, policy, ChatFormat(tokenizer), tokenizer, samples_per_task=cfg.rollout.samples_per_task,
                                revisions=cfg.episode.revisions_per_attempt, sampling=spec, weight_version=step - 1,
                                max_model_len=cfg.model.max_model_len)
        passes = learner.passes(episodes, *passes_needed(cfg.algo, est))
        episodes = assign_credit(cfg, step, episodes, REWARDS.get(cfg.reward.name), est,
                                 passes.get("reference"), passes.get("values"))
        sums = train_step(learner, episodes, cfg.algo.mini_batches)
        metrics = {k: v / sums[k + "_count"] for k, v in sums.items() if k + "_count" in sums and sums[k + "_count"]}
        metrics["tokens"] = float(sum(sum(e.layout.loss_mask) for e in episodes if e.credit.trained))

        assert [[t.correct for t in e.turns] for e in episodes] == pinned["correct"]
        for e, rewards, shaped, adv, token_sum, coefs, trained in zip(episodes, pinned["rewards"], pinned["trained_rewards"], pinned["advantages"],
                                                             pinned["token_advantage_sums"], pinned["kl_coefs"], pinned["trained"]):
            assert list(e.credit.rewards) == pytest.approx(rewards, abs=1e-9)
            assert list(e.credit.shaped_rewards) == pytest.approx(shaped, abs=1e-6)
            assert list(e.credit.advantages) == pytest.approx(adv, abs=1e-5)
            assert sum(e.token_advantages()) == pytest.approx(token_sum, abs=1e-4)
            assert list(e.credit.kl_coefs) == coefs and e.credit.trained == trained
        # value_loss is not compared: its statistic is now the mean over every critic target of the
        # mini-batch, no longer the average of per-micro-batch means (which depended on how the
        # episodes were grouped into passes); the loss, which contains it, still is.
        for key in ("loss", "pg_loss", "grad_norm", "tokens"):
            value = metrics.get(key, sums.get(key))
            if pinned[key] is None:
                assert value is None, key
            else:
                assert value == pytest.approx(pinned[key], rel=1e-4, abs=1e-6), key
        # The KL statistic is now measured only on micro-batches where a trained token has a KL
        # weight (the reference pass runs only there); before, micro-batches of filtered episodes
        # counted as 0 in its mean. Where every episode is trained the two agree.
        if "kl" in metrics and all(pinned["trained"]):
            assert metrics["kl"] == pytest.approx(pinned["kl"], rel=1e-4, abs=1e-6)
