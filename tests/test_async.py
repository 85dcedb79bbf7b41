"""The asynchronous loop (algo.max_staleness = k): the generation thread never starts a batch
more than k versions ahead of the learner, checkpoints see the draws as of each step, stale
episodes are dropped; truncated importance sampling (algo.tis_cap) weights the policy
gradient by min(pi_old / pi_rollout, cap). Then the whole loop, end to end, with k = 1."""
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from launch.train import RolloutsAhead, fresh_episodes
from rl.losses import policy_loss, ppo_clip_loss, tis_weights


def test_tis_weights_are_the_truncated_ratio_and_scale_only_the_policy_gradient():
    old = torch.tensor([[0.0, -1.0, -0.5, -2.0]])
    rollout = torch.tensor([[0.0, -2.0, -0.4, -0.1]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    weights, stats = tis_weights(old, rollout, mask, cap=2.0)
    expected = [1.0, min(torch.e, 2.0), float(torch.exp(torch.tensor(-0.1))), float(torch.exp(torch.tensor(-1.9)))]
    assert weights[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert float(stats["tis_truncated"]) == pytest.approx(1 / 3)
    assert float(stats["tis_weight"]) == pytest.approx(sum(expected[1:]) / 3, rel=1e-6)

    logp = torch.tensor([[0.0, -1.1, -0.45, -1.9]], requires_grad=True)
    adv = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    ref, kl_w = torch.tensor([[0.0, -1.0, -0.5, -2.0]]), torch.full((1, 4), 0.1)
    loss, _ = policy_loss(logp, old, ref, adv, kl_w, mask, 0.2, aggregation="token_mean", is_weights=weights)
    pg, _ = ppo_clip_loss(logp, old, adv, mask, 0.2)
    plain, _ = policy_loss(logp, old, ref, adv, kl_w, mask, 0.2, aggregation="token_mean")
    # the weighted loss differs from the plain one by exactly the re-weighted policy-gradient terms
    assert float((loss - plain).detach()) == pytest.approx(float(((weights - 1) * pg.detach() * mask).sum() / mask.sum()), rel=1e-5)


def test_episodes_older_than_the_bound_are_dropped():
    episodes = [SimpleNamespace(weight_version=v) for v in (5, 4, 3, 5)]
    kept, lags = fresh_episodes(episodes, 5, 1)
    assert lags == [0, 1, 2, 0] and kept == [episodes[0], episodes[1], episodes[3]]
    assert fresh_episodes(episodes, 5, 0)[0] == [episodes[0], episodes[3]]


class FakeLoop:
    """Records, for each batch, how many steps were trained when its rollout started."""

    def __init__(self, k: int):
        self.cfg = SimpleNamespace(algo=SimpleNamespace(max_staleness=k), rollout=SimpleNamespace(tasks_per_step=1))
        self.rt = SimpleNamespace(timers={})
        self.started_after: dict[int, int] = {}
        self.trained = 0

    def rollout(self, tasks, step):
        self.started_after[step] = self.trained
        time.sleep(0.02)
        return [SimpleNamespace(step=step, tasks=tasks)]


class Counter:
    """A task sampler whose state is how many tasks it has drawn."""

    def __init__(self):
        self.drawn = 0

    def next(self, n):
        self.drawn += n
        return [self.drawn]

    def state_dict(self):
        return {"drawn": self.drawn}


@pytest.mark.parametrize("k", [1, 2])
def test_generation_runs_ahead_by_at_most_k_steps_and_checkpoints_see_each_steps_draws(k):
    loop, sampler = FakeLoop(k), Counter()
    rollouts = RolloutsAhead(loop, sampler, SimpleNamespace(state_dict=dict), 1, 6)
    assert rollouts.draws_before(1)[0] == {"drawn": 0}
    for step in range(1, 7):
        (episode,), timers = rollouts.next(step)
        assert episode.step == step and episode.tasks == [step] and "waiting_for_rollout" in timers
        time.sleep(0.05)            # training
        loop.trained = step
        rollouts.trained(step)
        # what a checkpoint after this step keeps: the sampler before step+1's draw
        assert rollouts.draws_before(step + 1)[0] == {"drawn": step}
    rollouts.close()
    for step, trained in loop.started_after.items():
        assert step - 1 - trained <= k, f"batch {step} started {step - 1 - trained} versions ahead"
    assert any(step - 1 - trained == k for step, trained in loop.started_after.items() if step > k), "no overlap"
    assert not rollouts.thread.is_alive()


def test_a_failing_rollout_reaches_the_step_that_waits_for_it():
    loop = FakeLoop(1)
    loop.rollout = lambda tasks, step: (_ for _ in ()).throw(RuntimeError(f"worker died in step {step}"))
    rollouts = RolloutsAhead(loop, Counter(), SimpleNamespace(state_dict=dict), 1, 3)
    with pytest.raises(RuntimeError, match="worker died in step 1"):
        rollouts.next(1)
    rollouts.close()


@pytest.mark.e2e
def test_async_loop_trains_on_batches_one_version_old_with_the_correction(tiny_model, tmp_path):
    from launch.train import train
    from rl.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "run.steps=3", "rollout.num_workers=1",
        "algo.max_staleness=1", "algo.tis_cap=2.0",
        f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length", "wandb.mode=disabled"])
    run_dir = Path(train(cfg)["run_dir"])
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    assert [r["weight_version"] for r in steps] == [1, 2, 3]
    assert all(r["async/dropped_episodes"] == 0 and r["async/max_lag"] <= 1 for r in steps)
    assert steps[0]["async/max_lag"] == 0                        # the first batch: the initial weights
    assert max(r["async/max_lag"] for r in steps[1:]) == 1        # later ones overlapped the update before
    episodes = [json.loads(line) for line in (run_dir / "rollouts" / "step-000003.jsonl").open()]
    assert {2 - e["weight_version"] for e in episodes} <= {0, 1}  # sampled by version 1 or 2, trained from 2
    for r in steps:
        assert 0 < r["learner/tis_weight"] <= 2.0 and 0 <= r["learner/tis_truncated"] <= 1
        assert len(set(r["weights/held_by_workers"])) == 1 and r["time/waiting_for_rollout"] >= 0
    assert threading.active_count() < 50   # the generation thread ended with the run
