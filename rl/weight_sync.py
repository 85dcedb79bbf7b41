"""Moving weights from the learner to the rollout workers: one transport per way the bytes travel.

A transport has two sides. In learner rank 0, `publish` turns a state dict into a small picklable
`PublishedWeights` (transport, version, checksum, where the bytes are), which the driver hands to
every rollout worker. In each rollout worker's Ray actor, `receive` turns it into safetensors
files on the worker's own node; the vLLM engine, which runs the model in a subprocess of that actor
(rl/vllm_ext.py), reloads from them in place and returns the checksum of what it loaded. Files are
the hand-over to the engine because vLLM's RPC arguments are msgpack: tensors do not survive it,
and bytes through it took 2.1-2.6x as long as a file in /dev/shm (docs/benchmarks.md).

    shm           learner rank 0 writes one file under weight_sync.directory (/dev/shm: RAM);
                  only workers on its node can read it.
    object_store  learner rank 0 puts buckets of tensors into Ray's object store; each worker, on
                  any node, pulls them and writes them under its own node's weight_sync.directory,
                  a bucket as soon as it has arrived, and removes them once its engine has loaded.

`choose_transport` resolves weight_sync.transport=auto for where the actors landed.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ray
import torch
from safetensors.torch import load_file, save_file

from envs.registry import Registry
from rl.config import ConfigError


def checksum_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Order-independent content hash: names, shapes, dtypes and exact bytes. SHA-256, whose
    hardware instructions (SHA-NI) make it 2x blake2b's speed on these CPUs (docs/benchmarks.md)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy())   # hashed in place, not copied to bytes first
    return digest.hexdigest()[:32]


def read_weights(paths: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of these safetensors files, as one state dict."""
    return {name: tensor for path in paths for name, tensor in load_file(path).items()}


@dataclass(frozen=True)
class Bucket:
    """Consecutive tensors of a state dict as one object in Ray's object store: a list of flat
    uint8 arrays, one per tensor, in the order of `tensors` (name, dtype, shape)."""
    ref: ray.ObjectRef
    tensors: tuple[tuple[str, torch.dtype, tuple[int, ...]], ...]


@dataclass(frozen=True)
class PublishedWeights:
    """One version as learner rank 0 published it; small, so the driver can hand it to every
    worker. location: the file's path (shm) or the buckets (object_store)."""
    transport: str
    version: int
    checksum: str
    location: str | tuple[Bucket, ...]


class Transport(abc.ABC):
    """Both sides of one way of moving weights. `directory` is the node-local folder for weight
    files (weight_sync.directory/<run>), on the learner's node and on each worker's; bucket_mb
    (weight_sync.bucket_mb) is how much object_store puts in one object."""
    name = ""

    def __init__(self, directory: str | Path, bucket_mb: float = 64.0):
        self.directory, self.bucket_bytes = Path(directory), int(bucket_mb * (1 << 20))

    def publish(self, state: dict[str, torch.Tensor], version: int) -> PublishedWeights:
        """Learner rank 0's side: the bytes sent, with the checksum receivers must match."""
        return PublishedWeights(self.name, version, checksum_tensors(state), self.send(state, version))

    @abc.abstractmethod
    def send(self, state: dict[str, torch.Tensor], version: int) -> str | tuple[Bucket, ...]:
        """Puts the bytes where the receivers will find them; returns that location."""

    @abc.abstractmethod
    def receive(self, weights: PublishedWeights, timeout_s: float) -> contextlib.AbstractContextManager[list[str]]:
        """The safetensors files on this node that hold `weights`, while the context lasts."""


class ShmTransport(Transport):
    name = "shm"

    def send(self, state: dict[str, torch.Tensor], version: int) -> str:
        """Writes version `version`; older versions are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"weights-v{version:06d}.safetensors"
        staging = path.with_suffix(".tmp")
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(staging))
        os.replace(staging, path)  # readers never see a half-written file
        for old in self.directory.glob("weights-v*.safetensors"):
            if old != path:
                old.unlink(missing_ok=True)
        return str(path)

    @contextlib.contextmanager
    def receive(self, weights: PublishedWeights, timeout_s: float) -> Iterator[list[str]]:
        yield [weights.location]


class ObjectStoreTransport(Transport):
    name = "object_store"

    def send(self, state: dict[str, torch.Tensor], version: int) -> tuple[Bucket, ...]:
        """Puts the buckets; they live while any holder of the returned handle does (Ray counts
        references), so a version is freed once the driver and the workers are done with it."""
        buckets, group, size = [], [], 0
        for name, tensor in state.items():
            nbytes = tensor.numel() * tensor.element_size()
            if group and size + nbytes > self.bucket_bytes:
                buckets.append(self._put(state, group))
                group, size = [], 0
            group.append(name)
            size += nbytes
        if group:
            buckets.append(self._put(state, group))
        return tuple(buckets)

    @staticmethod
    def _put(state: dict[str, torch.Tensor], names: list[str]) -> Bucket:
        # numpy views of the tensors' own storage: ray.put copies each once, into the object store
        arrays = [state[n].detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy() for n in names]
        return Bucket(ray.put(arrays), tuple((n, state[n].dtype, tuple(state[n].shape)) for n in names))

    @contextlib.contextmanager
    def receive(self, weights: PublishedWeights, timeout_s: float) -> Iterator[list[str]]:
        """Pulls every bucket to this node (within `timeout_s` in all) and writes each to its own
        file as it arrives; the files are removed when the context ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        buckets = {b.ref: (i, b) for i, b in enumerate(weights.location)}
        paths = [str(self.directory / f"received-{os.getpid()}-v{weights.version:06d}-{i:03d}.safetensors")
                 for i in range(len(buckets))]
        pending, deadline = list(buckets), time.monotonic() + timeout_s
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()), fetch_local=True)
                if not ready:
                    raise TimeoutError(f"weights v{weights.version}: {len(pending)} of {len(buckets)} buckets did not "
                                       f"reach this node within weight_sync.timeout_s={timeout_s:g}s")
                i, bucket = buckets[ready[0]]
                save_file(_tensors_of(bucket, ray.get(ready[0])), paths[i])
            yield paths
        finally:
            for path in paths:
                Path(path).unlink(missing_ok=True)


def _tensors_of(bucket: Bucket, arrays) -> dict[str, torch.Tensor]:
    """The bucket's tensors as views of the arrays Ray returned (read-only shared memory)."""
    with warnings.catch_warnings():
        # torch warns that it cannot mark a tensor read-only; these are only read, by save_file
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return {name: torch.frombuffer(array, dtype=dtype).view(shape)
                for (name, dtype, shape), array in zip(bucket.tensors, arrays)}


TRANSPORTS: Registry[type[Transport]] = Registry("weight transport")
for _transport in (ShmTransport, ObjectStoreTransport):
    TRANSPORTS.register(_transport.name)(_transport)


def choose_transport(requested: str, learner_node: str, worker_nodes: list[str]) -> str:
    """weight_sync.transport for where the actors landed: auto is shm when every rollout worker is
    on learner rank 0's node, else object_store; shm with a worker elsewhere is a config error."""
    elsewhere = [f"{i} (node {node})" for i, node in enumerate(worker_nodes) if node != learner_node]
    if requested == "auto":
        return ObjectStoreTransport.name if elsewhere else ShmTransport.name
    if requested == ShmTransport.name and elsewhere:
        raise ConfigError(
            f"weight_sync.transport=shm: rollout workers {', '.join(elsewhere)} are not on learner rank 0's node "
            f"{learner_node}, and shared memory reaches only that node; use weight_sync.transport=auto or object_store")
    return requested
