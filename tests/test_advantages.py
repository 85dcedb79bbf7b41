"""Per-turn returns and group baselines against hand-computed values."""
import pytest

from rl.advantages import ADVANTAGES, discounted_returns, grpo, rloo, turn_advantages


def test_discounted_returns():
    assert discounted_returns([1.0, 0.0, 2.0], 1.0) == [3.0, 2.0, 2.0]
    assert discounted_returns([1.0, 0.0, 2.0], 0.5) == [1.5, 1.0, 2.0]
    assert discounted_returns([1.0, 0.0, 2.0], 0.0) == [1.0, 0.0, 2.0]


def test_grpo_normalises_by_population_std():
    # mean 0.5, population std 0.5
    assert grpo([1.0, 0.0, 1.0, 0.0]) == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-5)
    # mean 1, std sqrt(2/3)
    assert grpo([0.0, 1.0, 2.0]) == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert grpo([1.0, 1.0]) == [0.0, 0.0]       # no signal, no update
    assert grpo([1.0]) == [0.0]                 # no baseline


def test_rloo_leaves_one_out():
    assert rloo([1.0, 0.0, 0.0]) == pytest.approx([1.0, -0.5, -0.5])
    assert rloo([3.0]) == [0.0]


def test_turn_advantages_group_by_task_and_turn():
    # Two tasks; episode 2 stopped after turn 1, so turn 2 of task "a" has two members.
    rewards = [[0.0, 1.0], [1.0, 1.0], [0.0], [1.0, 0.0], [0.0, 0.0]]
    groups = ["a", "a", "a", "b", "b"]
    adv = turn_advantages(rewards, groups, ADVANTAGES.get("rloo"), gamma=1.0)
    # task a, turn 1 returns: 1, 2, 0 -> rloo: 1-1, 2-0.5, 0-1.5
    assert [a[0] for a in adv[:3]] == pytest.approx([0.0, 1.5, -1.5])
    # task a, turn 2 returns: 1, 1 -> 0, 0 (episode 2 has no turn 2)
    assert adv[0][1] == 0.0 and adv[1][1] == 0.0 and len(adv[2]) == 1
    # task b: turn 1 returns 1, 0 -> +1, -1 ; turn 2 returns 0, 0 -> 0
    assert adv[3] == pytest.approx([1.0, 0.0]) and adv[4] == pytest.approx([-1.0, 0.0])


def test_turn_advantages_with_gamma_zero_use_own_turn_reward():
    adv = turn_advantages([[1.0, 0.0], [0.0, 0.0]], ["a", "a"], ADVANTAGES.get("grpo"), gamma=0.0)
    assert adv[0][0] == pytest.approx(1.0, abs=1e-5) and adv[1][0] == pytest.approx(-1.0, abs=1e-5)
    assert adv[0][1] == 0.0 and adv[1][1] == 0.0
