"""Ray side of the system: groups of rollout workers and learner ranks, and the weight push."""
from __future__ import annotations

import logging
import os
import socket
import sys

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rl.advantages import Estimator
from rl.config import Config, ConfigError
from rl.episode import Episode
from rl.learner import LearnerActor, learner_options, shards
from rl.rollout import ROLLOUT_BACKENDS, Sample, SamplingSpec
from rl.weight_sync import PublishedWeights


class WeightPushError(RuntimeError):
    pass


def init_ray(cfg: Config) -> dict:
    """Join the cluster named by ray.address or $RAY_ADDRESS (as under `ray job submit`);
    otherwise start a local Ray bound to loopback only. Returns what the run metadata says of it."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        return cluster_info(joined=True)
    needed = (cfg.rollout.num_workers * cfg.rollout.num_cpus_per_worker
              + cfg.learner.num_ranks * cfg.learner.num_cpus_per_rank)
    num_cpus = cfg.ray.num_cpus if cfg.ray.num_cpus is not None else max(os.cpu_count() or 1, int(needed + 0.999))
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_TokenAuthByDefault())
    # address="local": a new Ray even when `ray start` left a cluster on this machine, which a
    # bare ray.init() would join (with other jobs' resources and a non-loopback address).
    ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True,
             logging_level=logging.WARNING)
    return cluster_info(joined=False)


class _TokenAuthByDefault(logging.Filter):
    """Ray 2.60 turns token authentication on for a new local cluster and warns that it did
    ("Set RAY_AUTH_MODE=disabled to opt out"). On our loopback-only cluster that is the right
    setting, not an alarm: that one message is dropped. (Setting RAY_AUTH_MODE=token instead does
    not work once ray is imported: the driver's cached config still says disabled.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def cluster_info(joined: bool) -> dict:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    return {"joined": joined, "address": ray.get_runtime_context().gcs_address, "nodes": len(nodes),
            "resources": ray.cluster_resources()}


class Placement:
    """One Ray placement group for the run's actors: a bundle per learner rank (when there is a
    learner), then one per rollout worker, each with the CPUs, GPUs, memory and custom resources
    its config section asks for, laid out over the nodes by `ray.placement`. A request that no
    node could hold, or that the cluster does not hold within `ray.placement_timeout_s`, is a
    ConfigError naming what was asked and what the cluster has, raised before any actor starts."""

    def __init__(self, cfg: Config, learner: bool):
        l, r = cfg.learner, cfg.rollout
        self.learner_bundles = [_bundle(l.num_cpus_per_rank, l.num_gpus_per_rank, l.memory_gib, l.resources)] * (l.num_ranks if learner else 0)
        self.rollout_bundles = [_bundle(r.num_cpus_per_worker, r.num_gpus_per_worker, r.memory_gib, r.resources)] * r.num_workers
        bundles = self.learner_bundles + self.rollout_bundles
        nodes = [n for n in ray.nodes() if n["Alive"]]
        asked = self._describe_request(cfg.ray.placement)
        for name, bundle in (("learner rank", self.learner_bundles[:1]), ("rollout worker", self.rollout_bundles[:1])):
            if bundle and not any(all(n["Resources"].get(k, 0.0) >= v for k, v in bundle[0].items()) for n in nodes):
                raise ConfigError(f"placement: no node of the cluster can hold one {name} ({_show(bundle[0])}); asked {asked}; "
                                  f"the cluster has {_show_nodes(nodes)}")
        self.group = placement_group(bundles, strategy=cfg.ray.placement.upper())
        ready, _ = ray.wait([self.group.ready()], timeout=cfg.ray.placement_timeout_s)
        if not ready:
            remove_placement_group(self.group)
            raise ConfigError(f"placement: the cluster did not hold {asked} within ray.placement_timeout_s="
                              f"{cfg.ray.placement_timeout_s:g}s; it has {_show_nodes(nodes)} (available now: "
                              f"{_show(ray.available_resources())})")

    def _describe_request(self, strategy: str) -> str:
        parts = [f"{len(b)} {name}{'s' if len(b) > 1 else ''} x {_show(b[0])}"
                 for name, b in (("learner rank", self.learner_bundles), ("rollout worker", self.rollout_bundles)) if b]
        return " + ".join(parts) + f" (ray.placement={strategy})"

    def learner(self, rank: int) -> dict:
        """Ray actor options that put learner rank `rank` in its bundle."""
        return self._options(rank, self.learner_bundles[rank])

    def rollout(self, i: int) -> dict:
        return self._options(len(self.learner_bundles) + i, self.rollout_bundles[i])

    def _options(self, index: int, bundle: dict) -> dict:
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
        return dict(num_cpus=bundle.get("CPU", 0.0), num_gpus=bundle.get("GPU", 0.0), memory=bundle.get("memory"),
                    resources=custom or None, scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, index))

    def address(self, rank: int) -> tuple[str, int]:
        """(IP, a free port) of the node learner rank `rank` is placed on: the rendezvous of
        torch.distributed, on rank 0's node wherever the driver runs."""
        probe = ray.remote(_node_and_free_port).options(
            num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, rank))
        node, port = ray.get(probe.remote())
        (ip,) = [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node]
        return ip, port

    def close(self) -> None:
        remove_placement_group(self.group)


def _bundle(cpus: float, gpus: float, memory_gib: float | None, resources: dict[str, float]) -> dict[str, float]:
    bundle = {"CPU": cpus, "GPU": gpus, "memory": memory_gib and memory_gib * 2**30, **resources}
    bundle = {k: v for k, v in bundle.items() if v}
    # Ray refuses an empty bundle; an actor that asks for nothing still takes a sliver of a CPU.
    return bundle or {"CPU": 0.01}


def _show(resources: dict) -> str:
    return "{" + ", ".join(f"{k}: {v / 2**30:.1f} GiB" if k == "memory" else f"{k}: {v:g}"
                           for k, v in sorted(resources.items())
                           if k == "memory" or not k.startswith(("node:", "object_store_memory"))) + "}"


def _show_nodes(nodes: list[dict]) -> str:
    return "; ".join(f"node {n['NodeManagerAddress']} ({n['NodeID'][:8]}) {_show(n['Resources'])}" for n in nodes)


def _node_and_free_port() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("", 0))
        return ray.get_runtime_context().get_node_id(), s.getsockname()[1]


class RolloutGroup:
    """The vLLM rollout workers; `nodes[i]` is worker i's Ray node. Started when the constructor
    returns (it waits for every engine). Weights reach them through rl/weight_sync.py, with
    staging files under `weights_dir` on each worker's node. A worker that dies (its process
    killed, its node lost) is replaced by a fresh one that loads the latest pushed weights, and
    its unfinished share of the batch is redone there: the step completes with every sample
    (`replacements` counts them)."""

    def __init__(self, cfg: Config, model_path: str, weights_dir: str, placement: Placement, log_dir: str | None = None):
        self.cfg, self.model_path, self.placement, self.log_dir = cfg, model_path, placement, log_dir
        self.weights_dir, self.push_timeout_s = weights_dir, cfg.weight_sync.timeout_s
        self.workers = [self._start(i) for i in range(cfg.rollout.num_workers)]
        self.nodes = ray.get([w.node_id.remote() for w in self.workers])   # returns once every engine is up
        self.pushed: PublishedWeights | None = None   # the last push: what a replacement loads
        self.replacements = 0

    def _start(self, i: int):
        r = self.cfg.rollout
        return ROLLOUT_BACKENDS[r.backend].options(**self.placement.rollout(i)).remote(
            self.model_path, self.cfg.model.dtype, self.cfg.model.max_model_len, self.cfg.run.seed + i, r.kv_cache_gib,
            r.gpu_memory_utilization, None if r.num_gpus_per_worker else (i, r.num_workers),
            self.log_dir and f"{self.log_dir}/rollout-{i}.log")

    def _replace(self, i: int, error: Exception) -> None:
        """Worker i is gone: a fresh one in its place, holding the latest pushed weights."""
        retries = self.cfg.rollout.worker_restarts
        if self.replacements >= retries:
            raise RuntimeError(f"{self._worker(i)} died and rollout.worker_restarts={retries} replacements are used up: {error}") from error
        self.replacements += 1
        log = f" (its log: {self.log_dir}/rollout-{i}.log)" if self.log_dir else ""
        print(f"warning: {self._worker(i)} died{log}: {type(error).__name__}: {str(error).splitlines()[0][:200]}; "
              f"starting a replacement ({self.replacements} of at most {retries})", file=sys.stderr)
        ray.kill(self.workers[i])   # a worker that only lost its engine must not linger
        self.workers[i] = self._start(i)
        self.nodes[i] = ray.get(self.workers[i].node_id.remote())   # the engine is up
        if self.pushed is not None:
            (got,) = self._answers({i: self.workers[i].load_weights.remote(self.pushed, self.weights_dir, self.push_timeout_s)},
                                   f"loading weights v{self.pushed.version} into a replacement")
            if got != self.pushed.checksum:
                raise WeightPushError(f"{self._worker(i)} (a replacement) loaded weights v{self.pushed.version} with checksum "
                                      f"{got}, expected {self.pushed.checksum}")

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """Contiguous shards of the prompts, one per worker, in parallel; results in prompt order.
        A shard whose worker died is redone on its replacement (the same seeds: the same samples)."""
        k = len(self.workers)
        bounds = [len(prompts) * i // k for i in range(k + 1)]
        shards = {i: (a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a}
        results: dict[int, list[list[Sample]]] = {}
        while len(results) < len(shards):
            futures = {i: self.workers[i].generate.remote(prompts[a:b], spec, a) for i, (a, b) in shards.items() if i not in results}
            for i, future in futures.items():
                try:
                    results[i] = ray.get(future)
                except ray.exceptions.RayActorError as exc:
                    self._replace(i, exc)
        return [samples for i in sorted(shards) for samples in results[i]]

    def push(self, weights: PublishedWeights) -> None:
        """Every worker loads `weights`; raises, naming the workers, if any fails, does not answer
        within weight_sync.timeout_s, or loaded other bytes. A worker found dead is replaced (and
        its replacement loads `weights`)."""
        self.pushed, v = weights, weights.version
        loaded = self._answers({i: w.load_weights.remote(weights, self.weights_dir, self.push_timeout_s) for i, w in enumerate(self.workers)},
                               f"loading weights v{v} ({weights.transport})", replace_dead=True)
        for i, got in enumerate(loaded):
            if got is not None and got != weights.checksum:
                raise WeightPushError(f"{self._worker(i)} loaded weights v{v} with checksum {got}, expected {weights.checksum}")

    def verify_held(self, names: list[str], expected: str, version: int) -> list[str]:
        """Each worker's engine must hold exactly `expected` for the verbatim-held parameters;
        returns what each one holds."""
        held = self._answers({i: w.held_weights_checksum.remote(names) for i, w in enumerate(self.workers)}, f"checking weights v{version}")
        for i, got in enumerate(held):
            if got != expected:
                raise WeightPushError(f"{self._worker(i)} does not hold weights v{version} after the push (checksum {got}, expected {expected})")
        return held

    def _answers(self, futures: dict, doing: str, replace_dead: bool = False) -> list:
        """The answers of the workers {index: call} in index order, waiting weight_sync.timeout_s
        at most in all; with `replace_dead`, a worker found dead is replaced (its answer: None)."""
        _, pending = ray.wait(list(futures.values()), num_returns=len(futures), timeout=self.push_timeout_s)
        if pending:
            pending = set(pending)
            late = ", ".join(self._worker(i) for i, f in futures.items() if f in pending)
            raise WeightPushError(f"{doing}: no answer within weight_sync.timeout_s={self.push_timeout_s:g}s from {late}")
        answers = []
        for i, future in sorted(futures.items()):
            try:
                answers.append(ray.get(future))
            except ray.exceptions.RayActorError as exc:
                if not replace_dead:
                    raise WeightPushError(f"{doing}: {self._worker(i)} died: {exc}") from exc
                self._replace(i, exc)
                answers.append(None)
            except Exception as exc:
                raise WeightPushError(f"{doing}: {self._worker(i)} failed: {exc}") from exc
        return answers

    def _worker(self, i: int) -> str:
        return f"rollout worker {i} (node {self.nodes[i]})"


class LearnerGroup:
    """The learner's ranks. Each rank receives only its own shard of a batch, pre-sliced here."""

    def __init__(self, cfg: Config, model_path: str, estimator: Estimator, placement: Placement, log_dir: str | None = None):
        l = cfg.learner
        options = learner_options(cfg, estimator)
        a = cfg.algo
        self.mini_batches, self.micro_batch_size, self.micro_batch_tokens = a.mini_batches, a.micro_batch_size, a.micro_batch_tokens
        self.zero_stage = l.zero_stage
        self.reference, self.critic = options["reference"], options["critic"]
        address, port = placement.address(0)
        self.ranks = [
            LearnerActor.options(**placement.learner(rank)).remote(
                model_path, **options, rank=rank, world_size=l.num_ranks,
                master_addr=address, master_port=port, log_file=log_dir and f"{log_dir}/learner-rank{rank}.log")
            for rank in range(l.num_ranks)
        ]
        self.nodes = ray.get([r.node_id.remote() for r in self.ranks])  # surfaces start-up errors here
        self.sync = cfg.weight_sync
        # k2 and k3 have zero gradient while the policy is the reference (k1's is not 0); with
        # one mini-batch per step, the policy cannot move between that check and the pass.
        self.kl_stationary_at_reference = a.kl_estimator in ("k2", "k3") and a.mini_batches == 1
        self.at_reference = self._ranks_at_reference()

    def _ranks_at_reference(self) -> bool:
        return all(ray.get([r.at_reference.remote() for r in self.ranks]))

    def train_step(self, batch: list[Episode]) -> dict[str, float]:
        """Each rank trains on its own shard (rl/learner.py:shards: only the episodes that can
        move the loss); returns the statistics over all ranks."""
        kl_moves = self.reference and not (self.at_reference and self.kl_stationary_at_reference)
        parts = shards(batch, self.mini_batches, len(self.ranks), self.micro_batch_size, kl_moves, self.critic,
                       self.micro_batch_tokens)
        results = ray.get([r.train_step.remote(part) for r, part in zip(self.ranks, parts)])
        self.at_reference = all(r.pop("at_reference") for r in results)
        totals: dict[str, float] = {}
        for result in results:
            for k, v in result.items():
                totals[k] = totals.get(k, 0.0) + v
        metrics = {k: v / totals[k + "_count"] for k, v in totals.items() if k + "_count" in totals and totals[k + "_count"]}
        metrics["tokens"] = sum(part.tokens for part in parts[0])   # every rank's parts carry the mini-batches' counts
        metrics["tokens_computed"] = totals["tokens_computed"]   # in the forward passes: left-out episodes cost nothing
        metrics["episodes_left_out"] = float(len(batch) - sum(len(p.episodes) for part in parts for p in part))
        metrics["padding_fraction"] = 1.0 - totals["tokens_computed"] / max(totals["tokens_padded"], 1.0)
        metrics["peak_rss_gb"] = max(r["peak_rss_gb"] for r in results)   # the largest rank's resident peak so far
        metrics["grad_norm"] = results[0]["grad_norm"]
        metrics["seconds"] = max(r["seconds"] for r in results)
        metrics["tokens_per_s"] = totals["tokens_computed"] / max(metrics["seconds"], 1e-9)
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
            return self._from_rank0("publish", transport, directory, self.sync, timeout=self.sync.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise WeightPushError(f"learner rank 0 (node {self.nodes[0]}) did not publish its weights ({transport}) "
                                  f"within weight_sync.timeout_s={self.sync.timeout_s:g}s") from None

    def checksum(self, names: list[str] | None = None) -> str:
        return self._from_rank0("checksum", names)

    def parameter_names(self) -> list[str]:
        return self._from_rank0("parameter_names")

    def save(self, directory: str, tokenizer_path: str) -> str:
        return self._from_rank0("save", directory, tokenizer_path)

    def _from_rank0(self, method: str, *args, timeout: float | None = None):
        """Rank 0's answer to a call that reads the whole weights: under ZeRO-3, gathering them is
        a collective, so every rank is called (the others answer None)."""
        ranks = self.ranks if self.zero_stage == 3 else self.ranks[:1]
        return ray.get([getattr(r, method).remote(*args) for r in ranks], timeout=timeout)[0]

    def save_checkpoint(self, directory: str) -> None:
        """Every rank writes its part (a shared file system when ranks span nodes)."""
        ray.get([r.save_checkpoint.remote(directory) for r in self.ranks])

    def load_checkpoint(self, directory: str) -> int:
        (version,) = set(ray.get([r.load_checkpoint.remote(directory) for r in self.ranks]))
        self.at_reference = self._ranks_at_reference()
        return version

    def node_id(self) -> str:
        """Rank 0's node: where published weights start from."""
        return self.nodes[0]

