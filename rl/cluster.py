"""Ray side of the system: groups of rollout workers and learner ranks, and the weight push."""
from __future__ import annotations

import os
import socket

import ray

from rl.advantages import Estimator
from rl.config import Config
from rl.episode import Episode
from rl.learner import LearnerActor, learner_options, shards
from rl.rollout import RolloutActor, Sample, SamplingSpec
from rl.weight_sync import PublishedWeights


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
    num_cpus = cfg.ray.num_cpus if cfg.ray.num_cpus is not None else max(os.cpu_count() or 1, int(needed + 0.999))
    ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)


class RolloutGroup:
    """The vLLM rollout workers; `nodes[i]` is worker i's Ray node. Started when the constructor
    returns (it waits for every engine). Weights reach them through rl/weight_sync.py, with
    staging files under `weights_dir` on each worker's node."""

    def __init__(self, cfg: Config, model_path: str, weights_dir: str):
        r = cfg.rollout
        self.workers = [
            RolloutActor.options(num_cpus=r.num_cpus_per_worker, num_gpus=r.num_gpus_per_worker).remote(
                model_path, cfg.model.dtype, cfg.model.max_model_len, cfg.run.seed + i, r.kv_cache_gib, r.gpu_memory_utilization,
                None if r.num_gpus_per_worker else (i, r.num_workers))
            for i in range(r.num_workers)
        ]
        self.weights_dir, self.push_timeout_s = weights_dir, cfg.weight_sync.timeout_s
        self.nodes = ray.get([w.node_id.remote() for w in self.workers])   # returns once every engine is up

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """Contiguous shards of the prompts, one per worker, in parallel; results in prompt order."""
        k = len(self.workers)
        bounds = [len(prompts) * i // k for i in range(k + 1)]
        futures = [w.generate.remote(prompts[a:b], spec) for w, a, b in zip(self.workers, bounds, bounds[1:]) if b > a]
        return [samples for shard in ray.get(futures) for samples in shard]

    def push(self, weights: PublishedWeights) -> None:
        """Every worker loads `weights`; raises, naming the workers, if any fails, does not answer
        within weight_sync.timeout_s, or loaded other bytes."""
        v = weights.version
        loaded = self._answers([w.load_weights.remote(weights, self.weights_dir, self.push_timeout_s) for w in self.workers],
                               f"loading weights v{v} ({weights.transport})")
        for i, got in enumerate(loaded):
            if got != weights.checksum:
                raise WeightPushError(f"{self._worker(i)} loaded weights v{v} with checksum {got}, expected {weights.checksum}")

    def verify_held(self, names: list[str], expected: str, version: int) -> list[str]:
        """Each worker's engine must hold exactly `expected` for the verbatim-held parameters;
        returns what each one holds."""
        held = self._answers([w.held_weights_checksum.remote(names) for w in self.workers], f"checking weights v{version}")
        for i, got in enumerate(held):
            if got != expected:
                raise WeightPushError(f"{self._worker(i)} does not hold weights v{version} after the push (checksum {got}, expected {expected})")
        return held

    def _answers(self, futures: list, doing: str) -> list:
        """Each worker's answer to its call, waiting weight_sync.timeout_s at most in all."""
        _, pending = ray.wait(futures, num_returns=len(futures), timeout=self.push_timeout_s)
        if pending:
            pending = set(pending)
            late = ", ".join(self._worker(i) for i, f in enumerate(futures) if f in pending)
            raise WeightPushError(f"{doing}: no answer within weight_sync.timeout_s={self.push_timeout_s:g}s from {late}")
        answers = []
        for i, future in enumerate(futures):
            try:
                answers.append(ray.get(future))
            except Exception as exc:
                raise WeightPushError(f"{doing}: {self._worker(i)} failed: {exc}") from exc
        return answers

    def _worker(self, i: int) -> str:
        return f"rollout worker {i} (node {self.nodes[i]})"


class LearnerGroup:
    """The learner's ranks. Each rank receives only its own shard of a batch, pre-sliced here."""

    def __init__(self, cfg: Config, model_path: str, estimator: Estimator):
        l = cfg.learner
        self.mini_batches = cfg.algo.mini_batches
        address = "127.0.0.1" if l.num_ranks == 1 else _node_ip()
        port = _free_port()
        self.ranks = [
            LearnerActor.options(num_cpus=l.num_cpus_per_rank, num_gpus=l.num_gpus_per_rank).remote(
                model_path, **learner_options(cfg, estimator), rank=rank, world_size=l.num_ranks,
                master_addr=address, master_port=port)
            for rank in range(l.num_ranks)
        ]
        self.nodes = ray.get([r.node_id.remote() for r in self.ranks])  # surfaces start-up errors here
        self.publish_timeout_s, self.bucket_mb = cfg.weight_sync.timeout_s, cfg.weight_sync.bucket_mb

    def train_step(self, batch: list[Episode]) -> dict[str, float]:
        """Each rank trains on its own shard (rl/learner.py:shards); returns the ranks'
        per-micro-batch statistics, averaged."""
        parts = shards(batch, self.mini_batches, len(self.ranks))
        results = ray.get([r.train_step.remote(part) for r, part in zip(self.ranks, parts)])
        totals: dict[str, float] = {}
        for result in results:
            for k, v in result.items():
                totals[k] = totals.get(k, 0.0) + v
        metrics = {k: v / totals[k + "_count"] for k, v in totals.items() if k + "_count" in totals}
        metrics["tokens"] = totals["tokens"]
        metrics["grad_norm"] = results[0]["grad_norm"]
        metrics["seconds"] = max(r["seconds"] for r in results)
        return metrics

    def passes(self, batch: list[Episode], reference: bool, values: bool) -> dict[str, list[list[float]]]:
        """The no-grad passes credit assignment reads, asked once: contiguous shards per rank,
        results in batch order (see Learner.passes)."""
        if not (reference or values):
            return {}
        world = len(self.ranks)
        bounds = [len(batch) * i // world for i in range(world + 1)]
        parts = ray.get([r.passes.remote(batch[a:b], reference, values) for r, a, b in zip(self.ranks, bounds, bounds[1:])])
        return {name: [row for part in parts for row in part[name]] for name in parts[0]}

    def publish(self, transport: str, directory: str) -> PublishedWeights:
        """Rank 0's current weights through `transport`, within weight_sync.timeout_s."""
        try:
            return ray.get(self.ranks[0].publish.remote(transport, directory, self.bucket_mb), timeout=self.publish_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise WeightPushError(f"learner rank 0 (node {self.nodes[0]}) did not publish its weights ({transport}) "
                                  f"within weight_sync.timeout_s={self.publish_timeout_s:g}s") from None

    def checksum(self, names: list[str] | None = None) -> str:
        return ray.get(self.ranks[0].checksum.remote(names))

    def parameter_names(self) -> list[str]:
        return ray.get(self.ranks[0].parameter_names.remote())

    def save(self, directory: str, tokenizer_path: str) -> str:
        return ray.get(self.ranks[0].save.remote(directory, tokenizer_path))

    def node_id(self) -> str:
        """Rank 0's node: where published weights start from."""
        return self.nodes[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ip() -> str:
    return ray.util.get_node_ip_address()
