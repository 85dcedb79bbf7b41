"""A pool of Ray actors, one per node, each running a local sandbox executor on its node's CPUs.

A batch is cut into chunks of one node's worth of slots; each actor has at most
`max_in_flight` chunks submitted at a time (back-pressure: the rest wait on the driver, not in
Ray's queues). Every call has a deadline computed from the chunk's time limits; an actor that
dies or misses its deadline is killed and replaced, and its chunk is retried on another one.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from envs.execution import ExecutionRequest, ExecutionResult
from envs.sandbox.local import SandboxOptions

log = logging.getLogger(__name__)


@ray.remote
class SandboxActor:
    def __init__(self, level: str, allow_unisolated: bool, workers: int, options: SandboxOptions):
        import os

        from envs.sandbox import local_executor

        self.workers = workers or os.cpu_count() or 1
        self.executor = local_executor(level, allow_unisolated, self.workers, options)

    def info(self) -> dict:
        import os

        return dict(self.executor.info, node=ray.get_runtime_context().get_node_id(), pid=os.getpid())

    def run(self, requests: list[ExecutionRequest]) -> list[ExecutionResult]:
        return self.executor.run(requests)


class RayExecutorPool:
    """An Executor over every alive node of the Ray cluster (ray.init() must have been called)."""

    def __init__(self, level: str = "auto", allow_unisolated: bool = False, workers: int = 0,
                 options: SandboxOptions | None = None, actor_cpus: float = 0.0, max_in_flight: int = 2,
                 retries: int = 2, deadline_slack_s: float = 30.0):
        """workers: slots per actor (0: the node's CPU count). actor_cpus: CPUs each actor
        reserves from Ray. The sandboxed processes are not Ray tasks, so by default the pool
        reserves none and does not block other actors' placement; size it with `workers`."""
        if not ray.is_initialized():
            raise RuntimeError("RayExecutorPool needs ray.init() first")
        self._args = (level, allow_unisolated, workers, options or SandboxOptions())
        self.actor_cpus, self.max_in_flight, self.retries, self.slack = actor_cpus, max_in_flight, retries, deadline_slack_s
        self.nodes = [n for n in ray.nodes() if n["Alive"]]
        self.actors = [self._start(n) for n in self.nodes]
        self.replacements = 0   # actors replaced over the pool's life (dead, or past a deadline)
        infos = ray.get([a.info.remote() for a, _ in self.actors])
        self.slots = [i["workers"] for i in infos]
        self.info = dict(infos[0], nodes=len(infos), workers=sum(self.slots))
        self.info.pop("pid")
        self.info.pop("node")
        self.isolation = infos[0]["level"]
        if any(i["level"] != self.isolation for i in infos):
            raise RuntimeError(f"nodes run different sandbox levels: {sorted({i['level'] for i in infos})}")
        log.info("sandbox pool: %d actors, %d slots, level %s", len(self.actors), sum(self.slots), self.isolation)

    def _start(self, node: dict):
        """An actor on `node` (soft affinity: if the node is gone, anywhere)."""
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
        level, allow, workers, options = self._args
        workers = workers or int(node["Resources"].get("CPU", 1))
        actor = SandboxActor.options(num_cpus=self.actor_cpus, scheduling_strategy=strategy).remote(
            level, allow, workers, options)
        return actor, node

    def run(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        requests = list(requests)
        results: list[ExecutionResult | None] = [None] * len(requests)
        chunk = max(min(self.slots), 1)
        pending = [(list(range(i, min(i + chunk, len(requests)))), 0) for i in range(0, len(requests), chunk)]
        in_flight = {}  # ObjectRef -> (actor index, actor handle, indices, attempt, deadline)
        while pending or in_flight:
            for a in range(len(self.actors)):
                while pending and sum(1 for v in in_flight.values() if v[0] == a) < self.max_in_flight:
                    indices, attempt = pending.pop(0)
                    actor = self.actors[a][0]
                    queued = sum(1 for v in in_flight.values() if v[0] == a)
                    deadline = time.monotonic() + self._budget(requests, indices, a) * (queued + 1)
                    in_flight[actor.run.remote([requests[i] for i in indices])] = (a, actor, indices, attempt, deadline)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                a, actor, indices, attempt, _ = in_flight.pop(ref)
                try:
                    for i, result in zip(indices, ray.get(ref)):
                        results[i] = result
                except ray.exceptions.RayActorError as exc:
                    self._replace(a, actor, f"died: {exc}")
                    pending.insert(0, self._retry(indices, attempt, exc))
            now = time.monotonic()
            for ref, (a, actor, indices, attempt, deadline) in list(in_flight.items()):
                if now > deadline:
                    del in_flight[ref]
                    self._replace(a, actor, "missed its deadline")
                    pending.insert(0, self._retry(indices, attempt, TimeoutError("deadline")))
        return results

    def _budget(self, requests, indices, actor: int) -> float:
        """Seconds a chunk may take on an actor: its requests' limits, run `slots` at a time."""
        longest = max(requests[i].time_limit_s for i in indices) + self._args[3].grace_s
        return math.ceil(len(indices) / self.slots[actor]) * longest + self.slack

    def _retry(self, indices, attempt, exc):
        if attempt >= self.retries:
            raise RuntimeError(f"sandbox pool: a chunk failed {attempt + 1} times; last: {exc}") from exc
        return indices, attempt + 1

    def _replace(self, index: int, actor, why: str):
        """Kill `actor` (its other in-flight calls fail too) and start a fresh one on its node,
        unless an earlier failure already replaced it."""
        current, node = self.actors[index]
        if current is not actor:
            return
        print(f"warning: sandbox actor on node {node['NodeID'][:8]} {why}: replacing it", file=sys.stderr)
        self.replacements += 1
        ray.kill(actor)
        self.actors[index] = self._start(node)

    def close(self) -> None:
        for actor, _ in self.actors:
            ray.kill(actor)
        self.actors = []
