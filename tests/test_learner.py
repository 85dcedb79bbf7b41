"""The DeepSpeed learner as a plain class (no Ray, except for the two-rank test), on the tiny
model: explicit gradient accumulation and mini-batches give the gradient of the whole batch in
every loss aggregation mode; two gloo ranks make the update of one; the critic trains toward the
returns; the reference is loaded only when a KL weight can matter."""
import dataclasses
import random

import pytest
import torch

from rl.advantages import estimator
from rl.config import load_config
from rl.credit import assign_credit, turn_kl
from rl.episode import Credit, Episode, Turn
from rl.learner import Learner, learner_options
from rl.losses import policy_loss, token_logprobs_and_entropy
from envs.tasks import Task, TestCase
from tests.conftest import REPO
from tests.records import train_step, verdicts

TASK = Task("t", "p", "f", (TestCase("call", "f(0)", "0"),), (TestCase("call", "f(1)", "1"),))


def _episode(rng, turns: int, index: int = 0, prompt: int = 5, reply: int = 4) -> Episode:
    """Random token ids: `prompt` environment tokens and `reply` policy tokens per turn."""
    turn_list = []
    for _ in range(turns):
        response = [rng.randrange(100, 1000) for _ in range(reply + rng.randrange(4))]
        turn_list.append(Turn([rng.randrange(100, 1000) for _ in range(prompt + rng.randrange(3))], response,
                              [-1.0] * len(response), "stop", "x", verdicts(0, 1)))
    return Episode(TASK, index, index, 0, turn_list)


def _credited(rng, n: int, trained=None) -> list[Episode]:
    """n episodes of 1-2 turns with random advantages and KL weights; `trained[i]` False leaves
    episode i out of the loss (as the uniform-group filter does)."""
    out = []
    for i in range(n):
        e = _episode(rng, 1 + i % 2, i)
        k = len(e.turns)
        out.append(dataclasses.replace(e, credit=Credit(
            (0.0,) * k, (0.0,) * k, tuple(rng.uniform(-1, 1) for _ in range(k)), tuple(rng.choice([0.0, 0.05]) for _ in range(k)),
            (), True if trained is None else trained[i])))
    return out


def _config(*overrides):
    return load_config(REPO / "configs" / "tiny.yaml", ["rollout.tasks_per_step=2", "rollout.samples_per_task=4",
                                                         "algo.micro_batch_size=2", "algo.lr=1e-2", *overrides])


def _learner(cfg, model, port, **kw):
    return Learner(model, **{**learner_options(cfg, estimator(cfg.algo.advantage)), **kw}, master_port=port)


def _capture_gradients(learner):
    """Record, at each optimizer step, the accumulated gradient and the weights it was taken at."""
    steps, original = [], learner.engine.step

    def step():
        if learner.engine.is_gradient_accumulation_boundary():
            steps.append(({n: p.grad.detach().clone() for n, p in learner.policy.named_parameters()},
                          {n: p.detach().clone() for n, p in learner.policy.named_parameters()}))
        original()
    learner.engine.step = step
    return steps


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_and_mini_batches_give_the_gradient_of_each_whole_mini_batch(aggregation, tiny_model):
    from transformers import AutoModelForCausalLM

    cfg = _config("algo.mini_batches=2", f"algo.loss_aggregation={aggregation}", "algo.clip_eps=0.1")
    learner = _learner(cfg, tiny_model, 29741 + ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"].index(aggregation))
    batch = _credited(random.Random(3), 8, trained=[True, False, True, True, True, True, False, True])
    steps = _capture_gradients(learner)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model)
    train_step(learner, batch, mini_batches=2)
    assert len(steps) == 2

    # The same loss in one pass over each whole (padded) mini-batch, by autograd: old and
    # reference logprobs from the initial weights, the policy at the weights of that step.
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    for mini, (grads, weights) in zip((batch[:4], batch[4:]), steps):
        ids = torch.tensor([e.layout.token_ids + [0] * (40 - len(e.layout.token_ids)) for e in mini])
        attention = (torch.arange(40)[None] < torch.tensor([len(e.layout.token_ids) for e in mini])[:, None]).long()

        def pad(rows):
            return torch.tensor([list(r) + [0] * (40 - len(r)) for r in rows], dtype=torch.float32)

        mask = pad([e.layout.loss_mask if e.credit.trained else [0] * len(e.layout.loss_mask) for e in mini])
        with torch.no_grad():
            old = token_logprobs_and_entropy(initial(input_ids=ids, attention_mask=attention).logits, ids, 1.0)[0]
        missing, _ = model.load_state_dict(weights, strict=False)
        assert missing == ["lm_head.weight"]   # tied to the embedding
        model.zero_grad()
        logp = token_logprobs_and_entropy(model(input_ids=ids, attention_mask=attention).logits, ids, 1.0)[0]
        trained = [e for e in mini if e.credit.trained]
        loss, _ = policy_loss(logp, old, old, pad([e.token_advantages() for e in mini]), pad([e.token_kl_coefs() for e in mini]),
                              mask, 0.1, aggregation=aggregation, num_sequences=len(trained),
                              num_tokens=float(sum(sum(e.layout.loss_mask) for e in trained)), norm_constant=24 * 2)
        loss.backward()
        for name, p in model.named_parameters():
            assert torch.allclose(grads[name], p.grad, rtol=1e-3, atol=1e-6), name
    assert any(not torch.equal(steps[0][1][n], steps[1][1][n]) for n in steps[0][1])   # the first step moved the weights


def test_no_reference_is_loaded_or_run_when_every_kl_weight_is_zero(tiny_model):
    cfg = _config("algo.kl_coef=0", "algo.kl_coef_first_turn=0")
    learner = _learner(cfg, tiny_model, 29751)
    assert learner.reference is None
    batch = _credited(random.Random(4), 8)
    batch = [dataclasses.replace(e, credit=dataclasses.replace(e.credit, kl_coefs=(0.0,) * len(e.turns))) for e in batch]
    sums = train_step(learner, batch)
    assert "kl" not in sums and sums["loss_count"] == 1 and torch.isfinite(torch.tensor(sums["loss"]))


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_two_gloo_ranks_make_the_update_of_one(tiny_model, zero_stage, tmp_path):
    """The same batch, with filtered episodes falling unevenly between the ranks' shards: the
    weights after the step agree with one rank's to float tolerance (gradients averaged over
    ranks, each normalised by the global counts). With ZeRO-3 (parameters partitioned over the
    ranks) the published weights are the whole model, gathered by every rank."""
    import ray

    from rl.cluster import LearnerGroup, Placement
    from rl.weight_sync import read_weights

    batch = _credited(random.Random(5), 8, trained=[True, True, True, False, True, True, True, False])
    ray.init(address="local", num_cpus=3, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        after, metrics_by = {}, {}
        for ranks in (1, 2):
            cfg = _config(f"learner.num_ranks={ranks}", "learner.torch_threads=1", "algo.micro_batch_size=1",
                          "rollout.num_cpus_per_worker=0",   # the placement's rollout bundles: no CPU of the 3
                          "algo.loss_aggregation=seq_mean_token_mean", "algo.grad_clip=null",
                          f"learner.zero_stage={zero_stage if ranks == 2 else 0}")
            placement = Placement(cfg, learner=True)
            group = LearnerGroup(cfg, tiny_model, estimator(cfg.algo.advantage), placement)

            def weights():
                published = group.publish("shm", str(tmp_path / f"{ranks}"))
                assert published.checksum == group.checksum()
                return read_weights([published.location])

            before = weights()
            metrics = group.train_step(batch)
            metrics_by[ranks] = metrics
            after[ranks] = weights()
            assert metrics["tokens"] == sum(sum(e.layout.loss_mask) for e in batch if e.credit.trained)
            placement.close()   # its actors go with it
        moved = max(float((after[1][n] - before[n]).abs().max()) for n in before)
        assert moved > 1e-4
        # The all-reduced gradient has the single rank's norm, and the loss is the same ...
        assert metrics_by[2]["grad_norm"] == pytest.approx(metrics_by[1]["grad_norm"], rel=1e-5)
        assert metrics_by[2]["loss"] == pytest.approx(metrics_by[1]["loss"], rel=1e-5)
        # ... so the weights agree to a small fraction of the step. Adam's first step is
        # lr * g / (|g| + eps) a weight, whose sensitivity to g is lr * eps / (|g| + eps)^2: nil
        # where |g| >> eps (a step of ~lr), but where |g| is a few eps (1e-8; a gradient that
        # nearly cancels) it turns the all-reduce's float rounding into a visible difference, so
        # those weights are held to a looser bound.
        well_conditioned = 0
        for name in before:
            diff = (after[1][name] - after[2][name]).abs()
            well = (after[1][name] - before[name]).abs() > 0.95 * moved   # |g| > ~20 eps
            well_conditioned += int(well.sum())
            assert float((diff * well).max()) < 1e-2 * moved, name
            assert float(diff.max()) < 5e-2 * moved, name
        assert well_conditioned > 0.5 * sum(t.numel() for t in before.values())
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def critic_learner(tiny_model):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        "algo.advantage=turn_value", "algo.lam=1.0", "algo.value_coef=1.0", "algo.value_clip=null",
        "rollout.tasks_per_step=1", "rollout.samples_per_task=4", "algo.micro_batch_size=2", "algo.lr=1e-2",
        "algo.kl_in_reward=true"])
    return cfg, _learner(cfg, tiny_model, 29761)


def test_critic_learns_the_returns_and_stays_out_of_the_published_weights(critic_learner):
    cfg, learner = critic_learner
    rng = random.Random(0)
    episodes = [_episode(rng, len(r), i) for i, r in enumerate(([1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]))]
    returns = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]

    def credited():
        """Fresh values, targets and advantages (rewards from a plug-in that returns `returns`)."""
        values = learner.passes(episodes, reference=False, values=True)["values"]
        fixed = iter(returns)
        return assign_credit(cfg, 1, episodes, lambda turns, task, c: next(fixed), estimator("turn_value"), None, values)

    def value_error():
        return sum((v - g) ** 2 for e in credited() for v, g in zip(e.credit.old_values, e.credit.value_targets))

    before = value_error()
    assert before > 0.5     # a zero-initialised head against returns of 0..2
    checksum = learner.checksum()
    for _ in range(5):
        metrics = train_step(learner, credited())
    assert metrics["value_loss"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert value_error() < 0.5 * before
    assert learner.checksum() != checksum                                  # the policy trained too
    assert not any("value_head" in name for name in learner.parameter_names())


def test_reference_pass_gives_the_turn_kl_credit_assignment_reads(critic_learner):
    _, learner = critic_learner
    rng = random.Random(1)
    episodes = [_episode(rng, 2), _episode(rng, 1)]
    (ref_a, ref_b) = learner.passes(episodes, reference=True, values=False)["reference"]
    assert [len(ref_a), len(ref_b)] == [len(e.layout.token_ids) for e in episodes]
    # rollout logprobs = the reference's own, shifted by 0.5 on turn 2
    for e, ref in zip(episodes, (ref_a, ref_b)):
        offset = 0
        for t, turn in enumerate(e.turns):
            offset += len(turn.prompt_ids)
            turn.response_logprobs = [lp + (0.5 if t == 1 else 0.0) for lp in ref[offset:offset + len(turn.response_ids)]]
            offset += len(turn.response_ids)
        e.__dict__.pop("layout", None)   # rebuilt from the edited turns
    assert turn_kl(episodes[0], ref_a) == pytest.approx([0.0, 0.5], abs=1e-5)
    assert turn_kl(episodes[1], ref_b) == pytest.approx([0.0], abs=1e-5)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal but for the float rounding of another grouping of the same sums: to 1e-5 in norm
    (elementwise, the embedding rows of rare tokens carry grads near 0 whose last bits move)."""
    return float((a - b).norm()) <= 1e-5 * float(b.norm()) + 1e-12


def test_episodes_without_signal_are_skipped_before_the_forward_pass_with_the_masked_loss_and_gradient(tiny_model):
    """Zero-advantage episodes without KL weight, and episodes left out of the loss, are not run;
    the loss and the gradient are those of the masked batch that runs them all."""
    from rl.learner import MiniBatchPart, contributes

    cfg = _config("algo.micro_batch_size=2", "algo.kl_coef=0.05", "algo.kl_coef_first_turn=0.05")
    batch = _credited(random.Random(6), 8, trained=[True, False, True, True, True, True, False, True])
    silent = {1, 2, 5}   # no advantage and no KL weight: nothing to learn from (2 and 5 are trained)
    batch = [dataclasses.replace(e, credit=dataclasses.replace(e.credit, advantages=(0.0,) * len(e.turns), kl_coefs=(0.0,) * len(e.turns)))
             if i in silent else e for i, e in enumerate(batch)]
    assert [contributes(e, True, False) for e in batch] == [True, False, False, True, True, False, False, True]
    trained = [e for e in batch if e.credit.trained]
    masked = [MiniBatchPart([batch[i:i + 2] for i in range(0, 8, 2)], float(len(trained)),
                            float(sum(sum(e.layout.loss_mask) for e in trained)), 0.0)]
    results = {}
    for name, run in (("skipped", lambda learner: train_step(learner, batch)), ("masked", lambda learner: learner.train_step(masked))):
        learner = _learner(cfg, tiny_model, 29761 + len(results))
        steps = _capture_gradients(learner)
        results[name] = (run(learner), steps[0][0])
    (skipped, grads), (full, full_grads) = results["skipped"], results["masked"]
    assert skipped["tokens_computed"] < full["tokens_computed"]
    assert skipped["loss"] == pytest.approx(full["loss"], rel=1e-6, abs=1e-9)
    assert skipped["pg_loss"] / skipped["pg_loss_count"] == pytest.approx(full["pg_loss"] / full["pg_loss_count"], rel=1e-5)
    for name in grads:
        assert close(grads[name], full_grads[name]), name


def test_a_rank_left_without_episodes_still_steps_with_a_zero_gradient(tiny_model):
    """Nothing to learn from in the whole mini-batch: one pass of exactly zero gradient, and the
    optimizer still steps (as it would on the masked batch: Adam's state moves the weights only
    through its moments, which are zero here)."""
    cfg = _config("algo.kl_coef=0", "algo.kl_coef_first_turn=0")
    batch = [dataclasses.replace(e, credit=dataclasses.replace(e.credit, advantages=(0.0,) * len(e.turns), kl_coefs=(0.0,) * len(e.turns)))
             for e in _credited(random.Random(7), 8)]
    learner = _learner(cfg, tiny_model, 29771)
    steps = _capture_gradients(learner)
    sums = train_step(learner, batch)
    assert len(steps) == 1 and sums["tokens_computed"] == 0 and sums["loss"] == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in steps[0][0].values())


def test_passes_sorted_by_length_under_a_token_budget_give_the_loss_of_padded_ones(tiny_model):
    """Passes grouped by length under a token budget pad less than fixed passes in batch order,
    and give the same loss and gradient."""
    from rl.learner import MiniBatchPart, shards

    cfg = _config("algo.micro_batch_size=4")
    rng = random.Random(8)
    batch = _credited(rng, 8)
    batch = [dataclasses.replace(e, turns=[dataclasses.replace(t, prompt_ids=t.prompt_ids * (1 + 5 * (i % 2))) for t in e.turns])
             for i, e in enumerate(batch)]   # the two-turn episodes (odd i) get ~6x longer prompts
    (bucketed,) = shards(batch, 1, 1, 4, True, False, micro_batch_tokens=4 * max(len(e.layout.token_ids) for e in batch) // 2)
    assert all(len({len(e.layout.token_ids) > 40 for e in mb}) == 1 for mb in bucketed[0].micro_batches if mb)   # no mixing
    in_order = [MiniBatchPart([batch[:4], batch[4:]], float(len(batch)), float(sum(sum(e.layout.loss_mask) for e in batch)), 0.0)]
    results = {}
    for name, shard in (("bucketed", bucketed), ("in order", in_order)):
        learner = _learner(cfg, tiny_model, 29791 + len(results))
        steps = _capture_gradients(learner)
        results[name] = (learner.train_step(shard), steps[0][0])
    (a, grads), (b, other) = results["bucketed"], results["in order"]
    assert a["tokens_padded"] < b["tokens_padded"] and a["tokens_computed"] == b["tokens_computed"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)
    for name in grads:
        assert close(grads[name], other[name]), name


def test_gradient_checkpointing_gives_the_loss_and_gradient_without_it(tiny_model):
    """learner.gradient_checkpointing recomputes the decoder layers in the backward pass: the same
    loss and gradient as keeping their activations."""
    batch = _credited(random.Random(9), 8)
    results = []
    for checkpointing in (True, False):
        learner = _learner(_config(f"learner.gradient_checkpointing={str(checkpointing).lower()}"), tiny_model, 29801 + len(results))
        assert learner.policy.is_gradient_checkpointing == checkpointing
        steps = _capture_gradients(learner)
        results.append((train_step(learner, batch), steps[0][0]))
    (a, grads), (b, other) = results
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)
    for name in grads:
        assert close(grads[name], other[name]), name


def test_kl_only_episodes_have_zero_gradient_while_the_policy_is_the_reference(tiny_model):
    """Why the learner group leaves episodes kept for their KL weight alone out of a step while
    the policy is still the reference (k3): their gradient is exactly 0, and the step leaves the
    policy the reference; once a step with an advantage has moved it, it is not."""
    cfg = _config("algo.kl_coef=0.05", "algo.kl_coef_first_turn=0.05")
    learner = _learner(cfg, tiny_model, 29803)
    assert learner.at_reference()
    silent = [dataclasses.replace(e, credit=dataclasses.replace(e.credit, advantages=(0.0,) * len(e.turns), kl_coefs=(0.05,) * len(e.turns)))
              for e in _credited(random.Random(10), 8)]
    steps = _capture_gradients(learner)
    sums = train_step(learner, silent)   # every episode run, as when the policy has moved
    assert sums["tokens_computed"] > 0 and sums["at_reference"] == 1.0
    assert all(float(g.abs().max()) == 0.0 for g in steps[0][0].values())
    sums = train_step(learner, _credited(random.Random(11), 8))
    assert sums["at_reference"] == 0.0 and not learner.at_reference()


def test_a_dead_builds_lock_is_swept_once_stale_and_a_live_one_is_kept(tmp_path, capsys):
    """A JIT build killed mid-way leaves its lock, and DeepSpeed's next load of the op would wait on
    it forever: the learner's sweeper removes locks older than a build ever takes, and only those."""
    import os
    import time

    from rl.learner import BUILD_LOCK_STALE_S, sweep_stale_build_locks

    dead, live = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    for lock in (dead, live):
        lock.parent.mkdir(parents=True)
        lock.touch()
    old = time.time() - BUILD_LOCK_STALE_S - 60
    os.utime(dead, (old, old))
    assert sweep_stale_build_locks(tmp_path) == [dead]
    assert not dead.exists() and live.exists()
    assert f"removed a stale build lock {dead}" in capsys.readouterr().err
