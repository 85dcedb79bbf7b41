"""Where the engines' output goes. Each actor sends its stdout and stderr (its own, and those of
the processes it starts: vLLM's engine core, DeepSpeed's) to one file in the run's logs/ folder,
so that the terminal shows the run's progress, warnings and tables rather than ~70 INFO lines of
engine start-up per worker. An actor's exception still reaches the driver (Ray carries it)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def redirect_output(path: str | None) -> None:
    """From now on, this process's file descriptors 1 and 2 append to `path` (None: unchanged)."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
