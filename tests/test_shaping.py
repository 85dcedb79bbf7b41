"""Reward shaping terms against hand-computed values."""
import pytest

from rl.credit import overlong_penalty, with_kl_penalty


def test_overlong_penalty_is_linear_in_the_buffer():
    # budget 100, buffer 20: free up to 80, -0.5 at 90, -1 at 100
    assert [overlong_penalty(n, 100, 20) for n in (10, 80, 90, 100, 120)] == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])


def test_kl_penalty_per_turn():
    assert with_kl_penalty([1.0, 0.0], [0.5, 2.0], [0.1, 0.05]) == pytest.approx([0.95, -0.1])
