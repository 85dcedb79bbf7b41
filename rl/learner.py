"""The learner: a DeepSpeed engine over the policy, a frozen reference (only when some KL weight is
non-zero), and one PPO/GRPO step per rollout batch. `Learner` is one rank as a plain class;
`LearnerActor` is its Ray shell; `rl/cluster.py:LearnerGroup` hands each rank its own shard.

A step is explicit gradient accumulation: for each mini-batch, every pass's loss is its share of
the mini-batch's aggregate over all ranks (normalised by the whole mini-batch's counts, which the
group computes once in `shards`), its gradients are added up, and the optimizer steps once. Old logprobs are
recomputed from the rollout's exact token ids: for the first mini-batch they equal the current
policy's (no update has happened yet), so only later mini-batches need a separate no-grad pass.
"""
from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ray
import torch

from rl.advantages import Estimator
from rl.config import AlgoConfig, Config, LearnerConfig, WeightSyncConfig
from rl.episode import Episode
from rl.logs import redirect_output
from rl.lora import adapters_disabled, apply_lora, merged_state_dict
from rl.losses import clipped_value_loss, policy_logprobs_and_entropy, policy_loss, tis_weights
from rl.weight_sync import TRANSPORTS, PublishedWeights, Transport, checksum_tensors

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BUILD_LOCK_STALE_S = 900.0   # DeepSpeed's CPU ops build here in well under a minute


def sweep_stale_build_locks(root: Path, stale_s: float = BUILD_LOCK_STALE_S) -> list[Path]:
    """Remove the JIT build locks under `root` (torch_extensions/<python>_<device>/<op>/lock) older
    than `stale_s`; returns them. A build killed mid-way leaves its lock, and every later load of that
    op waits on it forever (torch's FileBaton has no owner to ask)."""
    removed = []
    for lock in root.glob("*/*/lock"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - lock.stat().st_mtime > stale_s:
                lock.unlink()
                removed.append(lock)
                print(f"warning: removed a stale build lock {lock} (older than {stale_s:.0f} s: its build was killed)",
                      file=sys.stderr)
    return removed


def start_stale_lock_sweeper(every_s: float = 30.0) -> None:
    """In this process, sweep stale build locks now and every `every_s` seconds (one daemon thread
    per process, however many learners it holds), so that DeepSpeed's wait on a dead build's lock
    ends within BUILD_LOCK_STALE_S instead of never."""
    if any(t.name == "stale-build-lock-sweeper" for t in threading.enumerate()):
        return
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")

    def sweep_forever():
        while True:
            sweep_stale_build_locks(root)
            time.sleep(every_s)

    threading.Thread(target=sweep_forever, name="stale-build-lock-sweeper", daemon=True).start()


class Learner:
    def __init__(self, model_path: str, algo: AlgoConfig, resources: LearnerConfig, *, dtype: str, temperature: float,
                 seed: int, episodes_per_step: int, norm_tokens: int, reference: bool, critic: bool,
                 rank: int = 0, world_size: int = 1, master_addr: str = "127.0.0.1", master_port: int = 29500,
                 log_file: str | None = None):
        """reference: load the frozen reference (some KL weight can be non-zero); critic: a value
        head for PPO's critic estimators; norm_tokens: Dr.GRPO's constant normaliser; log_file:
        where DeepSpeed's output goes (rl/logs.py)."""
        redirect_output(log_file)
        start_stale_lock_sweeper()   # DeepSpeed JIT-loads ops below (its comm op in init_distributed)
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
        self.lora = resources.lora_rank > 0
        if self.lora:   # adapters only are trained; the reference is the policy with them switched off
            apply_lora(self.policy, resources.lora_rank, resources.lora_alpha)
        if resources.gradient_checkpointing:   # non-reentrant: also right when no input requires a gradient
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = TrainingModel(self.policy, value_head=critic, temperature=temperature)
        # beta = 0 everywhere: the reference can never change the loss, so it is never loaded.
        self.reference = (AutoModelForCausalLM.from_pretrained(model_path, dtype=_DTYPES[dtype]).eval().requires_grad_(False)
                          if reference and not self.lora else None)
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
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=algo.lr, weight_decay=algo.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.device = self.engine.device
        if self.reference is not None:
            self.reference.to(self.device)
        self.version = 0
        self.transports: dict[tuple[str, str], Transport] = {}   # one per (transport, directory): tcp serves from it

    # -- training --------------------------------------------------------------------------

    def train_step(self, shard: Sequence["MiniBatchPart"]) -> dict[str, float]:
        """One optimizer step per mini-batch; shard[i] is this rank's part of mini-batch i (see
        `shards`). Returns sums and counts of the statistics (the group divides them)."""
        start = time.monotonic()
        micro_batches = [part.micro_batches for part in shard]
        # Logprobs before any update, for every mini-batch after the first.
        old = [[self._logprobs(self.policy, mb) if i and mb else None for mb in mbs] for i, mbs in enumerate(micro_batches)]
        refs = [[self._reference_logprobs(mb) if _has_kl(mb) else None for mb in mbs] for mbs in micro_batches]

        sums: dict[str, float] = {}

        def add(key: str, value: float, count: float) -> None:
            sums[key] = sums.get(key, 0.0) + float(value)
            sums[key + "_count"] = sums.get(key + "_count", 0.0) + float(count)

        norms: list[float] = []
        self.engine.train()
        for i, (part, mbs) in enumerate(zip(shard, micro_batches)):
            # DeepSpeed averages gradients over ranks, so each rank's share is normalised by the
            # mini-batch's global counts over the world size: the average is the mini-batch's loss.
            norm = [max(n / self.world_size, 1e-12) for n in (part.sequences, part.tokens, part.value_points)]
            loss_sum = 0.0
            for j, (mb, old_logp, ref_logp) in enumerate(zip(mbs, old[i], refs[i])):
                # Every rank makes the same number of passes per mini-batch (their collectives
                # line up); the last is the accumulation boundary, where gradients are
                # all-reduced and the optimizer steps.
                self.engine.set_gradient_accumulation_boundary(j == len(mbs) - 1)
                loss = self._micro_batch_loss(mb, old_logp, ref_logp, *norm, first=i == 0, add=add) if mb else self._null_loss()
                self.engine.backward(loss, scale_wrt_gas=False)   # the shares already add up to the mini-batch's loss
                loss_sum += float(loss.detach())
            norms.append(self._grad_norm_before_step())
            self.engine.step()
            add("loss", loss_sum, 1.0)
            # Left-out episodes' policy-gradient terms are exactly 0 (no advantage, not clipped).
            add("pg_loss", 0.0, part.left_out)
            add("clip_fraction", 0.0, part.left_out)
        self.version += 1
        if self.engine.zero_optimization_stage():  # ZeRO optimizers measure the norm of their partitioned grads
            norms = [float(self.engine.get_global_grad_norm() or 0.0)]
        sums["grad_norm"] = sum(norms) / len(norms)
        sums["tokens_computed"] = float(sum(len(e.layout.token_ids) for part in shard for e in part.episodes))
        sums["tokens_padded"] = float(sum(len(mb) * max(len(e.layout.token_ids) for e in mb) for mbs in micro_batches for mb in mbs if mb))
        sums["seconds"] = time.monotonic() - start
        sums["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux reports KiB
        sums["at_reference"] = float(self.at_reference())
        return sums

    def at_reference(self) -> bool:
        """Whether the policy is still exactly the KL reference (no update has moved it yet:
        the first steps of a run whose rewards are all equal, or a run just started). There the
        k2 and k3 KL terms have exactly zero gradient (both are stationary at pi = pi_ref), so an
        episode kept for its KL weight alone cannot move the loss. Exact comparison; False when
        it cannot be checked cheaply (ZeRO-3's partitioned parameters)."""
        if self.engine.zero_optimization_stage() == 3:
            return False
        if self.lora:   # the reference is the frozen base: equal while every adapter's B is 0
            return not any(bool(p.any()) for name, p in self.policy.named_parameters() if name.endswith("lora_b"))
        if self.reference is None:
            return False
        reference = dict(self.reference.named_parameters())
        return all(torch.equal(p, reference[name]) for name, p in self.policy.named_parameters())

    def _micro_batch_loss(self, mb: list[Episode], old_logp, ref_logp, sequences: float, tokens: float,
                          value_points: float, first: bool, add):
        """This micro-batch's share of the mini-batch's loss; its statistics go to `add`."""
        t = self._tensors(mb)
        logp, entropy, values = self.engine(t["ids"], t["attention"], t["select"])
        a = self.algo
        old_logp = logp.detach() if old_logp is None else old_logp
        is_weights, tis = tis_weights(old_logp, t["rollout_lp"], t["mask"], a.tis_cap) if a.tis_cap is not None else (None, {})
        loss, stats = policy_loss(
            logp, old_logp, ref_logp, t["adv"], t["kl_w"], t["mask"], a.clip_eps,
            clip_eps_high=a.clip_eps_high, kl_estimator=a.kl_estimator, aggregation=a.loss_aggregation,
            num_sequences=sequences, num_tokens=tokens, norm_constant=self.norm_tokens, is_weights=is_weights)
        stats.update(tis)
        rows = len(mb)
        for key, value in stats.items():   # per-sequence means over the micro-batch: summed over its rows
            add(key, value * rows, rows)
        if self.critic:
            value_loss = clipped_value_loss(values, t["v_old"], t["v_target"], t["v_mask"], a.value_clip)
            loss = loss + a.value_coef * value_loss / value_points
            add("value_loss", value_loss.detach(), t["v_mask"].sum())   # per critic target, over the mini-batch
        n_tok = float(t["mask"].sum())
        add("entropy", (entropy * t["mask"]).sum(), n_tok)
        if first:  # the policy still has the rollout weights: measures vLLM/learner agreement
            add("rollout_logprob_abs_diff", ((logp.detach() - t["rollout_lp"]).abs() * t["mask"]).sum(), n_tok)
        return loss

    def _null_loss(self) -> torch.Tensor:
        """A pass whose gradient is exactly 0 for every parameter, for a rank left with no episode
        of this mini-batch: it still joins the gradient all-reduce (and, under ZeRO, every
        parameter's hooks), and the optimizer steps as it would on masked episodes."""
        ids = torch.zeros(1, 2, dtype=torch.long, device=self.device)
        select = torch.tensor([[False, True]], device=self.device)
        logp, _, values = self.engine(ids, torch.ones_like(ids), select)
        return logp.sum() * 0.0 + (values.sum() * 0.0 if values is not None else 0.0)

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
        return policy_logprobs_and_entropy(model, t["ids"], t["attention"], select, self.temperature)[0]

    def _reference_logprobs(self, episodes: Sequence[Episode], trained_only: bool = True) -> torch.Tensor:
        """Logprobs under the reference: the frozen copy, or with LoRA the policy without its adapters."""
        if not self.lora:
            return self._logprobs(self.reference, episodes, trained_only)
        with adapters_disabled(self.policy):
            return self._logprobs(self.policy, episodes, trained_only)

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
                ref = self._reference_logprobs(mb, trained_only=False).tolist()
                out["reference"] += [row[:n] for row, n in zip(ref, lengths)]
            if values:
                t = self._inputs(mb)
                _, _, v = self.engine.module(t["ids"], t["attention"], torch.zeros_like(t["ids"], dtype=torch.bool))
                out["values"] += [row[:n] for row, n in zip(v.float().tolist(), lengths)]
        return out

    # -- weights ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's tensors, each stored once: a tied lm_head shares the embedding's storage
        (safetensors refuses shared tensors, the object store would carry it twice, and vLLM
        re-ties it on load)."""
        state, seen = {}, set()
        for name, tensor in (merged_state_dict(self.policy) if self.lora else self.policy.state_dict()).items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                state[name] = tensor
        return state

    @contextlib.contextmanager
    def _full_parameters(self):
        """The policy's whole parameters inside the block. Under ZeRO-3 each rank holds only its
        partition, so gathering them is a collective that every rank enters: the methods below
        are then called on every rank (rl/cluster.py:LearnerGroup), and only rank 0 answers."""
        if self.engine.zero_optimization_stage() == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.policy.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def publish(self, transport: str, directory: str, sync: WeightSyncConfig) -> PublishedWeights | None:
        """Rank 0 publishes the current weights for the rollout workers through `transport`
        (rl/weight_sync.py; `directory`: where its files go on this node; `sync`: the run's
        weight_sync settings)."""
        with self._full_parameters():
            if self.rank != 0:
                return None
            if (transport, directory) not in self.transports:
                self.transports[transport, directory] = TRANSPORTS.get(transport)(directory, sync.bucket_mb, sync.port, sync.timeout_s)
            return self.transports[transport, directory].publish(self.state_dict(), self.version)

    def parameter_names(self) -> list[str]:
        with self._full_parameters():
            return list(self.state_dict())

    def checksum(self, names: list[str] | None = None) -> str:
        with self._full_parameters():
            state = self.state_dict()
            return checksum_tensors({k: state[k] for k in names} if names is not None else state)

    def save(self, directory: str, tokenizer_path: str) -> str | None:
        from transformers import AutoTokenizer

        with self._full_parameters():
            if self.rank:
                return None
            Path(directory).mkdir(parents=True, exist_ok=True)
            # with LoRA, a plain model: the merged weights under the base model's names
            self.policy.save_pretrained(directory, **({"state_dict": merged_state_dict(self.policy)} if self.lora else {}))
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)
        return directory

    # -- checkpoints (rl/checkpoint.py) -----------------------------------------------------

    def save_checkpoint(self, directory: str) -> None:
        """This rank's part of a checkpoint: DeepSpeed's (module with the critic, optimizer, its
        step counts; with ZeRO, this rank's partition: every rank must call it) and this rank's
        torch RNG."""
        self.engine.save_checkpoint(directory, tag="engine", client_state={"version": self.version}, save_latest=False)
        torch.save(torch.get_rng_state(), Path(directory) / f"torch-rng-rank{self.rank}.pt")

    def load_checkpoint(self, directory: str) -> int:
        """Continue from a checkpoint of the same configuration; returns the weight version."""
        path, client = self.engine.load_checkpoint(directory, tag="engine", load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{directory}: no learner checkpoint (DeepSpeed found nothing to load)")
        torch.set_rng_state(torch.load(Path(directory) / f"torch-rng-rank{self.rank}.pt"))
        self.version = client["version"]
        return self.version

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


@dataclass(frozen=True)
class MiniBatchPart:
    """One rank's part of one mini-batch, laid out in passes. Only episodes whose loss terms can
    be non-zero are in it (`contributes`): the others' gradient is exactly 0, so they are left
    out before the forward pass. The normalisers are the whole mini-batch's (all its trained
    episodes), the same on every rank, so neither leaving episodes out nor how the rest are
    grouped into passes changes the loss or its gradient, but for float rounding."""

    micro_batches: list[list[Episode]]   # the passes, as many on every rank (an empty one: a zero-gradient pass)
    sequences: float       # the mini-batch's trained episodes,
    tokens: float          # their policy tokens,
    value_points: float    # and the critic's targets in them
    left_out: int = 0      # this rank's share of the episodes left out

    @property
    def episodes(self) -> list[Episode]:
        return [e for mb in self.micro_batches for e in mb]


def shards(batch: Sequence[Episode], mini_batches: int, world_size: int, micro_batch_size: int,
           reference: bool, critic: bool, micro_batch_tokens: int | None = None) -> list[list[MiniBatchPart]]:
    """shards[r][i]: rank r's part of mini-batch i. Mini-batches are contiguous slices of the
    batch. The episodes of each that can move the loss are sorted by length and dealt
    round-robin over the ranks, so that every rank gets as many tokens and each pass pads little;
    a rank's passes take up to `micro_batch_size` episodes and, with `micro_batch_tokens`, no
    more than that many padded tokens (at least one episode). Every rank makes as many passes as
    the one that needs most (at least one, so that the optimizer steps even when nothing is
    left, as it would on masked episodes)."""
    size = len(batch) // mini_batches
    parts: list[list[MiniBatchPart]] = [[] for _ in range(world_size)]
    for i in range(mini_batches):
        mini = batch[i * size:(i + 1) * size]
        trained = [e for e in mini if e.credit.trained]
        kept = sorted((e for e in mini if contributes(e, reference, critic)), key=lambda e: -len(e.layout.token_ids))
        left = len(mini) - len(kept)
        layouts = [_passes(kept[r::world_size], micro_batch_size, micro_batch_tokens) for r in range(world_size)]
        passes = max(1, max(len(layout) for layout in layouts))
        for r, layout in enumerate(layouts):
            parts[r].append(MiniBatchPart(
                layout + [[]] * (passes - len(layout)), float(len(trained)), float(sum(sum(e.layout.loss_mask) for e in trained)),
                float(sum(len(e.credit.value_positions) for e in trained)), left // world_size + (r < left % world_size)))
    return parts


def contributes(episode: Episode, reference: bool, critic: bool) -> bool:
    """Whether any of the episode's loss terms can have a non-zero gradient: trained, and a policy
    token with an advantage, or with a KL weight (`reference`: the reference is loaded and the
    KL term is not stationary where the policy is), or a critic target."""
    if not episode.credit.trained:
        return False
    if critic and episode.credit.value_positions:
        return True
    mask = episode.layout.loss_mask
    if any(m and a for m, a in zip(mask, episode.token_advantages())):
        return True
    return reference and any(m and c for m, c in zip(mask, episode.token_kl_coefs()))


def _passes(episodes: list[Episode], size: int, tokens: int | None) -> list[list[Episode]]:
    """Episodes (longest first) grouped into passes of at most `size`, and of at most `tokens`
    padded tokens (each pass pads to its first, longest, episode)."""
    passes: list[list[Episode]] = []
    for e in episodes:
        current = passes[-1] if passes else None
        if current is None or len(current) == size or (tokens and (len(current) + 1) * len(current[0].layout.token_ids) > tokens):
            passes.append([e])
        else:
            current.append(e)
    return passes


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
    """The policy as the engine trains it: forward(ids, attention, select) -> (logprobs and
    entropies of the selected targets at the sampling temperature, as [B, T] with 0 elsewhere;
    values or None); with `value_head`, PPO's scalar critic on the last hidden state
    (zero-initialised: V = 0 everywhere at the start)."""

    def __init__(self, policy, value_head: bool, temperature: float):
        super().__init__()
        self.policy, self.temperature = policy, temperature
        self.value_head = torch.nn.Linear(policy.config.hidden_size, 1, dtype=policy.dtype) if value_head else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, select):
        logp, entropy, hidden = policy_logprobs_and_entropy(self.policy, input_ids, attention_mask, select, self.temperature)
        return logp, entropy, None if self.value_head is None else self.value_head(hidden).squeeze(-1)


LearnerActor = ray.remote(Learner)
