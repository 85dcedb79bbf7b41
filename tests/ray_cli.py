"""For tests that drive Ray's command line (`ray start`, `ray job submit`) as a user would."""
import os
import socket
import sys
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an activated virtual environment (`python` and `ray` are the project's),
    with no RAY_ADDRESS of the test process's own."""
    return {**os.environ, "RAY_ADDRESS": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}
