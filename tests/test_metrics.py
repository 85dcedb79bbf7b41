"""Self-correction metrics against a hand-counted transition table."""
import pytest

from rl.metrics import accuracy_at, self_correction_report, transitions


def test_transition_table():
    # 5 episodes: i->c, c->c, c->i, i->i, and one that stopped after a correct turn 1 (c, carried)
    correct = [[False, True], [True, True], [True, False], [False, False], [True]]
    assert accuracy_at(correct, 2) == pytest.approx([3 / 5, 3 / 5])
    t = transitions(correct, 2)
    assert t["delta_i2c"] == pytest.approx(1 / 5)
    assert t["delta_c2i"] == pytest.approx(1 / 5)
    assert t["delta"] == pytest.approx(0.0)


def test_report_names_and_three_turns():
    correct = [[False, False, True], [False, True, True], [True, True, False], [False]]
    r = self_correction_report(correct, 3)
    assert r["acc_t1"] == pytest.approx(0.25) and r["acc_t2"] == pytest.approx(0.5) and r["acc_t3"] == pytest.approx(0.5)
    assert r["delta_i2c"] == pytest.approx(0.5) and r["delta_c2i"] == pytest.approx(0.25)
    assert r["delta"] == pytest.approx(r["acc_t3"] - r["acc_t1"])
