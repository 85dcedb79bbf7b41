"""Token-level losses over padded [batch, seq] tensors; `mask` is 1 on trained tokens."""
from __future__ import annotations

import torch


def token_logprobs_and_entropy(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float):
    """log pi(token_k | tokens_<k) for every position k >= 1 (position 0 gets 0), and the entropy of
    each predictive distribution. Logits are divided by the sampling temperature so the result
    matches the distribution vLLM sampled from."""
    logits = logits[:, :-1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, token_ids[:, 1:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    pad = logits.new_zeros(logits.shape[0], 1)
    return torch.cat([pad, logp], 1), torch.cat([pad, entropy], 1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Unbiased, always-positive KL(pi || pi_ref) estimator: r - log r - 1 with r = pi_ref / pi."""
    log_ratio = ref_logp - logp
    return log_ratio.exp() - log_ratio - 1.0


def masked_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's masked tokens, then over sequences (GRPO's aggregation)."""
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.mean()


def ppo_clip_loss(logp, old_logp, advantages, mask, clip_eps: float):
    """-min(rho A, clip(rho, 1-eps, 1+eps) A) per token; returns (per-token loss, clipped indicator)."""
    ratio = (logp - old_logp).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float() * mask


def policy_loss(logp, old_logp, ref_logp, advantages, kl_weights, mask, clip_eps: float):
    """PPO-clip plus per-token-weighted k3 KL to the reference, aggregated per sequence."""
    pg, clipped = ppo_clip_loss(logp, old_logp, advantages, mask, clip_eps)
    kl = k3_kl(logp, ref_logp)
    loss = masked_sequence_mean(pg + kl_weights * kl, mask)
    stats = {
        "kl": masked_sequence_mean(kl.detach(), mask),
        "clip_fraction": masked_sequence_mean(clipped, mask),
        "pg_loss": masked_sequence_mean(pg.detach(), mask),
    }
    return loss, stats
