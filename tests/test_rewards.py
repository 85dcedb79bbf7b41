"""Every built-in turn-level reward against hand-computed values, and the plug-in safety net."""
import time
from types import SimpleNamespace

import pytest

from rewards import REWARDS, RewardError, compute_turn_rewards
from rl.config import RewardConfig
from tests.records import turn

TASK = SimpleNamespace(task_id="t0")
WRONG = turn(1, 4, 1, 2)        # passes 1/4 hidden
RIGHT = turn(4, 4, 2, 2)
HALF = turn(2, 4, 2, 2)
NO_CODE = turn(0, 4, 0, 2, code=None)


def reward(name, turns, **cfg):
    return compute_turn_rewards(REWARDS.get(name), name, turns, TASK, RewardConfig(**cfg)).rewards


def test_correct_needs_every_hidden_and_public_test():
    assert RIGHT.correct and not HALF.correct and not NO_CODE.correct
    assert not turn(4, 4, 1, 2).correct


def test_binary_and_fraction():
    assert reward("binary", [WRONG, RIGHT]) == [0.0, 1.0]
    assert reward("fraction", [WRONG, HALF, NO_CODE]) == [0.25, 0.5, 0.0]


@pytest.mark.parametrize("gamma, expected", [(0.0, [0.0, 0.75]), (0.5, [0.125, 0.75])])
def test_cocos_wrong_then_right(gamma, expected):
    # c1 = 0.25, c2 = 1.0: r1 = gamma * 0.25, r2 = 1.0 - 0.25; sum = c2 - (1 - gamma) c1
    r = reward("cocos", [WRONG, RIGHT], gamma=gamma)
    assert r == pytest.approx(expected)
    assert sum(r) == pytest.approx(1.0 - (1 - gamma) * 0.25)


def test_cocos_penalises_regression_and_raw_counts():
    assert reward("cocos", [RIGHT, WRONG], gamma=0.5) == pytest.approx([0.5, -0.75])
    assert reward("cocos", [WRONG, HALF], gamma=0.5, normalize_counts=False) == pytest.approx([0.5, 1.0])
    assert reward("cocos", [RIGHT], gamma=0.5) == pytest.approx([1.0])   # single turn: gamma^0 * c1


def test_score_stage_one_rewards_only_the_last_turn():
    assert reward("score", [WRONG, RIGHT], score_stage=1) == [0.0, 1.0]
    assert reward("score", [RIGHT, RIGHT], score_stage=1) == [0.0, 1.0]


def test_score_stage_two_bonus():
    # r1 = r(y1); r2 = r(y2) + alpha (r(y2) - r(y1))
    assert reward("score", [WRONG, RIGHT], score_stage=2, alpha=10.0) == [0.0, 11.0]
    assert reward("score", [RIGHT, WRONG], score_stage=2, alpha=10.0) == [1.0, -10.0]
    assert reward("score", [RIGHT, RIGHT], score_stage=2, alpha=10.0) == [1.0, 1.0]


def test_rlef_final_outcome_and_no_code_penalty():
    assert reward("rlef", [NO_CODE, WRONG, RIGHT]) == pytest.approx([-0.2, 0.0, 1.0])
    assert reward("rlef", [WRONG, NO_CODE]) == pytest.approx([0.0, -1.2])
    assert reward("rlef", [RIGHT]) == [1.0]


def test_plugin_from_file(tmp_path):
    plugin = tmp_path / "my_reward.py"
    plugin.write_text("def shaped(turns, task, config):\n    return [t.verdicts.hidden_fraction * 2 for t in turns]\n")
    fn = REWARDS.get(f"{plugin}:shaped")
    assert compute_turn_rewards(fn, "shaped", [HALF], TASK, RewardConfig()).rewards == [1.0]


def test_plugin_that_raises_names_the_task():
    def broken(turns, task, config):
        raise ZeroDivisionError("boom")
    with pytest.raises(RewardError, match=r"reward 'broken' \(native\) on task 't0' raised ZeroDivisionError: boom"):
        compute_turn_rewards(broken, "broken", [RIGHT], TASK, RewardConfig())


def test_plugin_that_hangs_times_out():
    def hangs(turns, task, config):
        time.sleep(30)
    start = time.monotonic()
    with pytest.raises(RewardError, match="did not return within reward.timeout_s=0.2s"):
        compute_turn_rewards(hangs, "hangs", [RIGHT], TASK, RewardConfig(timeout_s=0.2))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("value, message", [
    ([1.0], "returned 1 rewards for 2 turns"),
    (None, "expected 2 numbers"),
    ([1.0, float("nan")], "non-finite"),
])
def test_plugin_with_wrong_output_shape(value, message):
    with pytest.raises(RewardError, match=message):
        compute_turn_rewards(lambda *a: value, "bad", [RIGHT, RIGHT], TASK, RewardConfig())


def test_unknown_reward_name_suggests():
    with pytest.raises(KeyError, match="did you mean 'binary'|Did you mean 'binary'"):
        REWARDS.get("binry")
