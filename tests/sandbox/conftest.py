"""Shared fixtures: one executor per level, and checks that the host was left as it was."""
import os
import shutil
import uuid

import pytest

from envs.sandbox import make_executor
from sandbox_helpers import REPO, sandbox_processes

ON_CI = os.environ.get("CI") == "true"


def _levels():
    levels = ["namespaces"]
    if shutil.which("bwrap"):
        levels.append("bubblewrap")
    return levels


@pytest.fixture(scope="session")
def namespaces():
    """The full-isolation executor. CI runs as root, where it must work; elsewhere it may skip."""
    if os.geteuid() != 0 and not ON_CI:
        pytest.skip("the namespaces level needs root")
    executor = make_executor("namespaces", workers=2)
    yield executor
    executor.close()


@pytest.fixture(scope="session", params=_levels())
def isolated(request):
    """Each isolated level available here (namespaces always on CI, bubblewrap when installed)."""
    if request.param == "namespaces":
        yield request.getfixturevalue("namespaces")
        return
    executor = make_executor(request.param, workers=2)
    yield executor
    executor.close()


@pytest.fixture
def marker():
    """A name no file or process on the host has; tests look for it after the request."""
    return f"sandbox-escape-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def host_unchanged(marker):
    """Fails the test if a file named `marker` appeared in /tmp, /dev/shm or the repository,
    or a sandbox process outlived its request."""
    yield
    for folder in ("/tmp", "/dev/shm", str(REPO)):
        assert not os.path.exists(os.path.join(folder, marker)), f"the program wrote {folder}/{marker} on the host"
    assert sandbox_processes() == [], [open(f"/proc/{p}/status").read()[:300] for p in sandbox_processes()]
