"""Seconds per weight push of the default model, each transport end to end into a real vLLM
rollout worker, against a plain copy of the same bytes, side by side on this machine.

    python bench/weight_transport.py [--rounds 5] [--bucket-mb 64] [--json out.json]

A local two-node Ray cluster (two raylets on this machine, each with its own object store, so
the far worker's bytes travel between object stores as across real nodes, here over loopback).
A publisher actor on the head node holds the default model's state dict (SmolLM2-135M-Instruct,
fp32, 272 tensors, 538 MB, in its own memory) and publishes it exactly as learner rank 0 does
(rl/weight_sync.py); the rollout workers are real vLLM engines (rl/rollout.py), one on the head
node ("near") and one on the other node ("far"). Runners:
  plain copy         Tensor.copy_ of every tensor into preallocated, already-touched tensors in
                     the publisher's process: one memcpy of the bytes, nothing else (the baseline)
  plain clone        Tensor.clone of every tensor: the copy into fresh memory (page faults),
                     as every receiver's destination is
  plain socket, far  the same bytes sent over one TCP connection from the publisher's process to
                     an actor on the other node, into preallocated, already-touched memory: the
                     least any cross-node transport has to do (the cross-node baseline)
  checksum           checksum_tensors of the state dict (one SHA-256 pass; every push has two:
                     the learner's and the engine's)
  object_store/far bytes  the transport alone: send (buckets into the object store) and the
                     receive of the far node (pull, write to /dev/shm), no checksum, no engine
  tcp/far bytes      the transport alone: send (the image, into memory the publisher reuses) and
                     a fetch by a process on the far node (into memory it keeps), no checksum, no
                     engine
  shm                publish (a safetensors file in /dev/shm) + the near worker's load
  object_store/near  publish (buckets into the object store) + the near worker's load
  object_store/far   the same into the far worker
  tcp/near, tcp/far  publish (the image served over TCP) + the near or far worker's load (its
                     engine fetches the image itself)
A push is timed from the publish call to the worker's checksum, as Loop.step does (less its
verify_held), and also split into publish and load (receive, engine reload, engine checksum).
After a warm-up each, rounds are interleaved across runners (in a rotated order) so that other
load falls on all alike; the best and the median round of each are reported, and the median's
ratios to the plain copy's, the plain clone's and the plain socket's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from rl.models import DEFAULT_MODEL, resolve_model_path  # noqa: E402
from rl.rollout import RolloutActor  # noqa: E402
from rl.weight_sync import TRANSPORTS, PublishedWeights, checksum_tensors, fetch_image  # noqa: E402

TIMEOUT_S = 300.0


@ray.remote(num_cpus=0)
class Publisher:
    """Learner rank 0's side of a push, without the learner: the default model's tensors, owned by
    this process like a policy's parameters."""

    def __init__(self, model_path: str):
        from safetensors.torch import load_file

        self.state = {k: v.clone() for k, v in load_file(str(Path(model_path) / "model.safetensors")).items()}
        self.copies = {k: v.clone() for k, v in self.state.items()}   # the plain copy's destination, touched
        self.transports = {}   # one per kind, kept as the learner keeps them (tcp serves from its own)

    def transport(self, name: str, directory: str, bucket_mb: float):
        if name not in self.transports:
            self.transports[name] = TRANSPORTS.get(name)(directory, bucket_mb, 0, TIMEOUT_S)
        return self.transports[name]

    def size(self) -> tuple[int, int]:
        return len(self.state), sum(t.numel() * t.element_size() for t in self.state.values())

    def publish(self, transport: str, directory: str, bucket_mb: float, version: int) -> PublishedWeights:
        return self.transport(transport, directory, bucket_mb).publish(self.state, version)

    def send(self, transport: str, directory: str, bucket_mb: float, version: int) -> PublishedWeights:
        """The bytes only: no checksum (left empty)."""
        return PublishedWeights(transport, version, "", self.transport(transport, directory, bucket_mb).send(self.state, version))

    def plain_copy(self) -> float:
        start = time.monotonic()
        for name, tensor in self.state.items():
            self.copies[name].copy_(tensor)
        return time.monotonic() - start

    def plain_clone(self) -> float:
        start = time.monotonic()
        clones = {name: tensor.clone() for name, tensor in self.state.items()}
        seconds = time.monotonic() - start
        del clones
        return seconds

    def socket_send(self, host: str, port: int) -> None:
        """Every tensor's bytes, in order, over one TCP connection; returns once the receiver has
        them all."""
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as connection:
            for tensor in self.state.values():
                connection.sendall(memoryview(tensor.contiguous().view(torch.uint8).numpy()))
            if connection.recv(1) != b"\0":
                raise RuntimeError("the socket receiver did not confirm")

    def checksum(self) -> float:
        start = time.monotonic()
        checksum_tensors(self.state)
        return time.monotonic() - start


@ray.remote(num_cpus=0)
class Receiver:
    """A rollout worker's receive (staging files on its node), without the engine; an actor, so
    that no round pays for starting a Ray worker process."""

    def __init__(self):
        self.buffer = bytearray()

    def listen(self, nbytes: int) -> tuple[str, int]:
        """Accept one connection in the background and read `nbytes` from it into a buffer that is
        allocated and touched once; returns the address to send to."""
        if len(self.buffer) != nbytes:
            self.buffer = bytearray(nbytes)
        host = ray.util.get_node_ip_address()
        server = socket.create_server((host, 0))
        server.settimeout(TIMEOUT_S)

        def serve():
            with server, server.accept()[0] as connection:
                view, got = memoryview(self.buffer), 0
                while got < nbytes:
                    n = connection.recv_into(view[got:], min(nbytes - got, 4 << 20))
                    if n == 0:
                        raise ConnectionError(f"the sender closed after {got} of {nbytes} bytes")
                    got += n
                connection.sendall(b"\0")

        threading.Thread(target=serve, daemon=True).start()
        return host, server.getsockname()[1]

    def receive(self, weights: PublishedWeights, directory: str) -> None:
        """What the worker's actor does (object_store: pull and write files), and what its engine
        does before reading files (tcp: fetch into memory)."""
        with TRANSPORTS.get(weights.transport)(directory).receive(weights, TIMEOUT_S) as locations:
            for location in locations:
                if location.startswith("tcp://"):
                    fetch_image(location, TIMEOUT_S)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed pushes per runner (after one warm-up)")
    parser.add_argument("--bucket-mb", type=float, default=64.0, help="weight_sync.bucket_mb of object_store")
    parser.add_argument("--json", help="also write every round's figures here")
    args = parser.parse_args()
    model_path = resolve_model_path(DEFAULT_MODEL)
    # Publisher and head worker on the head node, the far worker alone on the other one; each node
    # stores one version (538 MB) at a time, with room for the next while the last is freed.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 2 << 30})
    far_node = cluster.add_node(num_cpus=1, object_store_memory=2 << 30)
    ray.init(address=cluster.address, log_to_driver=False)
    directory = tempfile.mkdtemp(prefix="bench-weights-", dir="/dev/shm")   # weight_sync.directory, both nodes
    try:
        run(args, model_path, directory, ray.get_runtime_context().get_node_id(), far_node.node_id)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def run(args, model_path: str, directory: str, head: str, far: str) -> None:
    def on(node):
        return NodeAffinitySchedulingStrategy(node, soft=False)

    nodes = {"near": head, "far": far}
    publisher = Publisher.options(scheduling_strategy=on(head)).remote(model_path)
    workers = {where: RolloutActor.options(num_cpus=1, scheduling_strategy=on(node)).remote(
        model_path, "float32", 1024, 0, 1.0, 0.4, (0, 1)) for where, node in nodes.items()}
    started = time.monotonic()
    ray.get([w.node_id.remote() for w in workers.values()])
    tensors, nbytes = ray.get(publisher.size.remote())
    print(f"{DEFAULT_MODEL}: {tensors} tensors, {nbytes / 1e6:.0f} MB; workers up in {time.monotonic() - started:.0f} s; "
          f"{os.cpu_count()} CPUs, {platform.platform()}, load average {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)

    version = 0

    def push(transport: str, where: str) -> dict[str, float]:
        nonlocal version
        version += 1
        start = time.monotonic()
        weights = ray.get(publisher.publish.remote(transport, directory, args.bucket_mb, version), timeout=TIMEOUT_S)
        published = time.monotonic()
        got = ray.get(workers[where].load_weights.remote(weights, directory, TIMEOUT_S), timeout=TIMEOUT_S)
        assert got == weights.checksum, f"{transport} into {where}: loaded {got}, published {weights.checksum}"
        end = time.monotonic()
        return {"seconds": end - start, "publish": published - start, "load": end - published}

    far_receiver = Receiver.options(scheduling_strategy=on(far)).remote()

    def bytes_only(transport: str) -> dict[str, float]:
        nonlocal version
        version += 1
        start = time.monotonic()
        weights = ray.get(publisher.send.remote(transport, directory, args.bucket_mb, version))
        ray.get(far_receiver.receive.remote(weights, directory))
        return {"seconds": time.monotonic() - start}

    def socket_copy() -> dict[str, float]:
        host, port = ray.get(far_receiver.listen.remote(nbytes))
        start = time.monotonic()
        ray.get(publisher.socket_send.remote(host, port), timeout=TIMEOUT_S)
        return {"seconds": time.monotonic() - start}

    runners = {
        "plain copy": lambda: {"seconds": ray.get(publisher.plain_copy.remote())},
        "plain clone": lambda: {"seconds": ray.get(publisher.plain_clone.remote())},
        "plain socket, far": socket_copy,
        "checksum": lambda: {"seconds": ray.get(publisher.checksum.remote())},
        "object_store/far bytes": lambda: bytes_only("object_store"),
        "tcp/far bytes": lambda: bytes_only("tcp"),
        "shm": lambda: push("shm", "near"),
        "object_store/near": lambda: push("object_store", "near"),
        "object_store/far": lambda: push("object_store", "far"),
        "tcp/near": lambda: push("tcp", "near"),
        "tcp/far": lambda: push("tcp", "far"),
    }
    for runner in runners.values():
        runner()   # warm-up: page cache, first-touch of the object stores and /dev/shm
    rounds = {name: [] for name in runners}
    names = list(runners)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rounds[name].append(runners[name]())
    medians = {name: statistics.median(x["seconds"] for x in figures) for name, figures in rounds.items()}
    print(f"{'runner':22s} {'best s':>7s} {'median s':>8s} {'/copy':>6s} {'/clone':>6s} {'/socket':>7s}  {'split (median s)':22s}  rounds (s)")
    for name, figures in rounds.items():
        seconds = [x["seconds"] for x in figures]
        split = "  ".join(f"{part} {statistics.median(x[part] for x in figures):.2f}" for part in ("publish", "load")
                          if part in figures[0])
        print(f"{name:22s} {min(seconds):7.3f} {medians[name]:8.3f} {medians[name] / medians['plain copy']:5.1f}x "
              f"{medians[name] / medians['plain clone']:5.1f}x {medians[name] / medians['plain socket, far']:6.1f}x  {split or '-':22s}  {' '.join(f'{s:.2f}' for s in seconds)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": DEFAULT_MODEL, "tensors": tensors, "bytes": nbytes,
                                               "bucket_mb": args.bucket_mb, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
