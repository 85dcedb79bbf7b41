"""Rollout workers: an engine that samples token ids with their logprobs and takes new weights in
place. `RolloutWorker` (vLLM) and `HFRolloutWorker` (transformers' generate) are plain classes
with one interface (testable without Ray); `ROLLOUT_BACKENDS` holds their Ray shells, by
`rollout.backend`."""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from rl.logs import redirect_output
from rl.weight_sync import TRANSPORTS, PublishedWeights, checksum_tensors, read_weights


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]
    logprobs: list[float]      # log pi(token | context) under the sampling distribution (temperature applied)
    finish_reason: str         # "stop" (EOS) or "length"


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None    # the batch's seed: prompt i is sampled with derive_seed(seed, i)


def derive_seed(*parts) -> int:
    """A 31-bit seed that is a fixed function of `parts`. Sampling seeds are derived from the run's
    seed, the step and each prompt's place in its batch, never drawn from an RNG: a resumed run,
    or a batch sharded over another number of workers, samples exactly what the first one did."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little") >> 1


def cpu_share(index: int, count: int, cpus: int) -> str:
    """The CPUs rollout worker `index` of `count` on one node binds its threads to ("0-1"):
    disjoint slices while there are enough CPUs, else a shared one."""
    if count >= cpus:
        return str(index % cpus)
    first, last = index * cpus // count, (index + 1) * cpus // count - 1
    return f"{first}-{last}" if last > first else str(first)


def _no_split_prefill(max_model_len: int) -> dict:
    """On CPU, never split a prompt's prefill across engine steps. vLLM (0.32) rewinds a seeded
    request's random generator after a partial prefill, and a CPU generator cannot be rewound:
    the engine dies ("CPU Generator does not use offset") as soon as a batch's prompts exceed one
    step's token budget (4096 on CPU), i.e. at turn 2 of 16 episodes with long feedback. Every
    request here is seeded (derive_seed), so chunked prefill goes; a step must then
    hold at least one whole prompt."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, max_model_len)}


class RolloutWorker:
    def __init__(self, model_path: str, dtype: str, max_model_len: int, seed: int,
                 kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.4, cpu_slot: tuple[int, int] | None = None,
                 log_file: str | None = None, prefix_caching: bool = True):
        """cpu_slot = (index, count) of this worker among the node's CPU rollout workers: its
        threads are bound to its own share of the node's CPUs. log_file: where the engine's
        output goes (rl/logs.py). prefix_caching: reuse the KV cache of a prompt's shared prefix
        (turn 2's prompt is turn 1's context; vLLM's default; off only to measure what it buys:
        bench/vllm_cpu_options.py)."""
        redirect_output(log_file)
        # Set before vLLM is imported: the CPU backend reads these from the environment.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
        if cpu_slot is not None:
            # vLLM's automatic binding reserves a core per engine for its scheduler; on a small
            # machine that halves generation speed (measured: 67 -> 100 tok/s on 2 cores).
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_share(*cpu_slot, os.cpu_count() or 1))
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        from vllm import LLM

        self.llm = LLM(
            model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
            enforce_eager=True, gpu_memory_utilization=gpu_memory_utilization,
            worker_extension_cls="rl.vllm_ext.WeightSyncExtension",
            # Logprobs after temperature/top-p: exactly the distribution tokens were drawn from,
            # which the learner reproduces with logits / temperature.
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=prefix_caching,
            **_no_split_prefill(max_model_len),
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, first: int = 0) -> list[list[Sample]]:
        """For each prompt (token ids), `spec.n` samples; `first`: the place of prompts[0] in the
        whole batch (the per-prompt seeds follow the batch, not the worker's shard)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(
            n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_new_tokens, logprobs=0,
            seed=None if spec.seed is None else derive_seed(spec.seed, first + i)) for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [
            [
                Sample(list(c.token_ids), [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)], c.finish_reason or "length")
                for c in out.outputs
            ]
            for out in outputs
        ]

    def load_weights(self, weights: PublishedWeights, directory: str, timeout_s: float) -> str:
        """Receive a published version through its transport (staging files under `directory`,
        on this worker's node) and reload every parameter in place; returns the checksum of what
        the engine loaded. Each wait is bounded by `timeout_s`."""
        with TRANSPORTS.get(weights.transport)(directory).receive(weights, timeout_s) as locations:
            (checksum,) = set(self.llm.collective_rpc("reload_weights_from", timeout=timeout_s, args=(locations, timeout_s)))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        return checksum

    def held_weights_checksum(self, names: list[str]) -> str:
        (checksum,) = set(self.llm.collective_rpc("held_weights_checksum", args=(names,)))
        return checksum

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class HFRolloutWorker:
    """The Hugging Face backend (`rollout.backend=hf`): transformers' `generate` on the policy,
    behind RolloutWorker's interface, for machines where vLLM cannot be installed and as a
    baseline. Prompts are left-padded into one batch; a batch's samples follow its seed (not each
    prompt's, as with vLLM: a prompt's samples depend on the batch it is in). Logprobs are of the
    processed distribution (after temperature and top-p), as vLLM's processed_logprobs."""

    def __init__(self, model_path: str, dtype: str, max_model_len: int, seed: int,
                 kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.4, cpu_slot: tuple[int, int] | None = None,
                 log_file: str | None = None):
        """The same arguments as RolloutWorker (the KV-cache and GPU-memory settings are vLLM's
        and unused here)."""
        redirect_output(log_file)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cpu_slot is not None:   # its own share of the node's CPUs, as a vLLM worker's
            cpus = cpu_share(*cpu_slot, os.cpu_count() or 1).split("-")
            torch.set_num_threads(int(cpus[-1]) - int(cpus[0]) + 1)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"   # Ray hides GPUs from a worker without one
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.seed = seed

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, first: int = 0) -> list[list[Sample]]:
        import torch
        from transformers import GenerationConfig

        torch.manual_seed(derive_seed(spec.seed, first) if spec.seed is not None else self.seed)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampled = spec.temperature > 0
        config = GenerationConfig(   # every setting explicit: none of the model's own defaults (its top_k) apply
            do_sample=sampled, temperature=spec.temperature if sampled else None, top_p=spec.top_p if sampled else None,
            top_k=0 if sampled else None, max_new_tokens=spec.max_new_tokens, num_return_sequences=spec.n,
            output_scores=True, return_dict_in_generate=True, pad_token_id=self.pad, eos_token_id=self.eos)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=attention, generation_config=config)
        tokens = out.sequences[:, width:]
        logprobs = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
        samples = []
        for row, row_logprobs in zip(tokens.tolist(), logprobs.tolist()):
            stopped = self.eos in row
            end = row.index(self.eos) + 1 if stopped else len(row)
            samples.append(Sample(row[:end], row_logprobs[:end], "stop" if stopped else "length"))
        return [samples[i * spec.n:(i + 1) * spec.n] for i in range(len(prompts))]

    def load_weights(self, weights: PublishedWeights, directory: str, timeout_s: float) -> str:
        """Receive a published version through its transport and load it into the model; returns
        the checksum of what was loaded."""
        with TRANSPORTS.get(weights.transport)(directory).receive(weights, timeout_s) as locations:
            state = read_weights(locations, timeout_s)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise ValueError(f"weights v{weights.version} do not fit the model: missing {sorted(set(missing) - tied)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        return checksum_tensors(state)

    def held_weights_checksum(self, names: list[str]) -> str:
        params = self.model.state_dict()
        return checksum_tensors({name: params[name] for name in names})

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


RolloutActor = ray.remote(RolloutWorker)
ROLLOUT_BACKENDS = {"vllm": RolloutActor, "hf": ray.remote(HFRolloutWorker)}   # rollout.backend
