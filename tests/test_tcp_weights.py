"""The tcp weight transport's own parts, in one process on loopback (its run across two Ray
nodes into a real vLLM engine is in test_weight_transport.py and test_two_nodes.py): the image
layout, the server's versions, and every way a fetch can fail naming what did not answer."""
import socket
import struct
import threading
import time

import pytest
import torch
from safetensors.torch import load as load_safetensors

from rl.weight_sync import (_MAGIC, _REQUEST, TcpTransport, build_image, checksum_tensors, fetch_image, image_tensors,
                            read_weights)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every shape and dtype class a policy's state dict can hold, in an order that is not the
    image's (which goes by element size)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "norm.weight": torch.randn(7, generator=g).to(torch.bfloat16),
        "embed.weight": torch.randn(33, 5, generator=g),
        "steps": torch.randint(0, 1 << 40, (3,), generator=g),
        "mask": torch.rand(4, generator=g) > 0.5,
        "scale": torch.tensor(float(seed) + 0.5, dtype=torch.float16),
        "empty": torch.empty(0, 3),
        "head.weight": torch.randn(5, 9, generator=g, dtype=torch.float64),
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def test_the_image_is_a_safetensors_file_whose_tensors_are_views_in_place():
    state = _state()
    image = build_image(state)
    assert _same(load_safetensors(image.numpy().tobytes()), state)   # any safetensors reader reads it
    views = image_tensors(image)
    assert _same(views, state)
    base = image.untyped_storage().data_ptr()
    for name, view in views.items():   # no copies: each tensor lives in the image, aligned for its dtype
        if view.numel():
            assert base <= view.data_ptr() < base + image.numel() and (view.data_ptr() - base) % view.element_size() == 0, name
    memory = image.clone()
    again = build_image(_state(1), memory)   # an image of the same size is written into given memory
    assert again.data_ptr() == memory.data_ptr() and _same(image_tensors(again), _state(1))


def test_a_fetch_gets_each_published_version_exactly():
    transport = TcpTransport("/unused", timeout_s=10)
    first = transport.publish(_state(0), 3)
    assert first.transport == "tcp" and first.location.startswith("tcp://127.0.0.1:") and "/3?token=" in first.location
    got = read_weights([first.location], timeout_s=10)
    assert _same(got, _state(0)) and checksum_tensors(got) == first.checksum
    second = transport.publish(_state(1), 4)
    assert second.checksum != first.checksum
    assert checksum_tensors(read_weights([second.location], timeout_s=10)) == second.checksum
    with pytest.raises(ConnectionError, match=r"weights v3 from learner rank 0 at 127\.0\.0\.1:\d+: refused: v3 is not served \(held: \[4\]\)"):
        fetch_image(first.location, timeout_s=10)   # superseded, and no one was reading it: freed
    forged = second.location.split("token=")[0] + "token=" + "00" * 16
    with pytest.raises(ConnectionError, match=r"refused: not this run's weight server \(wrong token\)"):
        fetch_image(forged, timeout_s=10)


def _read_header(connection: socket.socket) -> int:
    header = b""
    while len(header) < 9:
        header += connection.recv(9 - len(header))
    assert header[:1] == b"\0"
    return struct.unpack("<Q", header[1:])[0]


def test_a_version_being_read_survives_the_next_publish():
    """A receiver still reading v1 when v2 (of the same size) is published gets v1's bytes, whole:
    the server does not reuse an image while anyone reads it, and frees it once the last reader
    is done. v1 is 64 MB, far more than the sockets buffer, so the server is mid-send."""
    big = {"big.weight": torch.zeros(16 << 20)}
    transport = TcpTransport("/unused", timeout_s=10)
    v1 = transport.publish({**_state(0), **big}, 1)
    token = bytes.fromhex(v1.location.split("token=")[1])
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        slow.settimeout(10)
        slow.connect(("127.0.0.1", transport.server.port))
        slow.sendall(_REQUEST.pack(_MAGIC, token, 1))
        size = _read_header(slow)
        v2 = transport.publish({**_state(1), "big.weight": torch.ones(16 << 20)}, 2)
        assert checksum_tensors(read_weights([v2.location], timeout_s=10)) == v2.checksum
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            got += slow.recv_into(view[got:])
    assert _same(load_safetensors(bytes(data)), {**_state(0), **big})
    deadline = time.monotonic() + 5
    while 1 in transport.server.images and time.monotonic() < deadline:   # the sender thread finishes after us
        time.sleep(0.01)
    assert sorted(transport.server.images) == [2]


def test_a_server_that_never_answers_times_out_naming_it():
    """A listener that accepts the connection (the kernel does) but never sends a byte."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    start = time.monotonic()
    with silent, pytest.raises(TimeoutError) as late:
        fetch_image(f"tcp://127.0.0.1:{port}/7?token={'ab' * 16}", timeout_s=1.0)
    assert time.monotonic() - start < 1.0 + 1.0
    assert str(late.value) == f"weights v7 from learner rank 0 at 127.0.0.1:{port}: 0 of ? bytes within weight_sync.timeout_s=1s"


def test_a_server_that_stops_midway_is_reported_with_how_far_it_got():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def half_then_close():
        connection, _ = listener.accept()
        with connection:
            connection.recv(_REQUEST.size)
            connection.sendall(b"\0" + struct.pack("<Q", 1000) + b"x" * 400)

    threading.Thread(target=half_then_close, daemon=True).start()
    with listener, pytest.raises(ConnectionError) as cut:
        fetch_image(f"tcp://127.0.0.1:{port}/2?token={'ab' * 16}", timeout_s=10)
    assert str(cut.value) == f"weights v2 from learner rank 0 at 127.0.0.1:{port}: the server closed after 400 of 1000 bytes"


def test_no_server_at_the_address_is_reported_naming_it():
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"^weights v1 from learner rank 0 at 127\.0\.0\.1:{port}: .*refused"):
        fetch_image(f"tcp://127.0.0.1:{port}/1?token={'ab' * 16}", timeout_s=5)
