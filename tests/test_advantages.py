"""Per-turn returns and baselines against hand-computed values."""
import pytest

from rl.advantages import discounted_returns, drgrpo, grpo, reinforce_pp, rloo, turn_advantages, uniform_groups


def test_discounted_returns():
    assert discounted_returns([1.0, 0.0, 2.0], 1.0) == [3.0, 2.0, 2.0]
    assert discounted_returns([1.0, 0.0, 2.0], 0.5) == [1.5, 1.0, 2.0]
    assert discounted_returns([1.0, 0.0, 2.0], 0.0) == [1.0, 0.0, 2.0]


def test_grpo_normalises_by_population_std():
    # mean 0.5, population std 0.5 | mean 1, std sqrt(2/3)
    a, b = grpo([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    assert a == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-5)
    assert b == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert grpo([[1.0, 1.0], [1.0]]) == [[0.0, 0.0], [0.0]]   # no signal / no baseline: no update


def test_drgrpo_only_centres():
    assert drgrpo([[1.0, 0.0, 0.0, 0.0], [5.0]]) == [[0.75, -0.25, -0.25, -0.25], [0.0]]


def test_rloo_leaves_one_out():
    assert rloo([[1.0, 0.0, 0.0], [3.0]]) == [pytest.approx([1.0, -0.5, -0.5]), [0.0]]


def test_reinforce_pp_normalises_over_the_whole_batch():
    # centred: [1, -1] and [2, -2, 0]; std of all five: sqrt((1+1+4+4+0)/5) = sqrt(2)
    a, b = reinforce_pp([[1.0, -1.0], [3.0, -1.0, 1.0]])
    s = 2 ** 0.5
    assert a == pytest.approx([1 / s, -1 / s], abs=1e-5) and b == pytest.approx([2 / s, -2 / s, 0.0], abs=1e-5)


def test_turn_advantages_group_by_key():
    # Two tasks; episode 2 stopped after turn 1, so turn 2 of task "a" has two members.
    rewards = [[0.0, 1.0], [1.0, 1.0], [0.0], [1.0, 0.0], [0.0, 0.0]]
    keys = [[("a", 0), ("a", 1)], [("a", 0), ("a", 1)], [("a", 0)], [("b", 0), ("b", 1)], [("b", 0), ("b", 1)]]
    adv = turn_advantages(rewards, keys, rloo, gamma=1.0)
    # task a, turn 1 returns: 1, 2, 0 -> rloo: 1-1, 2-0.5, 0-1.5
    assert [a[0] for a in adv[:3]] == pytest.approx([0.0, 1.5, -1.5])
    # task a, turn 2 returns: 1, 1 -> 0, 0 (episode 2 has no turn 2)
    assert adv[0][1] == 0.0 and adv[1][1] == 0.0 and len(adv[2]) == 1
    # task b: turn 1 returns 1, 0 -> +1, -1 ; turn 2 returns 0, 0 -> 0
    assert adv[3] == pytest.approx([1.0, 0.0]) and adv[4] == pytest.approx([-1.0, 0.0])
    with pytest.raises(ValueError, match="1 baseline keys for 2 turns"):
        turn_advantages([[0.0, 1.0]], [[("a", 0)]], rloo, 1.0)


def test_turn_two_baseline_over_revisions_of_the_same_attempt():
    # Attempt 0 (wrong) was revised twice: one fixed it. Attempt 1 (right) twice: one broke it.
    rewards = [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]
    keys = [[("t", 0), ("t", 1, 0)], [("t", 0), ("t", 1, 0)], [("t", 0), ("t", 1, 1)], [("t", 0), ("t", 1, 1)]]
    adv = turn_advantages(rewards, keys, drgrpo, gamma=0.0)
    assert [a[1] for a in adv] == [0.5, -0.5, 0.5, -0.5]          # each revision vs its sibling
    assert [a[0] for a in adv] == [-0.5, -0.5, 0.5, 0.5]          # gamma 0: turn 1 on its own reward


def test_turn_advantages_with_gamma_zero_use_own_turn_reward():
    keys = [[("a", 0), ("a", 1)]] * 2
    adv = turn_advantages([[1.0, 0.0], [0.0, 0.0]], keys, grpo, gamma=0.0)
    assert adv[0][0] == pytest.approx(1.0, abs=1e-5) and adv[1][0] == pytest.approx(-1.0, abs=1e-5)
    assert adv[0][1] == 0.0 and adv[1][1] == 0.0


def test_uniform_groups_are_the_ones_without_signal():
    rewards = [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0], [0.0]]
    assert uniform_groups(rewards, ["a", "a", "b", "b", "c", "c"]) == {"a", "c"}
