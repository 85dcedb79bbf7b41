"""PPO's critic-based advantages against hand-computed values."""
import pytest

from rl.advantages import ENV_TURN as E, gae, token_steps, turn_steps, whiten


def test_gae_lambda_one_is_monte_carlo_and_zero_is_td():
    adv, ret = gae([0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], lam=1.0)
    assert adv == pytest.approx([0.5, 0.5, 0.5]) and ret == pytest.approx([1.0, 1.0, 1.0])
    adv, ret = gae([0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], lam=0.0)
    assert adv == pytest.approx([0.0, 0.0, 0.5]) and ret == pytest.approx([0.5, 0.5, 1.0])


def test_gae_with_discount_and_lambda():
    # deltas: 0.4 - 0.2 = 0.2; 0.9 * 0.6 - 0.4 = 0.14; 1 - 0.6 = 0.4
    # A2 = 0.4; A1 = 0.14 + 0.9 * 0.5 * 0.4 = 0.32; A0 = 0.2 + 0.5 * 0.32 = 0.36
    adv, ret = gae([0.0, 0.0, 1.0], [0.2, 0.4, 0.6], [1.0, 0.9, 0.3], lam=0.5)
    assert adv == pytest.approx([0.36, 0.32, 0.4])
    assert ret == pytest.approx([0.56, 0.72, 1.0])


TURN_IDS = [E, E, 0, 0, E, 1, 1]


def test_token_steps_read_the_state_before_each_policy_token():
    actions, positions, rewards, discounts = token_steps(TURN_IDS, [1.0, 2.0], gamma=0.5)
    assert actions == [2, 3, 5, 6] and positions == [1, 2, 4, 5]
    assert rewards == [0.0, 1.0, 0.0, 2.0]            # each turn's reward at its last token
    assert discounts == [1.0, 0.5, 1.0, 0.5]          # gamma only across the turn boundary


def test_turn_steps_read_the_end_of_each_prompt():
    turns, positions, rewards, discounts = turn_steps(TURN_IDS, [1.0, 2.0], gamma=0.5)
    assert turns == [0, 1] and positions == [1, 4] and rewards == [1.0, 2.0] and discounts == [0.5, 0.5]
    # a seeded first turn (environment text) is not a step
    assert turn_steps([E, E, E, 1, 1], [0.0, 1.0], 1.0)[:3] == ([1], [2], [1.0])


def test_whiten_over_the_batch():
    assert whiten([[1.0, 3.0], [2.0]]) == [pytest.approx([-1.2247, 1.2247], abs=1e-4), pytest.approx([0.0], abs=1e-6)]
