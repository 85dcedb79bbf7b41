"""For tests that drive Ray's command line (`ray start`, `ray job submit`) as a user would."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_ports(head: bool = True) -> list[str]:
    """`ray start` options for the fixed ports Ray would otherwise take (its client server's 10001,
    the dashboard agent's 52365), so that a test cluster starts beside any other Ray on the machine."""
    ports = [f"--dashboard-agent-listen-port={free_port()}"]
    return ports + [f"--ray-client-server-port={free_port()}"] if head else ports


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an activated virtual environment (`python` and `ray` are the project's),
    with no RAY_ADDRESS of the test process's own."""
    return {**os.environ, "RAY_ADDRESS": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def token_env() -> dict[str, str]:
    """cli_env with Ray's token authentication on, as `ray start --head` has it wherever
    ~/.ray/auth_token exists (created here if it does not: RAY_AUTH_MODE=token refuses to start
    without one)."""
    env = cli_env(RAY_AUTH_MODE="token")
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    return env


def stop_cluster(temp_dir: Path, port: int) -> None:
    """Stop the cluster started with `--temp-dir=temp_dir --port=port`, and nothing else: its Ray
    processes name the directory or the head's address on their command lines (Ray's client server
    only the address), and every process they started goes with them. (`ray stop --force` would
    stop every Ray on the machine, a benchmark's beside the suite too.)"""
    def ours(args: list[str]) -> bool:
        return any(str(temp_dir) in arg or arg.endswith(f":{port}") for arg in args)

    heads = [p for p in psutil.process_iter(["cmdline"]) if ours(p.info["cmdline"] or [])]
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
