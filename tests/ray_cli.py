"""For tests that drive Ray's command line (`ray start`, `ray job submit`) as a user would."""
import os
import socket
import sys
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an activated virtual environment (`python` and `ray` are the project's),
    with no RAY_ADDRESS of the test process's own."""
    return {**os.environ, "RAY_ADDRESS": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def stop_cluster(temp_dir: Path) -> None:
    """Stop the cluster started with `--temp-dir=temp_dir`, and nothing else: its Ray processes
    name the directory on their command lines, and every process they started goes with them.
    (`ray stop --force` would stop every Ray on the machine, a benchmark's beside the suite too.)"""
    heads = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp_dir) in arg for arg in p.info["cmdline"] or ())]
    doomed = {p.pid: p for head in heads for p in [head, *_children(head)]}
    for p in doomed.values():
        _quietly(p.terminate)
    _, alive = psutil.wait_procs(doomed.values(), timeout=15)
    for p in alive:
        _quietly(p.kill)
    psutil.wait_procs(alive, timeout=15)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _quietly(signal_it) -> None:
    try:
        signal_it()
    except psutil.NoSuchProcess:
        pass
