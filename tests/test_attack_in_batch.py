"""One sampled program that attacks the judge must not end a training step: the step — episodes
through the real sandbox, credit, a DeepSpeed learner update — completes with every other sample
scored as it deserves, and the attacker gets only failing verdicts."""
import pytest

from envs.chat import ChatFormat
from envs.environments import Environment
from envs.execution import Verdict
from envs.sandbox import make_executor
from envs.tasks import Task, TestCase
from rewards import REWARDS
from rl.advantages import estimator
from rl.config import load_config
from rl.credit import assign_credit
from rl.episode import run_episodes
from rl.metrics import step_metrics
from rl.rollout import Sample, SamplingSpec
from tests.conftest import REPO

TASK = Task("t/double", "Write a function `double(x)` that returns twice x.", "double",
            public_tests=(TestCase("call", "double(2)", "4"),),
            hidden_tests=(TestCase("call", "double(5)", "10"), TestCase("call", "double(-1)", "-2")))
RIGHT = "```python\ndef double(x):\n    return 2 * x\n```"
WRONG = "```python\ndef double(x):\n    return x + 2\n```"
ATTACKS = [
    # a real-time signal (no name in the signal module: naming it used to raise in the judge)
    "```python\nimport os, signal\ndef double(x):\n    os.kill(os.getpid(), signal.SIGRTMIN + 3)\n```",
    # exceptions with a meaning to the judge's own iteration, raised as if they were results
    "```python\ndef double(x):\n    raise StopIteration(2 * x)\n```",
    "```python\nimport sys\ndef double(x):\n    raise SystemExit(0)\n```",
]


class Script:
    """Turn 1: right, wrong, then the attacks; every revision: the right program."""

    def __init__(self, tokenizer, first):
        self.tokenizer, self.first = tokenizer, first

    def __call__(self, prompts, spec):
        if spec.n > 1:
            return [[self._sample(r) for r in self.first]]
        return [[self._sample(RIGHT)] for _ in prompts]

    def _sample(self, text):
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return Sample(ids, [-0.3] * len(ids), "stop")


@pytest.fixture(scope="module")
def executor():
    ex = make_executor(workers=2)
    yield ex
    ex.close()


def test_a_step_with_programs_that_attack_the_judge_completes(tiny_model, executor):
    from transformers import AutoTokenizer

    from rl.learner import Learner, learner_options
    from tests.records import train_step

    first = [RIGHT, WRONG, *ATTACKS, RIGHT]
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["rollout.tasks_per_step=1", f"rollout.samples_per_task={len(first)}",
                                                       "algo.micro_batch_size=2", "episode.feedback=execution"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    env = Environment(cfg.episode, cfg.sandbox, executor, [TASK])
    episodes = run_episodes([TASK], env, Script(tokenizer, first), ChatFormat(tokenizer), tokenizer,
                            samples_per_task=len(first), revisions=1, sampling=SamplingSpec(temperature=1.0, max_new_tokens=24),
                            weight_version=0, max_model_len=1024)
    assert [[t.correct for t in e.turns] for e in episodes] == [[True, True], [False, True], *[[False, True]] * len(ATTACKS), [True, True]]
    for e in episodes[2:2 + len(ATTACKS)]:   # the attackers pass nothing, whatever they tried
        assert all(r.verdict is not Verdict.PASS for r in e.turns[0].verdicts.public + e.turns[0].verdicts.hidden)
    est = estimator(cfg.algo.advantage)
    credited = assign_credit(cfg, 1, episodes, REWARDS.get("binary"), est)
    learner = Learner(tiny_model, **learner_options(cfg, est), master_port=29781)
    sums = train_step(learner, credited)
    assert sums["loss_count"] == 1 and sums["tokens_computed"] > 0   # one mini-batch, with episodes that carry signal
    assert step_metrics(credited, 2)["train/acc_t1"] == pytest.approx(2 / len(first))
