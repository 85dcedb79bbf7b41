"""Token-level losses over padded [batch, seq] tensors; `mask` is 1 on trained tokens."""
from __future__ import annotations

import torch
import torch.utils.checkpoint


def token_logprobs_and_entropy(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float):
    """log pi(token_k | tokens_<k) for every position k >= 1 (position 0 gets 0), and the entropy of
    each predictive distribution, from logits at every position ([B, T, V])."""
    every = torch.ones_like(token_ids, dtype=torch.bool)
    every[:, 0] = False
    logp, entropy = _rows_logprobs_and_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), token_ids[every], temperature)
    return _scatter(every, logp), _scatter(every, entropy)


# Rows of the LM head computed at once: [512, 49152] fp32 logits are 100 MB for the default model,
# against 236 MB for a 4-episode micro-batch's 1200 policy tokens at once, and the log-softmax and
# its gradient are as large again each.
HEAD_CHUNK_TOKENS = 512


def _rows_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float):
    """log pi(target) and the entropy of each row's distribution, from [N, V] logits divided by the
    sampling temperature (so they match the distribution vLLM sampled from); no gradient through
    the entropy (it is only logged)."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _scatter(select: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return torch.zeros(select.shape, dtype=rows.dtype, device=rows.device).masked_scatter(select, rows)


def head_logprobs_and_entropy(head: torch.nn.Module, hidden: torch.Tensor, token_ids: torch.Tensor, select: torch.Tensor,
                              temperature: float, chunk_tokens: int = HEAD_CHUNK_TOKENS):
    """log pi and the entropy at the target tokens marked by `select` ([B, T] bool, False at
    position 0), as [B, T] tensors (0 elsewhere), from the last hidden states before each target
    ([N, H], in row-major order of `select`). The LM head and its vocabulary-wide log-softmax run
    on `chunk_tokens` rows at a time, and when a gradient is wanted each chunk's logits are
    recomputed in the backward pass instead of being kept, so the head's memory is one chunk's
    whatever the number of tokens (the price: the head's matmul runs twice, a few per cent of a
    step). The values are those of the unchunked computation."""
    targets = token_ids[select]
    keep_graph = torch.is_grad_enabled() and hidden.requires_grad

    def rows(h: torch.Tensor, y: torch.Tensor):
        return _rows_logprobs_and_entropy(head(h), y, temperature)

    parts = [torch.utils.checkpoint.checkpoint(rows, hidden[i:i + chunk_tokens], targets[i:i + chunk_tokens], use_reentrant=False)
             if keep_graph else rows(hidden[i:i + chunk_tokens], targets[i:i + chunk_tokens])
             for i in range(0, max(len(targets), 1), chunk_tokens)]
    return _scatter(select, torch.cat([p[0] for p in parts])), _scatter(select, torch.cat([p[1] for p in parts]))


def policy_logprobs_and_entropy(policy, input_ids: torch.Tensor, attention_mask: torch.Tensor, select: torch.Tensor,
                                temperature: float):
    """(logprobs, entropies, last hidden states) of a decoder-only HF model (Llama, Qwen, Mistral,
    ...: the forward applies the head as is) with the LM head and its softmax only where a loss
    or a logprob reads them (`select`), not at prompt and feedback tokens."""
    hidden = policy.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logp, entropy = head_logprobs_and_entropy(policy.get_output_embeddings(), hidden[:, :-1][select[:, 1:]], input_ids,
                                              select, temperature)
    return logp, entropy, hidden


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimates of KL(pi || pi_ref) from samples of pi, with r = pi_ref / pi:
    k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased, low variance),
    k3 = r - log r - 1 (unbiased, always >= 0)."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return log_ratio.exp() - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}: expected k1, k2 or k3")


AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, num_sequences: int, num_tokens: float,
              norm_constant: float = 1.0) -> torch.Tensor:
    """This micro-batch's share of the loss over a whole batch of `num_sequences` sequences with
    `num_tokens` masked tokens, so that the shares of all micro-batches add up to:
      seq_mean_token_mean      mean over sequences of each one's token mean (GRPO)
      token_mean               mean over every token of the batch (DAPO: long replies weigh more)
      seq_mean_token_sum_norm  mean over sequences of token sums / norm_constant (Dr.GRPO's
                               constant normaliser, e.g. the token budget: no length bias)"""
    if mode == "seq_mean_token_mean":
        return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / num_sequences
    if mode == "token_mean":
        return (values * mask).sum() / max(num_tokens, 1.0)
    if mode == "seq_mean_token_sum_norm":
        return (values * mask).sum() / norm_constant / num_sequences
    raise ValueError(f"unknown loss aggregation {mode!r}: expected one of {', '.join(AGGREGATIONS)}")


def masked_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's masked tokens, then over sequences (GRPO's aggregation)."""
    return aggregate(values, mask, "seq_mean_token_mean", values.shape[0], float(mask.sum()))


def ppo_clip_loss(logp, old_logp, advantages, mask, clip_eps: float, clip_eps_high: float | None = None):
    """-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) per token (eps_high defaults to eps_low;
    DAPO's clip-higher raises it); returns (per-token loss, clipped indicator)."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = (logp - old_logp).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float() * mask


def tis_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, cap: float):
    """Truncated importance sampling (Yao et al. 2025, "off-policy RL in disguise"): per token,
    min(pi_old / pi_rollout, cap), where pi_old is the learner's policy before the update and
    pi_rollout the one that sampled (older in the asynchronous loop; another implementation of
    the same weights in the synchronous one). Truncation bounds the variance a near-zero rollout
    probability would bring. Returns (weights, detached; 1 outside the mask) and their stats."""
    ratio = torch.exp((old_logp - rollout_logp) * mask).detach()
    weights = torch.where(mask > 0, ratio.clamp(max=cap), torch.ones_like(ratio))
    return weights, {"tis_weight": masked_sequence_mean(weights, mask), "tis_truncated": masked_sequence_mean((ratio > cap).float(), mask)}


def policy_loss(logp, old_logp, ref_logp, advantages, kl_weights, mask, clip_eps: float, *, clip_eps_high: float | None = None,
                kl_estimator: str = "k3", aggregation: str = "seq_mean_token_mean", num_sequences: int | None = None,
                num_tokens: float | None = None, norm_constant: float = 1.0, is_weights: torch.Tensor | None = None):
    """PPO-clip plus a per-token-weighted KL to the reference, aggregated as `aggregation` over a
    batch of `num_sequences` / `num_tokens` (default: this micro-batch alone). `ref_logp` None:
    every KL weight is 0 (the reference was not run), so the loss has no KL term and no KL stat.
    `is_weights` (tis_weights) multiply each token's policy-gradient term, not the KL. Stats are
    per-sequence means."""
    num_sequences = logp.shape[0] if num_sequences is None else num_sequences
    num_tokens = float(mask.sum()) if num_tokens is None else num_tokens
    pg, clipped = ppo_clip_loss(logp, old_logp, advantages, mask, clip_eps, clip_eps_high)
    if is_weights is not None:
        pg = pg * is_weights
    stats = {"clip_fraction": masked_sequence_mean(clipped, mask), "pg_loss": masked_sequence_mean(pg.detach(), mask)}
    per_token = pg
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        per_token = pg + kl_weights * kl
        stats["kl"] = masked_sequence_mean(kl.detach(), mask)
    return aggregate(per_token, mask, aggregation, num_sequences, num_tokens, norm_constant), stats


def clipped_value_loss(values, old_values, targets, mask, clip: float | None) -> torch.Tensor:
    """Sum over masked positions of 0.5 max((V - R)^2, (V_clipped - R)^2), with V_clipped kept
    within `clip` of the rollout-time value (PPO's value clipping; clip None: plain squared error)."""
    loss = (values - targets) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - targets) ** 2)
    return 0.5 * (loss * mask).sum()
