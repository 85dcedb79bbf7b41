"""Reads the history rows of a W&B offline run (`run-*.wandb`) without network or the wandb SDK's
internals: the file is a 7-byte header then a LevelDB-style log of protobuf `Record`s."""
from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes):
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block - _HEADER
        else:
            raise ValueError(f"unexpected record type {kind} at offset {pos}")


def history(run_dir: str | Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("*.wandb")
    rows = []
    for raw in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows
