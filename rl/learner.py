"""The learner: a DeepSpeed engine over the policy, a frozen reference, and one PPO/GRPO step per
rollout batch. `Learner` is one rank as a plain class; `LearnerActor` is its Ray shell.

Every rank receives the whole batch and trains on its own slice of each mini-batch; DeepSpeed
averages gradients across ranks. Old logprobs are recomputed from the rollout's exact token ids:
for the first mini-batch they equal the current policy's (no update has happened yet), so only
later mini-batches need a separate no-grad pass.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import ray
import torch

from rl.config import Config
from rl.losses import policy_loss, token_logprobs_and_entropy
from rl.trajectory import ENV_TURN, Trajectory
from rl.weight_sync import checksum_tensors, publish_weights

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Learner:
    def __init__(self, cfg: Config, model_path: str, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500):
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        import deepspeed
        from transformers import AutoModelForCausalLM

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        if cfg.learner.torch_threads:
            torch.set_num_threads(cfg.learner.torch_threads)
        torch.manual_seed(cfg.run.seed)
        on_gpu = torch.cuda.is_available() and cfg.learner.num_gpus_per_rank > 0
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)

        dtype = _DTYPES[cfg.model.dtype]
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).eval().requires_grad_(False)
        episodes_per_rank = cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task // cfg.algo.mini_batches // world_size
        ds_config = {
            "train_micro_batch_size_per_gpu": cfg.algo.micro_batch_size,
            "gradient_accumulation_steps": episodes_per_rank // cfg.algo.micro_batch_size,
            "train_batch_size": episodes_per_rank * world_size,
            "zero_optimization": {"stage": cfg.learner.zero_stage},
            "gradient_clipping": cfg.algo.grad_clip,
            "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
            "fp16": {"enabled": cfg.model.dtype == "float16"},
            "steps_per_print": 1 << 30,
        }
        # A torch optimizer: DeepSpeed's FusedAdam JIT-compiles C++ on CPU and can stall for minutes.
        optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.algo.lr, weight_decay=cfg.algo.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=policy, optimizer=optimizer, config=ds_config)
        self.device = self.engine.device
        self.reference.to(self.device)
        self.version = 0

    # -- training --------------------------------------------------------------------------

    def train_step(self, batch: list[Trajectory]) -> dict[str, float]:
        cfg = self.cfg
        start = time.monotonic()
        mini_size = len(batch) // cfg.algo.mini_batches
        minis = [batch[i * mini_size:(i + 1) * mini_size][self.rank::self.world_size] for i in range(cfg.algo.mini_batches)]
        micro = cfg.algo.micro_batch_size
        micro_batches = [[m[i:i + micro] for i in range(0, len(m), micro)] for m in minis]
        # Logprobs before any update, for every mini-batch after the first.
        old = [[self._logprobs(self.engine.module, mb) if i else None for mb in mbs] for i, mbs in enumerate(micro_batches)]
        refs = [[self._logprobs(self.reference, mb) for mb in mbs] for mbs in micro_batches]

        sums: dict[str, float] = {}
        norms: list[float] = []
        self.engine.train()
        for i, mbs in enumerate(micro_batches):
            for mb, old_logp, ref_logp in zip(mbs, old[i], refs[i]):
                t = self._tensors(mb)
                logits = self.engine(input_ids=t["ids"], attention_mask=t["attention"]).logits
                logp, entropy = token_logprobs_and_entropy(logits, t["ids"], cfg.rollout.temperature)
                old_logp = logp.detach() if old_logp is None else old_logp
                loss, stats = policy_loss(logp, old_logp, ref_logp, t["adv"], t["kl_w"], t["mask"], cfg.algo.clip_eps)
                self.engine.backward(loss)
                if self.engine.is_gradient_accumulation_boundary():
                    norms.append(self._grad_norm_before_step())
                self.engine.step()
                n_tok = t["mask"].sum()
                stats["loss"] = loss.detach()
                stats["entropy"] = (entropy * t["mask"]).sum() / n_tok.clamp(min=1)
                if i == 0:  # the policy still has the rollout weights: measures vLLM/learner agreement
                    stats["rollout_logprob_abs_diff"] = ((logp.detach() - t["rollout_lp"]).abs() * t["mask"]).sum() / n_tok.clamp(min=1)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    sums[k + "_count"] = sums.get(k + "_count", 0.0) + 1.0
                sums["tokens"] = sums.get("tokens", 0.0) + float(n_tok)
        self.version += 1
        if self.cfg.learner.zero_stage:  # ZeRO optimizers measure the norm of their partitioned grads
            norms = [float(self.engine.get_global_grad_norm() or 0.0)]
        sums["grad_norm"] = sum(norms) / len(norms)
        sums["seconds"] = time.monotonic() - start
        return sums

    def _grad_norm_before_step(self) -> float:
        """Norm of the (already all-reduced) gradients; DeepSpeed discards it for plain fp32."""
        grads = [p.grad.float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _tensors(self, trajectories: list[Trajectory]) -> dict[str, torch.Tensor]:
        width = max(len(t.token_ids) for t in trajectories)
        kl = (self.cfg.algo.kl_coef_first_turn, self.cfg.algo.kl_coef)

        def pad(rows, value=0, dtype=torch.float32):
            return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=dtype, device=self.device)

        return {
            "ids": pad([t.token_ids for t in trajectories], dtype=torch.long),
            "attention": pad([[1] * len(t.token_ids) for t in trajectories], dtype=torch.long),
            "mask": pad([t.loss_mask for t in trajectories]),
            "adv": pad([t.token_advantages() for t in trajectories]),
            "kl_w": pad([[0.0 if k == ENV_TURN else kl[min(k, 1)] for k in t.turn_ids] for t in trajectories]),
            "rollout_lp": pad([t.rollout_logprobs for t in trajectories]),
        }

    @torch.no_grad()
    def _logprobs(self, model, trajectories: list[Trajectory]) -> torch.Tensor:
        t = self._tensors(trajectories)
        logits = model(input_ids=t["ids"], attention_mask=t["attention"]).logits
        return token_logprobs_and_entropy(logits, t["ids"], self.cfg.rollout.temperature)[0]

    # -- weights ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's tensors, each stored once: a tied lm_head shares the embedding's storage
        (safetensors refuses shared tensors, and vLLM re-ties it on load)."""
        state, seen = {}, set()
        for name, tensor in self.engine.module.state_dict().items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                state[name] = tensor
        return state

    def publish(self, directory: str) -> tuple[str, str, int]:
        """Rank 0 writes the current weights for the rollout workers: (path, checksum, version)."""
        state = self.state_dict()
        return publish_weights(state, directory, self.version), checksum_tensors(state), self.version

    def parameter_names(self) -> list[str]:
        return list(self.state_dict())

    def checksum(self, names: list[str] | None = None) -> str:
        state = self.state_dict()
        return checksum_tensors({k: state[k] for k in names} if names is not None else state)

    def save(self, directory: str, tokenizer_path: str) -> str:
        from transformers import AutoTokenizer

        Path(directory).mkdir(parents=True, exist_ok=True)
        self.engine.module.save_pretrained(directory)
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)
        return directory

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


LearnerActor = ray.remote(Learner)
