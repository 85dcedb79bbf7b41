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
    tcp           learner rank 0 copies the tensors into one image in its own memory (the
                  safetensors layout) and serves it over TCP; the engine itself, on any node,
                  streams it into a buffer it keeps from one version to the next and reloads from
                  views of it: no file, no object store, and no page of either side touched anew.

A receive hands the engine `locations`, strings it can open in its own process (`read_weights`):
safetensors files, or a tcp:// address. `choose_transport` resolves weight_sync.transport=auto for
where the actors landed.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

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


def read_weights(locations: list[str], timeout_s: float = 300.0) -> dict[str, torch.Tensor]:
    """The tensors at these locations (what a transport's receive yields), as one state dict:
    safetensors files, or tcp:// addresses fetched within `timeout_s` (views of this process's
    receive buffer, valid until the next fetch)."""
    state = {}
    for location in locations:
        state.update(fetch_image(location, timeout_s) if location.startswith("tcp://") else load_file(location))
    return state


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
    (weight_sync.bucket_mb) is how much object_store puts in one object; port and timeout_s
    (weight_sync.port, weight_sync.timeout_s) are where tcp serves and how long it waits for a
    stalled receiver. The publishing side keeps one instance for the run (tcp's server lives in it)."""
    name = ""

    def __init__(self, directory: str | Path, bucket_mb: float = 64.0, port: int = 0, timeout_s: float = 300.0):
        self.directory, self.bucket_bytes = Path(directory), int(bucket_mb * (1 << 20))
        self.port, self.timeout_s = port, timeout_s

    def publish(self, state: dict[str, torch.Tensor], version: int) -> PublishedWeights:
        """Learner rank 0's side: the bytes sent, with the checksum receivers must match."""
        return PublishedWeights(self.name, version, checksum_tensors(state), self.send(state, version))

    @abc.abstractmethod
    def send(self, state: dict[str, torch.Tensor], version: int) -> str | tuple[Bucket, ...]:
        """Puts the bytes where the receivers will find them; returns that location."""

    @abc.abstractmethod
    def receive(self, weights: PublishedWeights, timeout_s: float) -> contextlib.AbstractContextManager[list[str]]:
        """Where the engine on this node reads `weights` from (read_weights), while the context lasts."""


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


# -- tcp ---------------------------------------------------------------------------------------
# The image is the safetensors layout (an 8-byte little-endian header length, a JSON header of
# names, dtypes, shapes and data offsets, padded to 8 bytes, then the data), so any safetensors
# reader can check it; tensors are laid out by element size, largest first, so each starts
# aligned for its dtype and the receiver takes views rather than copies.
_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}
_TORCH_DTYPES = {code: dtype for dtype, code in _SAFETENSORS_DTYPES.items()}
_REQUEST = struct.Struct("<4s16sQ")   # magic, token, version
_MAGIC = b"SCW1"


def image_layout(state: dict[str, torch.Tensor]) -> tuple[bytes, dict[str, tuple[int, int]], int]:
    """The image's header (length prefix included), where each tensor's bytes go in the image
    (start, end), and the image's size."""
    for name, tensor in state.items():
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"tensor {name}: dtype {tensor.dtype} has no safetensors code")
    header, offset = {}, 0
    for name in sorted(state, key=lambda n: -state[n].element_size()):   # stable: state order within a size
        t = state[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    start = 8 + len(encoded)
    spans = {name: (start + h["data_offsets"][0], start + h["data_offsets"][1]) for name, h in header.items()}
    return struct.pack("<Q", len(encoded)) + encoded, spans, start + offset


def build_image(state: dict[str, torch.Tensor], memory: torch.Tensor | None = None) -> torch.Tensor:
    """The image of `state`, a flat uint8 tensor: in `memory` when it has exactly the image's size
    (memory already touched: the copy is a plain memcpy), else in fresh memory."""
    header, spans, size = image_layout(state)
    image = memory if memory is not None and memory.numel() == size else torch.empty(size, dtype=torch.uint8)
    image[:len(header)] = torch.frombuffer(bytearray(header), dtype=torch.uint8)
    for name, (a, b) in spans.items():
        tensor = state[name].detach()
        image[a:b].view(tensor.dtype).view(tensor.shape).copy_(tensor)
    return image


def image_tensors(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors of an image (a flat uint8 tensor) as views of it, in the header's order."""
    (length,) = struct.unpack("<Q", image[:8].numpy().tobytes())
    header = json.loads(image[8:8 + length].numpy().tobytes())
    header.pop("__metadata__", None)
    data = image[8 + length:]
    return {name: data[a:b].view(_TORCH_DTYPES[h["dtype"]]).view(h["shape"])
            for name, h in header.items() for a, b in [h["data_offsets"]]}


class _ImageServer:
    """Learner rank 0's side of tcp: serves the latest image, and an older one while a receiver is
    still reading it, to any receiver that presents the run's token; each connection on its own
    thread, so a slow or stalled receiver delays only itself (and is dropped after timeout_s)."""

    def __init__(self, port: int, timeout_s: float):
        self.host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self.listener = socket.create_server((self.host, port), family=family, backlog=128)
        except OSError as exc:
            raise OSError(f"weight_sync.transport=tcp: learner rank 0 cannot listen on {self.host}:{port} "
                          f"(weight_sync.port): {exc}") from exc
        self.port, self.timeout_s, self.token = self.listener.getsockname()[1], timeout_s, secrets.token_bytes(16)
        self.lock = threading.Lock()
        self.images: dict[int, torch.Tensor] = {}   # version -> image; the latest is the largest version
        self.readers: dict[int, int] = {}
        threading.Thread(target=self._accept, name="weight-server", daemon=True).start()

    def url(self, version: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host   # an IPv6 address
        return f"tcp://{host}:{self.port}/{version}?token={self.token.hex()}"

    def put(self, state: dict[str, torch.Tensor], version: int) -> None:
        """Copies `state` into an image served as `version`, reusing the memory of an image no one
        is reading (already touched: a plain copy, no page faults)."""
        with self.lock:   # the superseded image, if no one reads it
            spare = next((v for v in self.images if not self.readers.get(v)), None)
            memory = self.images.pop(spare) if spare is not None else None
        image = build_image(state, memory)
        with self.lock:
            self.images[version] = image
            for v in [v for v in self.images if v != version and not self.readers.get(v)]:
                del self.images[v]   # superseded and unread: freed

    def _accept(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(connection,), name="weight-server-send", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(self.timeout_s)
            try:
                magic, token, version = _REQUEST.unpack(_recv_exact(connection, _REQUEST.size))
                if magic != _MAGIC or not hmac.compare_digest(token, self.token):
                    return _refuse(connection, "not this run's weight server (wrong token)")
                with self.lock:
                    image = self.images.get(version)
                    if image is None:
                        return _refuse(connection, f"v{version} is not served (held: {sorted(self.images) or 'none'})")
                    self.readers[version] = self.readers.get(version, 0) + 1
                try:
                    connection.sendall(b"\0" + struct.pack("<Q", image.numel()))
                    connection.sendall(memoryview(image.numpy()))
                finally:
                    with self.lock:
                        self.readers[version] -= 1
                        if not self.readers[version]:
                            del self.readers[version]
                            if version != max(self.images):
                                del self.images[version]
            except OSError:
                pass   # the receiver went away or stalled past timeout_s: it reports that itself


def _refuse(connection: socket.socket, reason: str) -> None:
    connection.sendall(b"\1" + reason.encode()[:4096])


def _recv_exact(connection: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = connection.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


_received = torch.empty(0, dtype=torch.uint8)   # this process's receive buffer, kept between versions


def fetch_image(url: str, timeout_s: float) -> dict[str, torch.Tensor]:
    """The tensors served at `url` (tcp://host:port/version?token=...), streamed within
    `timeout_s` into this process's receive buffer: views of it, valid until the next fetch."""
    global _received
    parts = urlsplit(url)
    version, token = int(parts.path.strip("/")), bytes.fromhex(parse_qs(parts.query)["token"][0])
    who = f"weights v{version} from learner rank 0 at {parts.hostname}:{parts.port}"
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        return remaining

    got, size = 0, None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as connection:
            connection.sendall(_REQUEST.pack(_MAGIC, token, version))
            connection.settimeout(left())
            if _recv_exact(connection, 1) != b"\0":
                raise ConnectionError(f"refused: {connection.recv(4096).decode(errors='replace')}")
            (size,) = struct.unpack("<Q", _recv_exact(connection, 8))
            if _received.numel() < size:
                _received = torch.empty(size, dtype=torch.uint8)
            view = memoryview(_received.numpy())[:size]
            while got < size:
                connection.settimeout(left())
                n = connection.recv_into(view[got:], min(size - got, 16 << 20))
                if n == 0:
                    raise ConnectionError(f"the server closed after {got} of {size} bytes")
                got += n
    except TimeoutError:
        raise TimeoutError(f"{who}: {got} of {size if size is not None else '?'} bytes within "
                           f"weight_sync.timeout_s={timeout_s:g}s") from None
    except OSError as exc:
        raise ConnectionError(f"{who}: {exc}") from None
    return image_tensors(_received[:size])


class TcpTransport(Transport):
    name = "tcp"
    server: _ImageServer | None = None

    def send(self, state: dict[str, torch.Tensor], version: int) -> str:
        if self.server is None:
            self.server = _ImageServer(self.port, self.timeout_s)
        self.server.put(state, version)
        return self.server.url(version)

    @contextlib.contextmanager
    def receive(self, weights: PublishedWeights, timeout_s: float) -> Iterator[list[str]]:
        yield [weights.location]   # the engine fetches it itself (read_weights), into memory it keeps


TRANSPORTS: Registry[type[Transport]] = Registry("weight transport")
for _transport in (ShmTransport, ObjectStoreTransport, TcpTransport):
    TRANSPORTS.register(_transport.name)(_transport)


def choose_transport(requested: str, learner_node: str, worker_nodes: list[str]) -> str:
    """weight_sync.transport for where the actors landed: auto is shm when every rollout worker is
    on learner rank 0's node, else tcp (measured faster than object_store across nodes:
    docs/benchmarks.md); shm with a worker elsewhere is a config error."""
    elsewhere = [f"{i} (node {node})" for i, node in enumerate(worker_nodes) if node != learner_node]
    if requested == "auto":
        return TcpTransport.name if elsewhere else ShmTransport.name
    if requested == ShmTransport.name and elsewhere:
        raise ConfigError(
            f"weight_sync.transport=shm: rollout workers {', '.join(elsewhere)} are not on learner rank 0's node "
            f"{learner_node}, and shared memory reaches only that node; use weight_sync.transport=auto, tcp or object_store")
    return requested
