"""The DeepSpeed learner as a plain class (no Ray), on the tiny model: PPO with the turn-level
critic trains its value head toward the returns, and only the policy is published."""
import random

import pytest
import torch

from launch.train import critic_advantages
from rl.config import load_config
from rl.trajectory import ENV_TURN, Trajectory
from tests.conftest import REPO


def _trajectory(rng, rewards):
    ids, turn_ids = [], []
    for t in range(len(rewards)):
        ids += [rng.randrange(100, 1000) for _ in range(5)]
        turn_ids += [ENV_TURN] * 5
        ids += [rng.randrange(100, 1000) for _ in range(4)]
        turn_ids += [t] * 4
    mask = [int(t != ENV_TURN) for t in turn_ids]
    return Trajectory("t", "t", ids, mask, [0.0] * len(ids), turn_ids, list(rewards), 0,
                      turn_kl_coefs=[0.01] * len(rewards))


@pytest.fixture(scope="module")
def learner(tiny_model):
    from rl.learner import Learner

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        "algo.advantage=turn_value", "algo.lam=1.0", "algo.value_coef=1.0", "algo.value_clip=0",
        "rollout.tasks_per_step=1", "rollout.samples_per_task=4", "algo.micro_batch_size=2", "algo.lr=1e-2"])
    return Learner(cfg, tiny_model, master_port=29731)


def test_critic_learns_the_returns_and_stays_out_of_the_published_weights(learner):
    rng = random.Random(0)
    batch = [_trajectory(rng, r) for r in ([1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0])]

    def value_error():
        values = [v for _, v in sorted(learner.values(batch))]
        critic_advantages(batch, values, "turn_value", 1.0, 1.0)
        return sum((v - g) ** 2 for t in batch for v, g in zip(t.old_values, t.value_targets))

    before = value_error()
    assert before > 0.5     # a zero-initialised head against returns of 0..2
    checksum = learner.checksum()
    for _ in range(5):
        value_error()                     # fresh values, targets and advantages each step
        metrics = learner.train_step(batch)
    assert metrics["value_loss"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert value_error() < 0.5 * before
    assert learner.checksum() != checksum                                  # the policy trained too
    assert not any("value_head" in name for name in learner.parameter_names())


def test_turn_kl_is_the_mean_token_log_ratio_to_the_reference(learner):
    rng = random.Random(1)
    batch = [_trajectory(rng, [0.0, 1.0]), _trajectory(rng, [1.0])]
    for i, traj in enumerate(batch):   # rollout logprobs = the reference's own, shifted by 0.5 on turn 2
        ref = learner._logprobs(learner.reference, [traj])[0].tolist()
        traj.rollout_logprobs = [lp + (0.5 if t == 1 else 0.0) if t != ENV_TURN else 0.0 for lp, t in zip(ref, traj.turn_ids)]
    kl = [v for _, v in sorted(learner.turn_kl(batch))]
    assert kl[0] == pytest.approx([0.0, 0.5], abs=1e-5) and kl[1] == pytest.approx([0.0], abs=1e-5)
