"""Loss math against hand-computed values."""
import math

import pytest
import torch

from rl.losses import k3_kl, masked_sequence_mean, policy_loss, ppo_clip_loss, token_logprobs_and_entropy


def test_token_logprobs_shift_and_temperature():
    # vocab of 2; logits at position 0 predict token 1.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0]]])
    ids = torch.tensor([[0, 1, 0]])
    logp, entropy = token_logprobs_and_entropy(logits, ids, temperature=1.0)
    assert logp[0].tolist() == pytest.approx([0.0, math.log(0.75), math.log(0.5)])
    assert entropy[0, 2].item() == pytest.approx(math.log(2.0))
    # temperature 2: logits / 2 -> p(token 1) = sqrt(3) / (1 + sqrt(3))
    logp2, _ = token_logprobs_and_entropy(logits, ids, temperature=2.0)
    assert logp2[0, 1].item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))))


def test_k3_kl_values():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.5), math.log(0.5)])
    # r = 1 -> 0 ; r = 2 -> 2 - log 2 - 1
    assert k3_kl(logp, ref).tolist() == pytest.approx([0.0, 1.0 - math.log(2.0)])


def test_ppo_clip_positive_and_negative_advantages():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.9, 1.5, 0.5]))   # ratios
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    mask = torch.ones(4)
    loss, clipped = ppo_clip_loss(logp, old, adv, mask, clip_eps=0.2)
    # A>0: min(1.5, 1.2) = 1.2 (clipped); min(0.9, 0.9) = 0.9
    # A<0: min(-1.5, -1.2) = -1.5 (not clipped); min(-0.5, -0.8) = -0.8 (clipped)
    assert loss.tolist() == pytest.approx([-1.2, -0.9, 1.5, 0.8])
    assert clipped.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_masked_sequence_mean_is_per_sequence_first():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # seq 1: mean(1, 3) = 2; seq 2: 2 -> 2
    assert masked_sequence_mean(values, mask).item() == pytest.approx(2.0)


def test_policy_loss_on_policy_equals_minus_mean_advantage_plus_kl():
    logp = torch.log(torch.tensor([[0.25, 0.5]]))
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    adv = torch.tensor([[2.0, 2.0]])
    kl_w = torch.tensor([[0.1, 0.1]])
    mask = torch.tensor([[1.0, 1.0]])
    loss, stats = policy_loss(logp, logp.clone(), ref, adv, kl_w, mask, clip_eps=0.2)
    kl = (1.0 - math.log(2.0) + 0.0) / 2
    assert stats["kl"].item() == pytest.approx(kl)
    assert loss.item() == pytest.approx(-2.0 + 0.1 * kl)
    assert stats["clip_fraction"].item() == 0.0


def test_policy_loss_gradient_flows_only_through_masked_tokens():
    logp = torch.log(torch.tensor([[0.25, 0.5, 0.5]])).requires_grad_()
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    loss, _ = policy_loss(logp, logp.detach(), logp.detach(), torch.ones(1, 3), torch.zeros(1, 3), mask, 0.2)
    loss.backward()
    assert logp.grad[0, 1].item() == 0.0 and logp.grad[0, 0].item() != 0.0
