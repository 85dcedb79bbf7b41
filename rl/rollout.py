"""Rollout workers: a vLLM engine that samples token ids with their logprobs and takes new weights
in place. `RolloutWorker` is a plain class (testable without Ray); `RolloutActor` is its Ray shell."""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from rl.logs import redirect_output
from rl.weight_sync import TRANSPORTS, PublishedWeights


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


class RolloutWorker:
    def __init__(self, model_path: str, dtype: str, max_model_len: int, seed: int,
                 kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.4, cpu_slot: tuple[int, int] | None = None,
                 log_file: str | None = None):
        """cpu_slot = (index, count) of this worker among the node's CPU rollout workers: its
        threads are bound to its own share of the node's CPUs. log_file: where the engine's
        output goes (rl/logs.py)."""
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
        with TRANSPORTS.get(weights.transport)(directory).receive(weights, timeout_s) as paths:
            (checksum,) = set(self.llm.collective_rpc("reload_weights_from", timeout=timeout_s, args=(paths,)))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        return checksum

    def held_weights_checksum(self, names: list[str]) -> str:
        (checksum,) = set(self.llm.collective_rpc("held_weights_checksum", args=(names,)))
        return checksum

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


RolloutActor = ray.remote(RolloutWorker)
