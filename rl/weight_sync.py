"""Moving weights from the learner to rollout workers.

The CPU transport publishes a safetensors file under /dev/shm (RAM-backed, so the write and the
workers' reads are memory copies) and asks every worker to reload from it in place.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def checksum_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Order-independent content hash: names, shapes, dtypes and exact bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def publish_weights(state_dict: dict[str, torch.Tensor], directory: str | Path, version: int) -> str:
    """Write `state_dict` as version `version` and return its path; older versions are removed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"weights-v{version:06d}.safetensors"
    staging = path.with_suffix(".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}, str(staging))
    os.replace(staging, path)  # readers never see a half-written file
    for old in directory.glob("weights-v*.safetensors"):
        if old != path:
            old.unlink(missing_ok=True)
    return str(path)


def read_weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)
