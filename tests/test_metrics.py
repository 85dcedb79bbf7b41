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


# ---------------------------------------------------------------------------------------------
# pass@k, per-turn report with transition tables, n@k

from math import comb  # noqa: E402

from rl.metrics import pass_at_k, per_turn_report, sampled_report, transition_counts  # noqa: E402


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)        # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)        # pass@1 = c/n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)        # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(3, 3, 1) == 1.0
    assert pass_at_k(5, 4, 2) == 1.0                        # n - c < k: every draw of 2 has a correct one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 200])
def test_pass_at_k_matches_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_is_monotone_and_stable_for_large_n():
    values = [pass_at_k(1000, 3, k) for k in range(1, 1001)]
    assert all(a <= b + 1e-15 for a, b in zip(values, values[1:]))
    assert 0.0 <= values[0] <= values[-1] == 1.0
    assert pass_at_k(1000, 3, 1) == pytest.approx(0.003)


@pytest.mark.parametrize("n,c,k,error", [
    (5, 2, 6, ValueError),     # k > n
    (5, 2, 0, ValueError),     # k < 1
    (5, 6, 1, ValueError),     # c > n
    (5, -1, 1, ValueError),    # c < 0
    (0, 0, 1, ValueError),     # no samples
    (5.0, 2, 1, TypeError),
    (5, True, 1, TypeError),
])
def test_pass_at_k_rejects_bad_input(n, c, k, error):
    with pytest.raises(error):
        pass_at_k(n, c, k)


def test_transition_tables_three_turns_with_early_stops():
    correct = [
        [False, True, True],    # i->c, c->c
        [False, False, True],   # i->i, i->c
        [True],                 # stopped after a correct turn 1: c->c, c->c
        [False, True],          # stopped after turn 2 (carried): i->c, c->c
        [True, False, False],   # c->i, i->i
        [False],                # stopped wrong (e.g. context full): i->i, i->i
    ]
    t12, t23 = transition_counts(correct, 3)
    assert t12 == {"c2c": 1, "c2i": 1, "i2c": 2, "i2i": 2}
    assert t23 == {"c2c": 3, "c2i": 0, "i2c": 1, "i2i": 2}
    r = per_turn_report(correct, 3)
    assert [r["acc_t1"], r["acc_t2"], r["acc_t3"]] == pytest.approx([2 / 6, 3 / 6, 4 / 6])
    # turn 1 -> turn 3: i->c episodes 0, 1, 3; c->i episode 4
    assert r["delta_i2c"] == pytest.approx(3 / 6) and r["delta_c2i"] == pytest.approx(1 / 6)
    assert r["delta"] == pytest.approx(r["acc_t3"] - r["acc_t1"])
    assert r["episodes"] == 6
    assert [r[f"t1_t2_{x}"] for x in ("c2c", "c2i", "i2c", "i2i")] == [1, 1, 2, 2]
    assert [r[f"t2_t3_{x}"] for x in ("c2c", "c2i", "i2c", "i2i")] == [3, 0, 1, 2]
    assert r["delta_t1_t2"] == pytest.approx(1 / 6) and r["delta_t2_t3"] == pytest.approx(1 / 6)
    # flat name -> float, and the names the trainer and format_table rely on are all there
    assert all(isinstance(v, float) for v in r.values())
    for t in (1, 2):
        assert sum(r[f"t{t}_t{t + 1}_{x}"] for x in ("c2c", "c2i", "i2c", "i2i")) == len(correct)


def test_per_turn_report_two_turns_and_one_turn():
    correct = [[False, True], [True, True], [True, False], [False, False], [True]]
    r = per_turn_report(correct, 2)
    assert r == pytest.approx({**self_correction_report(correct, 2), "episodes": 5,
                               "t1_t2_c2c": 2, "t1_t2_c2i": 1, "t1_t2_i2c": 1, "t1_t2_i2i": 1})
    assert per_turn_report([[True], [False]], 1) == {"acc_t1": 0.5, "episodes": 2.0}


def test_sampled_report_pass_at_k_and_n_at_k_by_hand():
    # 2 tasks x 3 episodes, 2 turns (padded where an episode stopped after turn 1)
    task_a = [[False, True], [True], [False, False]]    # c_t1 = 1, c_t2 = 2
    task_b = [[False, False], [False, False], [False]]  # c_t1 = 0, c_t2 = 0
    r = sampled_report([task_a, task_b], 2, [1, 2, 3])
    assert r["pass@1_t1"] == pytest.approx((1 / 3 + 0) / 2)
    assert r["pass@1_t2"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["pass@2_t1"] == pytest.approx((1 - comb(2, 2) / comb(3, 2)) / 2)   # (1 - 1/3) / 2
    assert r["pass@2_t2"] == pytest.approx(1.0 / 2)                              # n - c = 1 < 2
    assert r["pass@3_t1"] == pytest.approx(0.5) and r["pass@1"] == r["pass@1_t1"]
    # n@(n*T): at least one of n episodes' final programs correct; one episode costs 2 samples
    assert r["1@2"] == pytest.approx(r["pass@1_t2"])
    assert r["2@4"] == pytest.approx(0.5) and r["3@6"] == pytest.approx(0.5)
    # by enumeration for task a: pairs of episodes {0,1}, {0,2}, {1,2}: finals (T, T), (T, F), (T, F)
    assert sampled_report([task_a], 2, [2])["2@4"] == pytest.approx(1.0)
    task_c = [[False, True], [False, False], [False, False]]
    assert sampled_report([task_c], 2, [2])["2@4"] == pytest.approx(2 / 3)


def test_sampled_report_greedy_single_episode_equals_accuracy():
    correct = [[False, True], [True, True], [True, False], [False]]
    r = sampled_report([[c] for c in correct], 2, [1])
    acc = accuracy_at(correct, 2)
    assert [r["pass@1_t1"], r["pass@1_t2"], r["1@2"]] == pytest.approx([acc[0], acc[1], acc[1]])


@pytest.mark.parametrize("per_task,ks", [
    ([[[True]], [[True], [False]]], [1]),   # tasks with different episode counts
    ([[[True], [False]]], [3]),             # k > episodes per task
    ([[[True], [False]]], [0]),
    ([], [1]),
])
def test_sampled_report_rejects_bad_input(per_task, ks):
    with pytest.raises(ValueError):
        sampled_report(per_task, 1, ks)
