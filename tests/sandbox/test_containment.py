"""Adversarial programs: each must be contained, get the right verdict, and leave the host as it was.

Network checks never send to an outside address: "no interface but loopback" is read from
inside, and "host loopback unreachable" targets a port the test itself listens on, on 127.0.0.1.
"""
import os
import socket
import time

import pytest

from envs.execution import Verdict
from envs.tasks import TestCase

from sandbox_helpers import REPO, run, sandbox_processes, stdout_of

pytestmark = pytest.mark.usefixtures("host_unchanged")


# ---------------------------------------------------------------- network

def test_only_its_own_loopback(isolated):
    result = run(isolated, "import socket\nprint(socket.if_nameindex())")
    assert stdout_of(result) == "[(1, 'lo')]"


def test_host_loopback_port_unreachable(isolated):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'hi')\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('refused', e.errno)\n"
        )
        result = run(isolated, program)
        assert stdout_of(result).startswith("refused")
        with pytest.raises(BlockingIOError):  # nothing ever reached the host's listener
            server.accept()


# ---------------------------------------------------------------- host files and environment

def test_writes_stay_inside(isolated, marker):
    program = (
        f"import os\n"
        f"for folder in ('/tmp', '/dev/shm', {str(REPO)!r}):\n"
        f"    try:\n"
        f"        with open(os.path.join(folder, {marker!r}), 'w') as f:\n"
        f"            f.write('x')\n"
        f"        print(folder, 'written')\n"
        f"    except OSError as e:\n"
        f"        print(folder, 'refused')\n"
    )
    out = stdout_of(run(isolated, program))
    assert "/tmp written" in out  # its private working directory
    assert f"{REPO} refused" in out
    # host_unchanged then checks that none of the three changed on the host


def test_host_files_and_environment_unreadable(isolated, monkeypatch):
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("SELFCORRECT_TEST_SECRET", secret)
    program = (
        "import os, glob\n"
        "print(sorted(os.environ))\n"
        "seen = []\n"
        "for path in ['/etc/passwd', '/etc/hostname', '/root/.bashrc', " + repr(str(REPO / "pyproject.toml")) + ",\n"
        "             '/proc/1/environ', '/proc/self/environ'] + glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        seen.append(open(path, 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n"
        "print(b'" + secret + "' in b''.join(seen), any(b'root:x:0' in s for s in seen))\n"
    )
    out = stdout_of(run(isolated, program)).splitlines()
    assert "SELFCORRECT_TEST_SECRET" not in out[0]
    assert out[1] == "False False"


# ---------------------------------------------------------------- processes

def test_fork_bomb(isolated):
    start = time.monotonic()
    result = run(isolated, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                 time_limit_s=2.0)
    assert result.tests[0].verdict is Verdict.TIMEOUT
    assert time.monotonic() - start < 6
    assert run(isolated, "print('alive')").tests[0].got == "alive"  # the slot still works


def test_thread_bomb(isolated):
    program = (
        "import threading, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "        n += 1\n"
        "except RuntimeError:\n"
        "    print('stopped at', n)\n"
    )
    out = stdout_of(run(isolated, program))
    assert out.startswith("stopped at") and int(out.split()[-1]) < 1000


def test_setsid_double_fork_daemon_dies_with_its_task(isolated, marker):
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open('/proc/self/comm', 'w').write({marker[:15]!r})\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent done')\n"
    )
    assert stdout_of(run(isolated, program)) == "parent done"
    time.sleep(0.2)
    comms = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comms.append(open(f"/proc/{pid}/comm").read().strip())
        except OSError:
            pass
    assert marker[:15] not in comms


def test_kill_all_cannot_reach_other_tasks(isolated):
    from envs.execution import ExecutionRequest

    killer = ExecutionRequest("import os, signal, time\nend = time.time() + 1\nwhile time.time() < end:\n"
                              "    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n",
                              (TestCase("stdio", "", ""),), time_limit_s=3.0)
    victim = ExecutionRequest("import time\ntime.sleep(0.5)\nprint('survived')\n",
                              (TestCase("stdio", "", "survived"),), time_limit_s=3.0)
    results = isolated.run([killer, victim])
    assert results[1].tests[0].verdict is Verdict.PASS


def test_ignored_signals_do_not_save_it(isolated):
    program = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
               "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n")
    start = time.monotonic()
    assert run(isolated, program, time_limit_s=1.0).tests[0].verdict is Verdict.TIMEOUT
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- resources

@pytest.mark.parametrize("program", [
    "x = bytearray(2 * 1024 ** 3)",
    "import time\nchunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n    time.sleep(0.01)\n",
], ids=["memory_bomb", "slow_growth"])
def test_memory(isolated, program):
    assert run(isolated, program, memory_mb=128, time_limit_s=5.0).tests[0].verdict is Verdict.MEMORY


def test_fd_exhaustion(isolated):
    program = "files = []\ntry:\n    while True:\n        files.append(open('/dev/null'))\nexcept OSError:\n    print(len(files))\n"
    assert int(stdout_of(run(isolated, program))) < 64


def test_disk_fill(isolated):
    program = (
        "n = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        with open(f'/tmp/fill{i}', 'wb') as f:\n"
        "            for _ in range(64):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "                n += 1\n"
        "except OSError as e:\n"
        "    print('stopped after', n, 'MB')\n"
    )
    out = stdout_of(run(isolated, program, time_limit_s=5.0))
    assert out.startswith("stopped after") and int(out.split()[2]) <= 64


@pytest.mark.parametrize("program", ["while True:\n    pass\n", "import time\ntime.sleep(100)\n"], ids=["busy", "sleep"])
def test_wall_time(isolated, program):
    start = time.monotonic()
    assert run(isolated, program, time_limit_s=1.0).tests[0].verdict is Verdict.TIMEOUT
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("program", [
    "while True:\n    print('x' * 1000)\n",
    "import sys\nwhile True:\n    sys.stderr.write('x' * 1000)\n",
    "import sys\nsys.stdout.write('x' * (64 << 20))\n",
], ids=["stdout_flood", "stderr_flood", "one_huge_write"])
def test_output_floods(isolated, program):
    assert run(isolated, program).tests[0].verdict is Verdict.OUTPUT_LIMIT


def test_segfault(isolated):
    result = run(isolated, "import ctypes\nctypes.string_at(0)\n")
    assert result.tests[0].verdict is Verdict.ERROR and "segmentation fault" in result.tests[0].message


def test_deep_recursion(isolated):
    program = "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1) + 1\nprint(f(0))\n"
    assert run(isolated, program, time_limit_s=3.0).tests[0].verdict in (Verdict.ERROR, Verdict.MEMORY, Verdict.TIMEOUT)


# ---------------------------------------------------------------- privileges

def test_no_user_namespace(isolated):
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "print(libc.unshare(0x10000000), os.getuid() != 0)\n")
    assert stdout_of(run(isolated, program)) == "-1 True"


def test_no_setuid_root(isolated):
    # PermissionError without the capability; EINVAL in a user namespace where 0 is unmapped
    program = "import os\ntry:\n    os.setuid(0)\n    print('root')\nexcept OSError:\n    print('refused', os.getuid())\n"
    out = stdout_of(run(isolated, program))
    assert out.startswith("refused") and out != "refused 0"


def test_no_leftover_processes_after_a_batch(namespaces):
    from envs.execution import ExecutionRequest

    spawner = "import subprocess, sys, os\nfor _ in range(5):\n    os.fork() == 0 and __import__('time').sleep(30)\n"
    namespaces.run([ExecutionRequest(spawner, (TestCase("stdio", "", ""),), time_limit_s=1.0)] * 4)
    time.sleep(0.2)
    assert sandbox_processes() == []
