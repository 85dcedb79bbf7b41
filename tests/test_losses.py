"""Loss math against hand-computed values."""
import math

import pytest
import torch

from rl.losses import (aggregate, head_logprobs_and_entropy, kl_estimate, masked_sequence_mean, policy_loss, ppo_clip_loss,
                       token_logprobs_and_entropy)


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



def test_the_head_in_chunks_gives_the_logprobs_entropies_and_gradients_of_the_whole_head():
    """Chunked and recomputed in the backward pass, the head's logprobs, entropies and the
    gradients they give to the hidden states and the head's weight are those of one pass."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (3, 20))
    select = torch.rand(3, 20) < 0.6
    select[:, 0] = False
    weight = torch.randn(3, 20)
    results = []
    for chunk in (7, 1000):   # 7 does not divide the number of selected tokens
        head = torch.nn.Linear(8, 50, bias=False)
        with torch.no_grad():
            head.weight.copy_(torch.linspace(-1, 1, 400).reshape(50, 8))
        hidden = torch.linspace(-2, 2, int(select.sum()) * 8).reshape(-1, 8).requires_grad_(True)
        logp, entropy = head_logprobs_and_entropy(head, hidden, ids, select, 1.3, chunk_tokens=chunk)
        (logp * weight).sum().backward()
        with torch.no_grad():   # the no-grad path (reference and old logprobs) gives the same values
            assert torch.equal(head_logprobs_and_entropy(head, hidden, ids, select, 1.3, chunk_tokens=chunk)[0], logp.detach())
        results.append((logp.detach(), entropy, hidden.grad, head.weight.grad))
    assert bool((results[0][0][~select] == 0).all()) and bool((results[0][0][select] < 0).all())
    # fp32: the head's weight gradient is a sum over the chunks in one order and one product in
    # another (and the BLAS's own split of a product varies with its threads), ~2e-6 apart relative;
    # a chunking error would be off by the size of the values
    for chunked, whole in zip(*results):
        assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    # and the values of the plain log-softmax over the logits at every position
    full = torch.zeros(3, 20, 50)
    full[select.roll(-1, 1)] = torch.nn.functional.linear(torch.linspace(-2, 2, int(select.sum()) * 8).reshape(-1, 8),
                                                          torch.linspace(-1, 1, 400).reshape(50, 8))
    logp, entropy = token_logprobs_and_entropy(full, ids, 1.3)
    assert torch.allclose(logp[select], results[0][0][select], rtol=1e-6, atol=1e-6)
    assert torch.allclose(entropy[select], results[0][1][select], rtol=1e-6, atol=1e-6)

def test_k3_kl_values():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.5), math.log(0.5)])
    # r = 1 -> 0 ; r = 2 -> 2 - log 2 - 1
    assert kl_estimate(logp, ref, "k3").tolist() == pytest.approx([0.0, 1.0 - math.log(2.0)])


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


def test_kl_estimators():
    logp = torch.tensor([math.log(0.25), math.log(0.5)])
    ref = torch.tensor([math.log(0.5), math.log(0.5)])
    # log r = log 2 and 0, with r = pi_ref / pi
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx([-math.log(2.0), 0.0])
    assert kl_estimate(logp, ref, "k2").tolist() == pytest.approx([0.5 * math.log(2.0) ** 2, 0.0])
    assert kl_estimate(logp, ref, "k3").tolist() == pytest.approx([1.0 - math.log(2.0), 0.0])
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_asymmetric_clip_raises_only_the_upper_bound():
    old = torch.zeros(3)
    logp = torch.log(torch.tensor([1.25, 1.35, 0.7]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = ppo_clip_loss(logp, old, adv, torch.ones(3), clip_eps=0.2, clip_eps_high=0.28)
    # A>0: min(1.25, 1.25) (inside 1.28); min(1.35, 1.28) clipped. A<0: min(-0.7, -0.8) = -0.8, lower bound 0.8 kept
    assert loss.tolist() == pytest.approx([-1.25, -1.28, 0.8])
    assert clipped.tolist() == [0.0, 1.0, 1.0]


VALUES = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_aggregation_modes_on_one_micro_batch():
    assert aggregate(VALUES, MASK, "seq_mean_token_mean", 2, 3.0).item() == pytest.approx((2.0 + 2.0) / 2)
    assert aggregate(VALUES, MASK, "token_mean", 2, 3.0).item() == pytest.approx((1 + 3 + 2) / 3)
    assert aggregate(VALUES, MASK, "seq_mean_token_sum_norm", 2, 3.0, norm_constant=4.0).item() == pytest.approx((4 / 4 + 2 / 4) / 2)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(VALUES, MASK, "sum", 2, 3.0)


@pytest.mark.parametrize("mode", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_shares_add_up_to_the_batch_aggregate(mode):
    """Gradient accumulation: split a batch in two, the shares sum to the whole batch's value."""
    values = torch.tensor([[1.0, 3.0, 5.0], [2.0, 0.0, 0.0], [4.0, 4.0, 0.0], [7.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    whole = aggregate(values, mask, mode, 4, float(mask.sum()), norm_constant=3.0)
    parts = sum(aggregate(values[i:i + 2], mask[i:i + 2], mode, 4, float(mask.sum()), norm_constant=3.0) for i in (0, 2))
    assert parts.item() == pytest.approx(whole.item())
    expected = {"seq_mean_token_mean": (3 + 2 + 4 + 1) / 4, "token_mean": (9 + 2 + 8 + 2) / 8,
                "seq_mean_token_sum_norm": (9 + 2 + 8 + 2) / 3 / 4}[mode]
    assert whole.item() == pytest.approx(expected)
