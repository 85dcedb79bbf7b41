"""Environments and episode records: code extraction, feedback, the exact token layout of a
multi-turn conversation, and the loss mask. The policy here is a script of replies (the vLLM path
is in test_e2e.py); tokenizer and sandbox are the real ones."""
import collections
import dataclasses

import pytest

from envs.chat import INSTRUCTION_FEEDBACK, ChatFormat, execution_feedback, extract_code, first_user_message
from envs.environments import Environment, Opening, Verdicts, make_environment
from envs.execution import TestResult, Verdict
from envs.repair import FaultyPrograms
from envs.sandbox import make_executor
from envs.tasks import Task, TestCase
from rl.advantages import ENV_TURN
from rl.config import EpisodeConfig, SandboxConfig
from rl.credit import baseline_keys
from rl.episode import Credit, Episode, Turn, run_episodes
from rl.metrics import step_metrics
from rl.rollout import Sample, SamplingSpec

TASK = Task(
    "t/double", "Write a function `double(x)` that returns twice x.", "double",
    public_tests=(TestCase("call", "double(2)", "4"), TestCase("call", "double(0)", "0")),
    hidden_tests=(TestCase("call", "double(5)", "10"), TestCase("call", "double(-1)", "-2")),
)
RIGHT = "Here it is:\n```python\ndef double(x):\n    return 2 * x\n```"
WRONG = "```python\ndef double(x):\n    return x + 2\n```"
NO_CODE = "I think you should multiply by two."


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def executor():
    ex = make_executor(workers=2)
    yield ex
    ex.close()


# ----------------------------------------------------------------------------- code and feedback

@pytest.mark.parametrize("reply, code", [
    (RIGHT, "def double(x):\n    return 2 * x"),
    ("```py\nx = 1\n```\nbetter:\n```python3\nx = 2\n```", "x = 2"),          # the last block wins
    ("```\nplain = True\n```", "plain = True"),                               # no language tag
    ("```python\ndef f():\n    return 1", "def f():\n    return 1"),          # cut off by the token budget
    ("```python\n\n```", None),                                               # an empty block
    (NO_CODE, None),
    ("", None),
])
def test_extract_code(reply, code):
    assert extract_code(reply) == code


def _result(*verdicts, got=""):
    return tuple(TestResult(v, "boom" if v is Verdict.ERROR else "", got) for v in verdicts)


def test_instruction_feedback_is_the_generic_note_whatever_happened(executor):
    from envs.environments import Reply
    env = Environment(EpisodeConfig(feedback="instruction"), SandboxConfig(), executor, [TASK])
    results = env.step([Reply(TASK, 0, NO_CODE), Reply(TASK, 0, WRONG)])
    assert [r.feedback for r in results] == [INSTRUCTION_FEEDBACK] * 2
    assert results[1].verdicts.public_passed == 1 and results[1].verdicts.hidden_passed == 0
    assert not results[0].verdicts.has_code and results[0].verdicts.public == ()


def test_execution_feedback_shows_failing_public_tests():
    text = execution_feedback(_result(Verdict.FAIL, Verdict.PASS, got="5"), TASK, 800, 3)
    assert text.splitlines()[:4] == ["Your code failed the following tests:", "- Input: double(2)", "  Expected: 4", "  Got: 5"]
    assert "double(0)" not in text   # passing tests are not shown
    error = execution_feedback(_result(Verdict.PASS, Verdict.ERROR), TASK, 800, 3)
    assert "- Test: double(0) == 0\n  Result: error: boom" in error
    timeout = execution_feedback(_result(Verdict.TIMEOUT, Verdict.PASS), TASK, 800, 3)
    assert "Result: took too long" in timeout


def test_execution_feedback_limits_failures_and_length():
    many = Task("t/many", "p", "f", tuple(TestCase("call", f"f({i})", str(i)) for i in range(6)), (TestCase("call", "f(9)", "9"),))
    text = execution_feedback(_result(*[Verdict.FAIL] * 6, got="0"), many, 800, 2)
    assert text.count("- Input:") == 2 and "... and 4 more." in text
    short = execution_feedback(_result(*[Verdict.FAIL] * 6, got="x" * 300), many, 120, 6)
    assert len(short) <= 120 and short.endswith("...(truncated)")


def test_execution_feedback_for_a_reply_without_code():
    assert "did not contain a Python code block" in execution_feedback(None, TASK, 800, 3)


# ----------------------------------------------------------------------------- token layout

def test_appended_turns_render_like_the_chat_template(tokenizer):
    """Context built by appending ids == the template's rendering of the whole conversation,
    whether or not the reply ended with its own EOS token."""
    chat = ChatFormat(tokenizer)
    first = chat.first_prompt_ids(first_user_message(TASK))
    reply = tokenizer.encode(RIGHT, add_special_tokens=False)
    messages = [{"role": "user", "content": TASK.prompt + "\n\nWrite your solution as one Python code block (```python ... ```)."},
                {"role": "assistant", "content": RIGHT}, {"role": "user", "content": "Fix it."}]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert first == list(tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True, return_dict=False))
    for reply_ids in (reply, reply + [tokenizer.eos_token_id]):
        context = first + reply_ids + chat.feedback_ids("Fix it.", reply_ids)
        assert tokenizer.decode(context) == expected


# ----------------------------------------------------------------------------- episodes

class ScriptedPolicy:
    """Replies from a script, one list per prompt in call order; records what it was shown."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.prompts = tokenizer, list(script), []

    def __call__(self, prompts, spec):
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            replies = self.script.pop(0)
            assert len(replies) == spec.n
            out.append([self._sample(r) for r in replies])
        return out

    def _sample(self, text):
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return Sample(ids, [-0.5] * len(ids), "stop")


def _run(tokenizer, executor, script, samples=3, max_model_len=2048, revisions=1, env_class=Environment, **episode):
    policy = ScriptedPolicy(tokenizer, script)
    cfg = EpisodeConfig(**{"max_turns": 2, "feedback": "execution", **episode})
    env = env_class(cfg, SandboxConfig(), executor, [TASK])
    episodes = run_episodes([TASK], env, policy, ChatFormat(tokenizer), tokenizer, samples_per_task=samples, revisions=revisions,
                            sampling=SamplingSpec(temperature=1.0, max_new_tokens=64), weight_version=7, max_model_len=max_model_len)
    return episodes, policy


def _credited(episode, advantages):
    n = len(episode.turns)
    return dataclasses.replace(episode, credit=Credit((0.0,) * n, (0.0,) * n, tuple(advantages), (0.0,) * n, ()))


def _correct(episodes):
    return [[t.correct for t in e.turns] for e in episodes]


def test_episodes_revise_after_feedback_and_stop_on_public_pass(tokenizer, executor):
    # Turn 1: right, wrong, no code. Turn 2 (only the two that failed): right, right.
    episodes, policy = _run(tokenizer, executor, [[RIGHT, WRONG, NO_CODE], [RIGHT], [RIGHT]], stop_on_public_pass=True)
    assert [len(e.turns) for e in episodes] == [1, 2, 2]
    assert all(e.weight_version == 7 for e in episodes)
    wrong, no_code = episodes[1], episodes[2]
    assert wrong.turns[0].verdicts.public_passed == 1 and wrong.turns[0].verdicts.hidden_passed == 0
    assert wrong.turns[0].feedback.startswith("Your code failed the following tests:\n- Input: double(0)\n  Expected: 0\n  Got: 2")
    assert no_code.turns[0].code is None and no_code.turns[0].verdicts.public == ()   # a turn, not a crash
    assert "did not contain a Python code block" in no_code.turns[0].feedback
    assert _correct(episodes) == [[True], [False, True], [False, True]]
    assert episodes[0].turns[0].feedback is None and wrong.turns[1].feedback is None   # nothing followed them
    # The revision prompt is the whole conversation so far: first prompt, turn-1 reply, feedback.
    t1 = wrong.turns[0]
    assert policy.prompts[1] == t1.prompt_ids + t1.response_ids + wrong.turns[1].prompt_ids


def test_episodes_continue_after_a_public_pass_when_asked(tokenizer, executor):
    episodes, _ = _run(tokenizer, executor, [[RIGHT, RIGHT], [WRONG], [RIGHT]], samples=2, stop_on_public_pass=False)
    assert [len(e.turns) for e in episodes] == [2, 2]
    assert _correct(episodes) == [[True, False], [True, True]]


def test_an_episode_ends_when_the_next_turn_would_not_fit(tokenizer, executor):
    first_prompt = len(ChatFormat(tokenizer).first_prompt_ids(first_user_message(TASK)))
    reply = len(tokenizer.encode(WRONG, add_special_tokens=False)) + 1
    episodes, policy = _run(tokenizer, executor, [[WRONG, WRONG]], samples=2, max_model_len=first_prompt + reply + 64 + 10)
    assert [len(e.turns) for e in episodes] == [1, 1] and not policy.script and episodes[0].turns[0].feedback is None


def test_layout_masks_exactly_the_policy_tokens(tokenizer, executor):
    (e,), _ = _run(tokenizer, executor, [[WRONG], [RIGHT]], samples=1)
    layout = e.layout
    t1, t2 = e.turns
    assert layout.token_ids == t1.prompt_ids + t1.response_ids + t2.prompt_ids + t2.response_ids
    assert layout.loss_mask == [0] * len(t1.prompt_ids) + [1] * len(t1.response_ids) + [0] * len(t2.prompt_ids) + [1] * len(t2.response_ids)
    assert layout.turn_ids == [ENV_TURN] * len(t1.prompt_ids) + [0] * len(t1.response_ids) + [ENV_TURN] * len(t2.prompt_ids) + [1] * len(t2.response_ids)
    assert [lp for lp, m in zip(layout.rollout_logprobs, layout.loss_mask) if m] == t1.response_logprobs + t2.response_logprobs
    assert e.weight_version == 7
    advantages = _credited(e, [-0.5, 2.0]).token_advantages()
    assert {a for a, t in zip(advantages, layout.turn_ids) if t == 0} == {-0.5}
    assert {a for a, t in zip(advantages, layout.turn_ids) if t == 1} == {2.0}
    assert {a for a, t in zip(advantages, layout.turn_ids) if t == ENV_TURN} == {0.0}
    row = _credited(e, [-0.5, 2.0]).to_json()   # the one rollout serialisation
    assert row["token_ids"] == layout.token_ids and list(row["credit"]["advantages"]) == [-0.5, 2.0]
    assert [t["feedback"] for t in row["turns"]] == [t1.feedback, None] and t1.feedback


def test_revisions_of_one_attempt_share_it_and_their_baseline(tokenizer, executor):
    # 2 attempts x 2 revisions: the first-turn sample is drawn once per attempt and shared.
    episodes, policy = _run(tokenizer, executor, [[WRONG, NO_CODE], [RIGHT], [WRONG], [RIGHT], [NO_CODE]],
                            samples=4, revisions=2)
    assert [e.attempt for e in episodes] == [0, 0, 1, 1]
    assert episodes[0].turns[0] is episodes[1].turns[0] and episodes[2].turns[0] is episodes[3].turns[0]
    assert episodes[0].turns[0].verdicts.public != ()             # executed once, seen by both
    assert _correct(episodes) == [[False, True], [False, False], [False, True], [False, False]]
    assert baseline_keys(episodes[1], 2) == [("t/double", 0), ("t/double", 1, 0)]
    assert baseline_keys(episodes[2], 2) == [("t/double", 0), ("t/double", 1, 1)]
    assert baseline_keys(episodes[2], 1) == [("t/double", 0), ("t/double", 1)]
    with pytest.raises(ValueError, match="not a multiple"):
        _run(tokenizer, executor, [[RIGHT]], samples=3, revisions=2)


class OneFaultyAttempt(Environment):
    """Seeds every task's first attempts with one faulty program (the repair environment's shape)."""

    def open(self, tasks, attempts):
        return [Opening(o.message, [f"```python\n{FAULTY}\n```"] * attempts) for o in super().open(tasks, attempts)]


FAULTY = "def double(x):\n    return x * 3"


def test_seeded_first_turns_are_executed_but_never_trained(tokenizer, executor):
    (e,), policy = _run(tokenizer, executor, [[RIGHT]], samples=1, env_class=OneFaultyAttempt)
    first, second = e.turns
    assert first.seeded and first.code == FAULTY and first.verdicts.hidden_passed == 0
    assert "Expected: 4" in first.feedback and len(policy.prompts) == 1   # only the revision was sampled
    assert _correct([e]) == [[False, True]]
    assert sum(e.layout.loss_mask) == len(second.response_ids)           # the seeded reply is environment text
    assert set(e.layout.turn_ids) == {ENV_TURN, 1}


def test_the_repair_environment_seeds_verified_faulty_programs(tokenizer, executor, tmp_path):
    source = tmp_path / "faulty.jsonl"
    source.write_text('{"task_id": "t/double", "program": "def double(x):\\n    return 2 * x"}\n'   # passes: dropped
                      '{"task_id": "t/double", "program": "def double(x):\\n    return x - 2"}\n')
    cfg = EpisodeConfig(max_turns=2, feedback="execution", seeded_first_turns=1.0, first_turns=str(source))
    env = make_environment("repair", cfg, SandboxConfig(), executor, [TASK])
    assert env.faulty.programs == {"t/double": ["def double(x):\n    return x - 2"]}
    (opening,) = env.open([TASK], 2)
    assert opening.first_replies == ["```python\ndef double(x):\n    return x - 2\n```"] * 2


def test_the_repair_environment_seeds_correct_programs_to_keep(tokenizer, executor):
    task = dataclasses.replace(TASK, reference_solution='def double(x):\n    """Twice x."""\n    result = 2 * x\n    return result\n')
    broken = dataclasses.replace(TASK, task_id="t/broken", reference_solution="def double(x):\n    return x\n")
    cfg = EpisodeConfig(max_turns=2, feedback="execution", seeded_first_turns=0.0, seeded_correct_turns=1.0)
    env = make_environment("repair", cfg, SandboxConfig(), executor, [task, broken])
    # rewritten (docstring dropped, the local renamed) and verified: the one that fails is left out
    assert env.correct == {"t/double": "def double(x):\n    out = 2 * x\n    return out\n"}
    opened, own = env.open([task, broken], 2)
    assert opened.first_replies == ["```python\ndef double(x):\n    out = 2 * x\n    return out\n```"] * 2
    assert own.first_replies is None


def test_the_repair_environment_draws_faulty_correct_and_own_first_attempts_by_share(tokenizer, executor):
    task = dataclasses.replace(TASK, reference_solution="def double(x):\n    return 2 * x\n")
    cfg = EpisodeConfig(max_turns=2, feedback="execution", seeded_first_turns=0.25, seeded_correct_turns=0.5)
    env = make_environment("repair", cfg, SandboxConfig(), executor, [task])
    env.faulty = FaultyPrograms({"t/double": ["def double(x):\n    return x - 2"]})
    kinds = collections.Counter()
    for _ in range(400):
        (o,) = env.open([task], 1)
        kinds["own" if o.first_replies is None else "faulty" if "x - 2" in o.first_replies[0] else "correct"] += 1
    assert 70 < kinds["faulty"] < 130 and 170 < kinds["correct"] < 230 and 70 < kinds["own"] < 130, kinds


def test_step_metrics_report_the_fix_and_keep_rates_of_seeded_episodes():
    def episode(first_correct, last_correct, seeded=True):
        turns = [Turn([1], [2], [0.0], "stop", "", Verdicts("x" if ok else None), seeded=s)
                 for ok, s in ((first_correct, seeded), (last_correct, False))]
        return Episode(TASK, 0, 0, 0, turns, Credit((0.0, float(last_correct)), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), ()))

    m = step_metrics([episode(False, True), episode(False, False), episode(True, True), episode(True, False),
                      episode(True, True), episode(False, True, seeded=False)], 2)
    assert m["repair/fixed"] == 0.5 and m["repair/kept"] == pytest.approx(2 / 3) and m["repair/seeded_fraction"] == pytest.approx(5 / 6)
    assert "repair/kept" not in step_metrics([episode(False, True)], 2)
