"""Ray side of the system: groups of rollout workers and learner ranks, and the weight push."""
from __future__ import annotations

import os
import socket
import time

import ray

from rl.config import Config
from rl.learner import LearnerActor
from rl.rollout import RolloutActor, Sample, SamplingSpec
from rl.trajectory import Trajectory


class WeightPushError(RuntimeError):
    pass


def init_ray(cfg: Config) -> None:
    """Join the cluster named by ray.address or $RAY_ADDRESS (as under `ray job submit`);
    otherwise start a local Ray bound to loopback only."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    needed = (cfg.rollout.num_workers * cfg.rollout.num_cpus_per_worker
              + cfg.learner.num_ranks * cfg.learner.num_cpus_per_rank)
    ray.init(num_cpus=cfg.ray.num_cpus or max(os.cpu_count() or 1, int(needed + 0.999)),
             _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)


class RolloutGroup:
    def __init__(self, cfg: Config, model_path: str):
        r = cfg.rollout
        self.workers = [
            RolloutActor.options(num_cpus=r.num_cpus_per_worker, num_gpus=r.num_gpus_per_worker).remote(
                model_path, cfg.model.dtype, cfg.model.max_model_len, cfg.run.seed + i, r.kv_cache_gib, r.gpu_memory_utilization,
                None if r.num_gpus_per_worker else (i, r.num_workers))
            for i in range(r.num_workers)
        ]
        self.push_timeout_s = cfg.weight_sync.timeout_s

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """Contiguous shards of the prompts, one per worker, in parallel; results in prompt order."""
        k = len(self.workers)
        bounds = [len(prompts) * i // k for i in range(k + 1)]
        futures = [w.generate.remote(prompts[a:b], spec) for w, a, b in zip(self.workers, bounds, bounds[1:]) if b > a]
        return [samples for shard in ray.get(futures) for samples in shard]

    def push(self, path: str, version: int, checksum: str) -> None:
        """Every worker reloads `path`; raises if any fails, times out, or loaded other bytes."""
        futures = {w.load_weights.remote(path, version): i for i, w in enumerate(self.workers)}
        done, pending = ray.wait(list(futures), num_returns=len(futures), timeout=self.push_timeout_s)
        if pending:
            late = sorted(futures[f] for f in pending)
            raise WeightPushError(f"weight push v{version} did not reach rollout workers {late} within weight_sync.timeout_s={self.push_timeout_s:g}s")
        for future in done:
            try:
                got = ray.get(future)
            except Exception as exc:
                raise WeightPushError(f"rollout worker {futures[future]} failed to load weights v{version}: {exc}") from exc
            if got != checksum:
                raise WeightPushError(f"rollout worker {futures[future]} loaded weights v{version} with checksum {got}, expected {checksum}")

    def verify_held(self, names: list[str], expected: str, version: int) -> list[str]:
        """Each worker's engine must hold exactly `expected` for the verbatim-held parameters;
        returns what each one holds."""
        held = ray.get([w.held_weights_checksum.remote(names) for w in self.workers], timeout=self.push_timeout_s)
        for i, got in enumerate(held):
            if got != expected:
                raise WeightPushError(f"rollout worker {i} does not hold weights v{version} after the push (checksum {got}, expected {expected})")
        return held

    def node_ids(self) -> list[str]:
        return ray.get([w.node_id.remote() for w in self.workers])


class LearnerGroup:
    def __init__(self, cfg: Config, model_path: str):
        l = cfg.learner
        port = _free_port()
        self.ranks = [
            LearnerActor.options(num_cpus=l.num_cpus_per_rank, num_gpus=l.num_gpus_per_rank).remote(
                cfg, model_path, rank, l.num_ranks, "127.0.0.1" if l.num_ranks == 1 else _node_ip(), port)
            for rank in range(l.num_ranks)
        ]
        ray.get([r.node_id.remote() for r in self.ranks])  # surface start-up errors here

    def train_step(self, batch: list[Trajectory]) -> dict[str, float]:
        """Runs the step on every rank; averages their per-micro-batch statistics."""
        results = ray.get([r.train_step.remote(batch) for r in self.ranks])
        totals: dict[str, float] = {}
        for result in results:
            for k, v in result.items():
                totals[k] = totals.get(k, 0.0) + v
        metrics = {k: v / totals[k + "_count"] for k, v in totals.items() if k + "_count" in totals}
        metrics["tokens"] = totals["tokens"]
        metrics["grad_norm"] = results[0]["grad_norm"]
        metrics["seconds"] = max(r["seconds"] for r in results)
        return metrics

    def turn_kl(self, batch: list[Trajectory]) -> list[list[float]]:
        """Per-trajectory, per-turn KL of the sampling policy to the reference."""
        return self._per_trajectory("turn_kl", batch)

    def values(self, batch: list[Trajectory]) -> list[list[float]]:
        """The critic's value at every position of every trajectory."""
        return self._per_trajectory("values", batch)

    def _per_trajectory(self, method: str, batch: list[Trajectory]) -> list[list[float]]:
        """A no-grad pass whose ranks each answer (index, result) for their share of the batch."""
        result: list[list[float]] = [[] for _ in batch]
        for part in ray.get([getattr(r, method).remote(batch) for r in self.ranks]):
            for i, value in part:
                result[i] = value
        return result

    def publish(self, directory: str) -> tuple[str, str, int]:
        return ray.get(self.ranks[0].publish.remote(directory))

    def checksum(self, names: list[str] | None = None) -> str:
        return ray.get(self.ranks[0].checksum.remote(names))

    def parameter_names(self) -> list[str]:
        return ray.get(self.ranks[0].parameter_names.remote())

    def save(self, directory: str, tokenizer_path: str) -> str:
        return ray.get(self.ranks[0].save.remote(directory, tokenizer_path))

    def node_id(self) -> str:
        return ray.get(self.ranks[0].node_id.remote())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ip() -> str:
    return ray.util.get_node_ip_address()


def timed(fn, bucket: dict, key: str):
    """Wrap `fn` so the seconds spent in it accumulate in bucket[key]."""
    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket[key] = bucket.get(key, 0.0) + time.monotonic() - start
    return wrapper
