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
from rl.critic import CRITIC_ESTIMATORS
from rl.losses import clipped_value_loss, policy_loss, token_logprobs_and_entropy
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
        # Ray pins actors to OMP_NUM_THREADS=num_cpus; the loop is synchronous (rollout workers
        # wait while the learner trains), so by default the learner uses every CPU of its node.
        torch.set_num_threads(cfg.learner.torch_threads or os.cpu_count() or 1)
        torch.manual_seed(cfg.run.seed)
        on_gpu = torch.cuda.is_available() and cfg.learner.num_gpus_per_rank > 0
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)

        dtype = _DTYPES[cfg.model.dtype]
        self.policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        # PPO's critic (rl/critic.py): a value head on the policy's last hidden state.
        self.critic = cfg.algo.advantage in CRITIC_ESTIMATORS
        model = PolicyWithValue(self.policy) if self.critic else self.policy
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
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.algo.lr, weight_decay=cfg.algo.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
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
        old = [[self._logprobs(self.policy, mb) if i else None for mb in mbs] for i, mbs in enumerate(micro_batches)]
        refs = [[self._logprobs(self.reference, mb) for mb in mbs] for mbs in micro_batches]

        sums: dict[str, float] = {}
        norms: list[float] = []
        norm_tokens = cfg.algo.loss_norm_tokens or cfg.rollout.max_new_tokens * cfg.episode.max_turns
        self.engine.train()
        for i, mbs in enumerate(micro_batches):
            # The loss of each micro-batch is its share of the mini-batch's (all ranks') aggregate;
            # DeepSpeed averages over ranks, so each rank normalises by its share of the counts.
            trained = [t for t in minis[i] if t.trained]
            all_tokens = sum(sum(t.loss_mask) for t in batch[i * mini_size:(i + 1) * mini_size] if t.trained)
            value_points = sum(len(t.value_positions) for t in trained)
            for mb, old_logp, ref_logp in zip(mbs, old[i], refs[i]):
                t = self._tensors(mb)
                if self.critic:
                    logits, values = self.engine(input_ids=t["ids"], attention_mask=t["attention"])
                else:
                    logits = self.engine(input_ids=t["ids"], attention_mask=t["attention"]).logits
                logp, entropy = token_logprobs_and_entropy(logits, t["ids"], cfg.rollout.temperature)
                old_logp = logp.detach() if old_logp is None else old_logp
                loss, stats = policy_loss(
                    logp, old_logp, ref_logp, t["adv"], t["kl_w"], t["mask"], cfg.algo.clip_eps,
                    clip_eps_high=cfg.algo.clip_eps_high or None, kl_estimator=cfg.algo.kl_estimator,
                    aggregation=cfg.algo.loss_aggregation, num_sequences=max(len(trained), 1),
                    num_tokens=max(all_tokens / self.world_size, 1.0), norm_constant=norm_tokens)
                if self.critic:
                    value_loss = clipped_value_loss(values, t["v_old"], t["v_target"], t["v_mask"], cfg.algo.value_clip)
                    loss = loss + cfg.algo.value_coef * value_loss / max(value_points, 1)
                    stats["value_loss"] = value_loss.detach() / t["v_mask"].sum().clamp(min=1)
                self.engine.backward(loss, scale_wrt_gas=False)
                if self.engine.is_gradient_accumulation_boundary():
                    norms.append(self._grad_norm_before_step())
                self.engine.step()
                n_tok = t["mask"].sum()
                stats["loss"] = loss.detach() * len(mbs)   # averaged over micro-batches below: the mini-batch's loss
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

    def _inputs(self, trajectories: list[Trajectory]) -> dict[str, torch.Tensor]:
        """Right-padded token ids and attention mask: all a forward pass needs."""
        width = max(len(t.token_ids) for t in trajectories)
        pad = [width - len(t.token_ids) for t in trajectories]
        return {
            "ids": torch.tensor([t.token_ids + [0] * p for t, p in zip(trajectories, pad)], dtype=torch.long, device=self.device),
            "attention": torch.tensor([[1] * len(t.token_ids) + [0] * p for t, p in zip(trajectories, pad)], dtype=torch.long, device=self.device),
        }

    def _tensors(self, trajectories: list[Trajectory]) -> dict[str, torch.Tensor]:
        """The inputs plus everything the loss needs (advantages must be assigned)."""
        width = max(len(t.token_ids) for t in trajectories)

        def pad(rows, value=0, dtype=torch.float32):
            return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=dtype, device=self.device)

        return {
            **self._inputs(trajectories),
            "mask": pad([t.loss_mask if t.trained else [0] * len(t.loss_mask) for t in trajectories]),
            "adv": pad([t.token_advantages() for t in trajectories]),
            "kl_w": pad([t.token_kl_coefs() for t in trajectories]),
            "rollout_lp": pad([t.rollout_logprobs for t in trajectories]),
            **(self._value_tensors(trajectories, width) if self.critic else {}),
        }

    def _value_tensors(self, trajectories: list[Trajectory], width: int) -> dict[str, torch.Tensor]:
        """The critic's targets and rollout-time values scattered to their positions."""
        mask, old, target = (torch.zeros(len(trajectories), width, device=self.device) for _ in range(3))
        for row, traj in enumerate(trajectories):
            if traj.trained and traj.value_positions:
                pos = torch.tensor(traj.value_positions, device=self.device)
                mask[row, pos] = 1.0
                old[row, pos] = torch.tensor(traj.old_values, device=self.device)
                target[row, pos] = torch.tensor(traj.value_targets, device=self.device)
        return {"v_mask": mask, "v_old": old, "v_target": target}

    @torch.no_grad()
    def _logprobs(self, model, trajectories: list[Trajectory]) -> torch.Tensor:
        t = self._inputs(trajectories)
        logits = model(input_ids=t["ids"], attention_mask=t["attention"]).logits
        return token_logprobs_and_entropy(logits, t["ids"], self.cfg.rollout.temperature)[0]

    def _my_micro_batches(self, n: int) -> list[list[int]]:
        """This rank's indices of an n-trajectory batch, in micro-batches (for no-grad passes)."""
        mine = list(range(self.rank, n, self.world_size))
        micro = self.cfg.algo.micro_batch_size
        return [mine[i:i + micro] for i in range(0, len(mine), micro)]

    def turn_kl(self, batch: list[Trajectory]) -> list[tuple[int, list[float]]]:
        """This rank's share of the batch: (index, per-turn mean of log(pi_rollout / pi_ref) over
        the turn's tokens), the KL penalty RLEF and CoCoS put in the reward."""
        out = []
        for idx in self._my_micro_batches(len(batch)):
            trajectories = [batch[i] for i in idx]
            ref = self._logprobs(self.reference, trajectories).tolist()
            for row, (i, traj) in enumerate(zip(idx, trajectories)):
                sums = [0.0] * traj.num_turns
                counts = [0] * traj.num_turns
                for turn, rollout_lp, ref_lp in zip(traj.turn_ids, traj.rollout_logprobs, ref[row]):
                    if turn != ENV_TURN:
                        sums[turn] += rollout_lp - ref_lp
                        counts[turn] += 1
                out.append((i, [s / max(c, 1) for s, c in zip(sums, counts)]))
        return out

    @torch.no_grad()
    def values(self, batch: list[Trajectory]) -> list[tuple[int, list[float]]]:
        """This rank's share of the batch: (index, the critic's value at every position)."""
        out = []
        for idx in self._my_micro_batches(len(batch)):
            t = self._inputs([batch[i] for i in idx])
            _, values = self.engine.module(input_ids=t["ids"], attention_mask=t["attention"])
            out += [(i, values[row, :len(batch[i].token_ids)].float().tolist()) for row, i in enumerate(idx)]
        return out

    # -- weights ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's tensors, each stored once: a tied lm_head shares the embedding's storage
        (safetensors refuses shared tensors, and vLLM re-ties it on load)."""
        state, seen = {}, set()
        for name, tensor in self.policy.state_dict().items():
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
        self.policy.save_pretrained(directory)
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)
        return directory

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class PolicyWithValue(torch.nn.Module):
    """The policy and a scalar value head on its last hidden state: forward -> (logits, values)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(policy.config.hidden_size, 1, dtype=policy.dtype)
        torch.nn.init.zeros_(self.value_head.weight)   # start from V = 0 everywhere
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)


LearnerActor = ray.remote(Learner)
