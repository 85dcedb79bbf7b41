"""The learner: a DeepSpeed engine over the policy, a frozen reference (only when some KL weight is
non-zero), and one PPO/GRPO step per rollout batch. `Learner` is one rank as a plain class;
`LearnerActor` is its Ray shell; `rl/cluster.py:LearnerGroup` hands each rank its own shard.

A step is explicit gradient accumulation: for each mini-batch, every micro-batch's loss is its
share of the mini-batch's aggregate over all ranks (normalised by the global counts, all-reduced
once per mini-batch), its gradients are added up, and the optimizer steps once. Old logprobs are
recomputed from the rollout's exact token ids: for the first mini-batch they equal the current
policy's (no update has happened yet), so only later mini-batches need a separate no-grad pass.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import ray
import torch

from rl.advantages import Estimator
from rl.config import AlgoConfig, Config, LearnerConfig
from rl.episode import Episode
from rl.losses import clipped_value_loss, policy_loss, selected_logits, selected_logprobs_and_entropy
from rl.weight_sync import TRANSPORTS, PublishedWeights, checksum_tensors

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Learner:
    def __init__(self, model_path: str, algo: AlgoConfig, resources: LearnerConfig, *, dtype: str, temperature: float,
                 seed: int, episodes_per_step: int, norm_tokens: int, reference: bool, critic: bool,
                 rank: int = 0, world_size: int = 1, master_addr: str = "127.0.0.1", master_port: int = 29500):
        """reference: load the frozen reference (some KL weight can be non-zero); critic: a value
        head for PPO's critic estimators; norm_tokens: Dr.GRPO's constant normaliser."""
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        import deepspeed
        from transformers import AutoModelForCausalLM

        self.algo, self.temperature, self.norm_tokens = algo, temperature, norm_tokens
        self.rank, self.world_size, self.critic = rank, world_size, critic
        # Ray pins actors to OMP_NUM_THREADS=num_cpus; the loop is synchronous (rollout workers
        # wait while the learner trains), so by default the learner uses every CPU of its node.
        torch.set_num_threads(resources.torch_threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        on_gpu = torch.cuda.is_available() and resources.num_gpus_per_rank > 0
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)

        self.policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=_DTYPES[dtype])
        model = TrainingModel(self.policy, value_head=critic)
        # beta = 0 everywhere: the reference can never change the loss, so it is never loaded.
        self.reference = (AutoModelForCausalLM.from_pretrained(model_path, dtype=_DTYPES[dtype]).eval().requires_grad_(False)
                          if reference else None)
        per_rank = episodes_per_step // algo.mini_batches // world_size
        ds_config = {
            "train_micro_batch_size_per_gpu": algo.micro_batch_size,
            "gradient_accumulation_steps": per_rank // algo.micro_batch_size,
            "train_batch_size": per_rank * world_size,
            "zero_optimization": {"stage": resources.zero_stage},
            "gradient_clipping": algo.grad_clip or 0.0,   # DeepSpeed's 0: no clipping
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": dtype == "float16"},
            "steps_per_print": 1 << 30,
        }
        # A torch optimizer: DeepSpeed's FusedAdam JIT-compiles C++ on CPU and can stall for minutes.
        optimizer = torch.optim.AdamW(model.parameters(), lr=algo.lr, weight_decay=algo.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.device = self.engine.device
        if self.reference is not None:
            self.reference.to(self.device)
        self.version = 0

    # -- training --------------------------------------------------------------------------

    def train_step(self, shard: Sequence[Sequence[Episode]]) -> dict[str, float]:
        """One optimizer step per mini-batch; shard[i] is this rank's part of mini-batch i."""
        start = time.monotonic()
        micro = self.algo.micro_batch_size
        micro_batches = [[list(m[i:i + micro]) for i in range(0, len(m), micro)] for m in shard]
        # Logprobs before any update, for every mini-batch after the first.
        old = [[self._logprobs(self.policy, mb) if i else None for mb in mbs] for i, mbs in enumerate(micro_batches)]
        refs = [[self._logprobs(self.reference, mb) if _has_kl(mb) else None for mb in mbs] for mbs in micro_batches]

        sums: dict[str, float] = {}
        norms: list[float] = []
        self.engine.train()
        for i, mbs in enumerate(micro_batches):
            sequences, tokens, value_points = self._global_counts([e for e in shard[i] if e.credit.trained])
            for mb, old_logp, ref_logp in zip(mbs, old[i], refs[i]):
                stats, loss = self._micro_batch_loss(mb, old_logp, ref_logp, sequences, tokens, value_points, first=i == 0)
                self.engine.backward(loss, scale_wrt_gas=False)   # the shares already add up to the mini-batch's loss
                if self.engine.is_gradient_accumulation_boundary():
                    norms.append(self._grad_norm_before_step())
                self.engine.step()
                stats["loss"] = loss.detach() * len(mbs)   # averaged over micro-batches below: the mini-batch's loss
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    sums[k + "_count"] = sums.get(k + "_count", 0.0) + 1.0
        self.version += 1
        if self.engine.zero_optimization_stage():  # ZeRO optimizers measure the norm of their partitioned grads
            norms = [float(self.engine.get_global_grad_norm() or 0.0)]
        sums["grad_norm"] = sum(norms) / len(norms)
        sums["tokens"] = float(sum(sum(e.layout.loss_mask) for m in shard for e in m if e.credit.trained))
        sums["seconds"] = time.monotonic() - start
        return sums

    def _micro_batch_loss(self, mb: list[Episode], old_logp, ref_logp, sequences: float, tokens: float,
                          value_points: float, first: bool):
        t = self._tensors(mb)
        logits, values = self.engine(t["ids"], t["attention"], t["select"])
        logp, entropy = selected_logprobs_and_entropy(logits, t["ids"], t["select"], self.temperature)
        a = self.algo
        loss, stats = policy_loss(
            logp, logp.detach() if old_logp is None else old_logp, ref_logp, t["adv"], t["kl_w"], t["mask"], a.clip_eps,
            clip_eps_high=a.clip_eps_high, kl_estimator=a.kl_estimator, aggregation=a.loss_aggregation,
            num_sequences=max(sequences, 1.0), num_tokens=max(tokens, 1.0), norm_constant=self.norm_tokens)
        if self.critic:
            value_loss = clipped_value_loss(values, t["v_old"], t["v_target"], t["v_mask"], a.value_clip)
            loss = loss + a.value_coef * value_loss / max(value_points, 1.0)
            stats["value_loss"] = value_loss.detach() / t["v_mask"].sum().clamp(min=1)
        n_tok = t["mask"].sum()
        stats["entropy"] = (entropy * t["mask"]).sum() / n_tok.clamp(min=1)
        if first:  # the policy still has the rollout weights: measures vLLM/learner agreement
            stats["rollout_logprob_abs_diff"] = ((logp.detach() - t["rollout_lp"]).abs() * t["mask"]).sum() / n_tok.clamp(min=1)
        return stats, loss

    def _global_counts(self, trained: list[Episode]) -> tuple[float, float, float]:
        """(sequences, tokens, value points) of the whole mini-batch, over all ranks, divided by
        the world size: DeepSpeed averages gradients over ranks, so normalising each rank's share
        by global count / world size makes the average the loss of the whole mini-batch, however
        unevenly the trained episodes fall between the ranks' shards."""
        counts = torch.tensor([float(len(trained)), float(sum(sum(e.layout.loss_mask) for e in trained)),
                               float(sum(len(e.credit.value_positions) for e in trained))], dtype=torch.float64)
        if self.world_size > 1:
            torch.distributed.all_reduce(counts)
        sequences, tokens, value_points = (counts / self.world_size).tolist()
        return sequences, tokens, value_points

    def _grad_norm_before_step(self) -> float:
        """Norm of the (already all-reduced) gradients; DeepSpeed discards it for plain fp32."""
        grads = [p.grad.float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _inputs(self, episodes: Sequence[Episode]) -> dict[str, torch.Tensor]:
        """Right-padded token ids and attention mask: all a forward pass needs."""
        rows = [e.layout.token_ids for e in episodes]
        width = max(len(r) for r in rows)
        return {
            "ids": torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=self.device),
            "attention": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=self.device),
        }

    def _tensors(self, episodes: Sequence[Episode]) -> dict[str, torch.Tensor]:
        """The inputs plus everything the loss needs (credit must be assigned)."""
        width = max(len(e.layout.token_ids) for e in episodes)

        def pad(rows, value=0, dtype=torch.float32):
            return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype, device=self.device)

        mask = pad([_loss_mask(e) for e in episodes])
        return {
            **self._inputs(episodes),
            "mask": mask,
            "select": mask > 0,   # the only positions whose logits the loss reads
            "adv": pad([e.token_advantages() for e in episodes]),
            "kl_w": pad([e.token_kl_coefs() for e in episodes]),
            "rollout_lp": pad([e.layout.rollout_logprobs for e in episodes]),
            **(self._value_tensors(episodes, width) if self.critic else {}),
        }

    def _value_tensors(self, episodes: Sequence[Episode], width: int) -> dict[str, torch.Tensor]:
        """The critic's targets and rollout-time values scattered to their positions."""
        mask, old, target = (torch.zeros(len(episodes), width, device=self.device) for _ in range(3))
        for row, e in enumerate(episodes):
            if e.credit.trained and e.credit.value_positions:
                pos = torch.tensor(e.credit.value_positions, device=self.device)
                mask[row, pos] = 1.0
                old[row, pos] = torch.tensor(e.credit.old_values, device=self.device)
                target[row, pos] = torch.tensor(e.credit.value_targets, device=self.device)
        return {"v_mask": mask, "v_old": old, "v_target": target}

    @torch.no_grad()
    def _logprobs(self, model, episodes: Sequence[Episode], trained_only: bool = True) -> torch.Tensor:
        """Logprobs of the policy tokens (of trained episodes only, for the loss; of every episode,
        for credit's reference pass) under `model`; 0 elsewhere."""
        t = self._inputs(episodes)
        width = t["ids"].shape[1]
        rows = [_loss_mask(e) if trained_only else e.layout.loss_mask for e in episodes]
        select = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.bool, device=self.device)
        logits, _ = selected_logits(model, t["ids"], t["attention"], select)
        return selected_logprobs_and_entropy(logits, t["ids"], select, self.temperature)[0]

    # -- the passes credit assignment reads ------------------------------------------------

    @torch.no_grad()
    def passes(self, episodes: Sequence[Episode], reference: bool, values: bool) -> dict[str, list[list[float]]]:
        """For this rank's episodes, in order: the reference's logprob of every token
        ('reference') and the critic's value at every position ('values'), as asked."""
        out: dict[str, list[list[float]]] = {name: [] for name, wanted in (("reference", reference), ("values", values)) if wanted}
        micro = self.algo.micro_batch_size
        for i in range(0, len(episodes), micro):
            mb = episodes[i:i + micro]
            lengths = [len(e.layout.token_ids) for e in mb]
            if reference:
                ref = self._logprobs(self.reference, mb, trained_only=False).tolist()
                out["reference"] += [row[:n] for row, n in zip(ref, lengths)]
            if values:
                t = self._inputs(mb)
                _, v = self.engine.module(t["ids"], t["attention"], torch.zeros_like(t["ids"], dtype=torch.bool))
                out["values"] += [row[:n] for row, n in zip(v.float().tolist(), lengths)]
        return out

    # -- weights ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's tensors, each stored once: a tied lm_head shares the embedding's storage
        (safetensors refuses shared tensors, the object store would carry it twice, and vLLM
        re-ties it on load)."""
        state, seen = {}, set()
        for name, tensor in self.policy.state_dict().items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                state[name] = tensor
        return state

    def publish(self, transport: str, directory: str, bucket_mb: float) -> PublishedWeights:
        """Rank 0 publishes the current weights for the rollout workers through `transport`
        (rl/weight_sync.py; `directory`: where its files go on this node)."""
        return TRANSPORTS.get(transport)(directory, bucket_mb).publish(self.state_dict(), self.version)

    def parameter_names(self) -> list[str]:
        return list(self.state_dict())

    def checksum(self, names: list[str] | None = None) -> str:
        state = self.state_dict()
        return checksum_tensors({k: state[k] for k in names} if names is not None else state)

    def save(self, directory: str, tokenizer_path: str) -> str:
        from transformers import AutoTokenizer

        Path(directory).mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(directory)
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)
        return directory

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def shards(batch: Sequence[Episode], mini_batches: int, world_size: int) -> list[list[list[Episode]]]:
    """shards[r][i]: rank r's part of mini-batch i. Mini-batches are contiguous slices of the
    batch; rank r trains on every world_size-th episode of each."""
    size = len(batch) // mini_batches
    minis = [list(batch[i * size:(i + 1) * size]) for i in range(mini_batches)]
    return [[m[rank::world_size] for m in minis] for rank in range(world_size)]


def learner_options(cfg: Config, estimator: Estimator) -> dict:
    """What a Learner takes from the config (all but the model path and its rank's place)."""
    a = cfg.algo
    return dict(
        algo=a, resources=cfg.learner, dtype=cfg.model.dtype, temperature=cfg.rollout.temperature, seed=cfg.run.seed,
        episodes_per_step=cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task,
        norm_tokens=a.loss_norm_tokens if a.loss_norm_tokens is not None else cfg.rollout.max_new_tokens * cfg.episode.max_turns,
        reference=a.kl_coef > 0 or a.kl_coef_first_turn > 0, critic=estimator.needs_critic)


def _loss_mask(episode: Episode) -> list[int]:
    """The tokens the loss trains on: the policy's, of an episode not left out of the loss."""
    return episode.layout.loss_mask if episode.credit.trained else [0] * len(episode.layout.loss_mask)


def _has_kl(episodes: Sequence[Episode]) -> bool:
    """Whether any trained token of these episodes carries a KL weight (else the reference pass
    could not change the loss, and is skipped)."""
    return any(c for e in episodes if e.credit.trained for c in e.credit.kl_coefs)


class TrainingModel(torch.nn.Module):
    """The policy as the engine trains it: forward(ids, attention, select) -> (logits at the
    selected targets only, values or None); with `value_head`, PPO's scalar critic on the last
    hidden state (zero-initialised: V = 0 everywhere at the start)."""

    def __init__(self, policy, value_head: bool):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(policy.config.hidden_size, 1, dtype=policy.dtype) if value_head else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, select):
        logits, hidden = selected_logits(self.policy, input_ids, attention_mask, select)
        return logits, None if self.value_head is None else self.value_head(hidden).squeeze(-1)


LearnerActor = ray.remote(Learner)
