"""The recipes' credit assignment, end to end over plain data: turn scores -> rewards -> KL
shaping -> per-turn advantages and KL weights, worked by hand, through the shipped presets."""
import pytest

from envs.tasks import Task, TestCase
from rewards import REWARDS
from rl.advantages import ENV_TURN, estimator
from rl.config import load_config
from rl.credit import assign_credit, passes_needed, schedule
from rl.episode import Episode
from tests.conftest import REPO
from tests.records import turn

TASK = Task("t", "p", "f", (TestCase("call", "f(0)", "0"),), (TestCase("call", "f(1)", "1"), TestCase("call", "f(2)", "2")))


def _episodes(outcomes, revisions=1, response_len=3):
    """outcomes[i] = hidden tests passed per turn (of 2; the public test passes with all hidden)."""
    return [Episode(TASK, i, i // revisions, 0, [turn(p, 2, 1 if p == 2 else 0, 1, response_len=response_len) for p in passed])
            for i, passed in enumerate(outcomes)]


def reference_with_turn_kl(episode, kl):
    """Reference logprobs that make each turn's mean log(pi_rollout / pi_ref) exactly kl[t]."""
    layout = episode.layout
    return [lp - kl[t] if t != ENV_TURN else 0.0 for lp, t in zip(layout.rollout_logprobs, layout.turn_ids)]


def _credit(recipe, step, outcomes, overrides=(), turn_kl=None, revisions=1, episodes=None):
    """Credit for the episodes under a shipped recipe, with hand-picked per-turn KL in the place
    of the learner's reference pass; also returns which passes the recipe asks for."""
    cfg = load_config(REPO / "configs" / f"{recipe}.yaml", list(overrides))
    episodes = episodes or _episodes(outcomes, revisions)
    est = estimator(cfg.algo.advantage)
    asked = passes_needed(cfg.algo, est)
    reference = [reference_with_turn_kl(e, k) for e, k in zip(episodes, turn_kl)] if turn_kl is not None else None
    credited = assign_credit(cfg, step, episodes, REWARDS.get(cfg.reward.name), est, reference)
    return cfg, [list(e.credit.rewards) for e in credited], [e.credit for e in credited], asked


def test_score_stage_one_rewards_the_second_attempt_for_both_turns():
    # correct (turn1, turn2): (no, yes), (yes, yes), (no, no)
    cfg, rewards, trajs, _ = _credit("score", 10, [(0, 2), (2, 2), (0, 0)])
    assert rewards == [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    # gamma 1 in stage I: turn-1 returns are r(y2) = 1, 1, 0 -> RLOO 0.5, 0.5, -1
    assert [t.advantages for t in trajs] == [pytest.approx([0.5, 0.5]), pytest.approx([0.5, 0.5]), pytest.approx([-1.0, -1.0])]
    assert trajs[0].kl_coefs == (0.25, 0.01)      # beta2 on the first attempt, beta1 after


def test_score_stage_two_gives_each_turn_its_reward_and_the_bonus():
    cfg, rewards, trajs, _ = _credit("score", 11, [(0, 2), (2, 2), (0, 0)])
    # r1 = r(y1); r2 = r(y2) + 10 (r(y2) - r(y1))
    assert rewards == [[0.0, 11.0], [1.0, 1.0], [0.0, 0.0]]
    # gamma 0: turn 1 returns 0, 1, 0 -> RLOO -0.5, 1, -0.5; turn 2 returns 11, 1, 0 -> 10.5, -4.5, -6
    assert [t.advantages[0] for t in trajs] == pytest.approx([-0.5, 1.0, -0.5])
    assert [t.advantages[1] for t in trajs] == pytest.approx([10.5, -4.5, -6.0])
    assert trajs[0].kl_coefs == (0.01, 0.01)      # beta1 everywhere
    assert schedule(cfg, 11).reward.score_stage == 2 and schedule(cfg, 1).reward.score_stage == 1


# Two attempts per task, each revised twice: A (1 of 2 hidden tests) -> 2 of 2 and 1 of 2;
# B (0 of 2) -> 0 and 2 of 2.
COCOS_OUTCOMES = [(1, 2), (1, 1), (0, 0), (0, 2)]


def test_cocos_gamma_half_with_kl_in_reward_and_per_turn_baselines():
    kl = [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    cfg, rewards, trajs, kl_calls = _credit("cocos", 1, COCOS_OUTCOMES, turn_kl=kl, revisions=2)
    # r1 = 0.5 c1, r2 = c2 - c1 (fractions): R = c2 - 0.5 c1
    assert rewards == [[0.25, 0.5], [0.25, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert kl_calls == (True, False)   # the recipe asks for the reference pass only
    # minus 0.01 x KL per turn: A1 -> [0.24, 0.48]
    assert list(trajs[0].shaped_rewards) == pytest.approx([0.24, 0.48])
    # turn 1 (the preset's algo.gamma 0: its own share): RLOO over the task's four episodes of
    # G1 = 0.24, 0.25, 0, 0
    assert [t.advantages[0] for t in trajs] == pytest.approx([0.24 - 0.25 / 3, 0.25 - 0.24 / 3, -0.49 / 3, -0.49 / 3])
    # turn 2: RLOO between the two revisions of the same attempt (turn-1 tokens get a gradient too)
    assert [t.advantages[1] for t in trajs] == pytest.approx([0.48, -0.48, -1.0, 1.0])
    assert all(t.kl_coefs == (0.0, 0.0) for t in trajs)   # the KL is in the reward, not the loss


def test_cocos_turn_one_on_the_episode_return_with_algo_gamma_one():
    kl = [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    _, _, trajs, _ = _credit("cocos", 1, COCOS_OUTCOMES, ["algo.gamma=1"], turn_kl=kl, revisions=2)
    # returns (gamma 1): G1 = R = 0.72, 0.25, 0, 1 -- a wrong first attempt that was fixed (G1 = 1)
    # outranks a half-right one that was kept (0.25): what pays a worse first attempt
    assert [t.advantages[0] for t in trajs] == pytest.approx([0.72 - 1.25 / 3, 0.25 - 1.72 / 3, -1.97 / 3, 1 - 0.97 / 3])
    assert [t.advantages[1] for t in trajs] == pytest.approx([0.48, -0.48, -1.0, 1.0])


def test_cocos_gamma_zero_rewards_only_the_improvement():
    _, rewards, trajs, _ = _credit("cocos", 1, COCOS_OUTCOMES, ["reward.gamma=0", "algo.kl_in_reward=false"], revisions=2)
    assert rewards == [[0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert trajs[0].kl_coefs == (0.01, 0.01)


def test_rlef_final_outcome_with_no_code_penalty():
    episodes = [Episode(TASK, 0, 0, 0, [turn(0, 2, 0, 1, code=None), turn(0, 2, 0, 1), turn(2, 2, 1, 1)]),
                Episode(TASK, 1, 1, 0, [turn(0, 2, 0, 1), turn(1, 2, 0, 1), turn(0, 2, 0, 1, code=None)])]
    kl = [[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]
    _, rewards, trajs, _ = _credit("rlef", 1, None, ["algo.advantage=grpo"], turn_kl=kl, episodes=episodes)
    assert rewards == [[-0.2, 0.0, 1.0], [0.0, 0.0, -1.2]]
    assert list(trajs[0].shaped_rewards) == pytest.approx([-0.2, 0.0, 0.9])   # - 0.05 x KL
    # GRPO per turn over two episodes: +-1 whenever the returns differ
    assert list(trajs[0].advantages) == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)


def test_uniform_groups_are_left_out_and_overlong_replies_penalised():
    overrides = ["algo.filter_uniform_groups=true", "reward.overlong_buffer=2", "rollout.max_new_tokens=4"]
    episodes = _episodes([(2,), (2,)], response_len=3)
    other = Task("u", "p", "f", TASK.public_tests, TASK.hidden_tests)
    more = _episodes([(2,), (0,)], response_len=4)
    for e in more:
        e.task = other
    _, rewards, trajs, _ = _credit("grpo", 1, None, overrides, episodes=episodes + more)
    # 3 tokens of 4 with a buffer of 2: -0.5; 4 of 4: -1
    assert rewards == [[0.5], [0.5], [0.0], [-1.0]]
    assert [t.trained for t in trajs] == [False, False, True, True]


def test_rlef_with_its_turn_level_value_function():
    cfg = load_config(REPO / "configs" / "rlef.yaml", ["algo.advantage=turn_value", "algo.lam=1.0", "algo.kl_in_reward=false"])
    episodes = _episodes([(0, 2), (0, 0)], response_len=2)
    # token layout per episode: [p p a a | p p a a]; the critic is read at positions 1 and 5
    values = [[0.0, 0.2, 0, 0, 0, 0.5, 0, 0], [0.0, 0.4, 0, 0, 0, 0.1, 0, 0]]
    est = estimator(cfg.algo.advantage)
    assert passes_needed(cfg.algo, est) == (False, True)
    trajs = [e.credit for e in assign_credit(cfg, 1, episodes, REWARDS.get("rlef"), est, None, values)]
    assert [list(t.rewards) for t in trajs] == [[0.0, 1.0], [0.0, -1.0]]
    assert trajs[0].value_positions == (1, 5) and trajs[0].old_values == (0.2, 0.5)
    # lambda 1, gamma 1: returns G = 1, 1 and -1, -1; advantages G - V = 0.8, 0.5, -1.4, -1.1, whitened
    assert list(trajs[0].value_targets) == pytest.approx([1.0, 1.0]) and list(trajs[1].value_targets) == pytest.approx([-1.0, -1.0])
    raw = [0.8, 0.5, -1.4, -1.1]
    mean = sum(raw) / 4
    std = (sum((a - mean) ** 2 for a in raw) / 4) ** 0.5
    assert list(trajs[0].advantages + trajs[1].advantages) == pytest.approx([(a - mean) / std for a in raw], abs=1e-5)
    assert trajs[0].token_advantages is None


def test_token_level_gae_puts_advantages_on_policy_tokens():
    cfg = load_config(REPO / "configs" / "rlef.yaml", ["algo.advantage=gae", "algo.lam=1.0", "algo.kl_in_reward=false"])
    episodes = _episodes([(2,), (0,)], response_len=2)
    trajs = [e.credit for e in assign_credit(cfg, 1, episodes, REWARDS.get("rlef"), estimator("gae"), None, [[0.0] * 4, [0.0] * 4])]
    # values 0, lambda 1: every policy token's advantage is the final reward, +1 / -1, whitened to +-1
    assert list(trajs[0].token_advantages) == pytest.approx([0.0, 0.0, 1.0, 1.0], abs=1e-5)
    assert list(trajs[1].token_advantages) == pytest.approx([0.0, 0.0, -1.0, -1.0], abs=1e-5)
    assert trajs[0].value_positions == (1, 2) and list(trajs[0].value_targets) == pytest.approx([1.0, 1.0])
