"""Attacks on what one task can learn of another, or of the host, at the namespaces level (issue
#14, classes 1 and 3 and the leaks seen beside them). Each runs in a batch with ordinary programs
(sandbox_helpers.CONTROLS), whose verdicts must not change."""
import fcntl
import os
import socket
import time

import pytest

from envs.execution import ExecutionRequest, Verdict
from envs.sandbox import make_executor
from envs.sandbox.local import UID_BASE
from envs.tasks import TestCase

from sandbox_helpers import leak_call, memory_scan, run_with_controls, stdout_of

pytestmark = pytest.mark.usefixtures("host_unchanged")


def stdio(program, expected="__never__", time_limit_s=5.0, memory_mb=256):
    return ExecutionRequest(program, (TestCase("stdio", "", expected),), time_limit_s=time_limit_s, memory_mb=memory_mb)


@pytest.fixture(scope="module")
def one_slot(namespaces):
    """One slot, so that a batch's requests run one after another on the same server."""
    executor = make_executor("namespaces", workers=1)
    yield executor
    executor.close()


def test_a_task_cannot_find_an_earlier_tasks_program_in_its_memory(one_slot):
    # The earlier request's passing solution holds a unique string; the next request on the
    # same slot scans all of its own memory for it. The scan's positive control: a string the
    # scanner itself builds at load, which it must find.
    secret = "neighbour-solution-" + os.urandom(6).hex()
    victim = ExecutionRequest(f"def answer():\n    return {secret!r}\n", (TestCase("call", "answer()", repr(secret)),), "answer")
    scanner_source = memory_scan() + "OWN = 'scanner-own-' + str(7 * 191)\n"
    scanner = ExecutionRequest(scanner_source, (TestCase("call", leak_call(secret), "0"),
                                                TestCase("call", leak_call("scanner-own-1337") + " > 0", "True")),
                               "leak", time_limit_s=20.0, memory_mb=512)
    victim_result, scan = run_with_controls(one_slot, victim, scanner)
    assert victim_result.all_passed
    assert [t.verdict for t in scan.tests] == [Verdict.PASS, Verdict.PASS], scan.tests


def test_denied_system_calls(namespaces):
    # Each call is made with arguments under which it would succeed, or fail with another errno,
    # without the filter: the errno shows it was the filter that refused.
    program = r'''
import ctypes, errno, fcntl, os, socket
def probe():
    libc = ctypes.CDLL(None, use_errno=True)
    def sys(nr, *args):
        result = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
        return errno.errorcode.get(ctypes.get_errno(), "?") if result == -1 else "allowed"
    def call(f):
        try:
            f()
            return "allowed"
        except OSError as e:
            return errno.errorcode.get(e.errno, "?")
    got = {
        "ptrace(TRACEME)": sys(101, 0, 0, 0, 0),
        "process_vm_readv(self)": sys(310, os.getpid(), 0, 0, 0, 0, 0),
        "keyctl(GET_KEYRING_ID, session)": sys(250, 0, -3, 1),
        "add_key": sys(248, 0, 0, 0, 0, -3),
        "request_key": sys(249, 0, 0, 0, 0),
        "perf_event_open": sys(298, 0, 0, -1, -1, 0),
        "userfaultfd(USER_MODE_ONLY)": sys(323, 1),
        "io_uring_setup": sys(425, 1, 0),
        "unshare(0)": sys(272, 0),
        "setns": sys(308, -1, 0),
        "prctl(SET_DUMPABLE, 1)": sys(157, 4, 1, 0, 0, 0),
        "clone3": sys(435, 0, 0),
        "clone(NEWUSER)": sys(56, 0x10000000 | 17, 0, 0, 0, 0),
        "execve": call(lambda: os.execv("/no/such/program", ["x"])),
        "flock": call(lambda: fcntl.flock(os.open("/dev/null", os.O_RDONLY), fcntl.LOCK_SH)),
        "fcntl(F_SETLK)": call(lambda: fcntl.lockf(open("/tmp/f", "w"), fcntl.LOCK_EX)),
        "inotify_init1": sys(294, 0),
        "socket(AF_ALG)": call(lambda: socket.socket(38, socket.SOCK_SEQPACKET)),
        "socket(NETLINK_AUDIT)": call(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)),
        "setsockopt(SO_RCVBUF)": call(lambda: socket.socket().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)),
    }
    allowed = {
        "socketpair": call(lambda: socket.socketpair()), "tcp": call(lambda: socket.socket()),
        "if_nameindex": call(socket.if_nameindex),
        "prctl(SET_DUMPABLE, 0)": sys(157, 4, 0, 0, 0, 0),
    }
    return got, allowed
'''
    denied = ["ptrace(TRACEME)", "process_vm_readv(self)", "keyctl(GET_KEYRING_ID, session)", "add_key", "request_key",
              "perf_event_open", "userfaultfd(USER_MODE_ONLY)", "io_uring_setup", "unshare(0)", "setns",
              "prctl(SET_DUMPABLE, 1)", "clone(NEWUSER)", "execve", "flock", "inotify_init1", "setsockopt(SO_RCVBUF)"]
    expected = dict.fromkeys(denied, "EPERM")
    expected.update({"clone3": "ENOSYS", "fcntl(F_SETLK)": "ENOLCK", "socket(AF_ALG)": "EAFNOSUPPORT",
                     "socket(NETLINK_AUDIT)": "EPROTONOSUPPORT"})
    allowed = dict.fromkeys(["socketpair", "tcp", "if_nameindex", "prctl(SET_DUMPABLE, 0)"], "allowed")
    request = ExecutionRequest(program, (TestCase("call", "probe()", repr((expected, allowed))),), "probe")
    (result,) = run_with_controls(namespaces, request)
    assert result.tests[0].verdict is Verdict.PASS, result.tests[0]


def test_keyrings_are_closed(namespaces):
    # A key left in a uid's keyring would outlive the task and be readable by the next task of
    # that uid; the keyring calls are denied outright, so nothing can be put there or read back.
    program = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "made = libc.syscall(248, b'user', b'left-behind', b'secret', 6, ctypes.c_long(-4))\n"
               "read = libc.syscall(250, 0, ctypes.c_long(-4), 0)\n"
               "print(made, read, ctypes.get_errno())\n")
    (result,) = run_with_controls(namespaces, stdio(program))
    assert stdout_of(result) == "-1 -1 1"


def test_uids_never_recur(namespaces):
    program = "import os\nprint(os.getuid(), os.getgid())\n"
    uids = []
    for _ in range(2):  # two batches, so that recurring pids (the old scheme) would show
        for result in run_with_controls(namespaces, *[stdio(program)] * 6):
            uid, gid = map(int, stdout_of(result).split())
            assert uid == gid and uid >= UID_BASE
            uids.append(uid)
    assert len(set(uids)) == len(uids) == 12


def test_no_locks_or_watches_shared_with_the_host(namespaces):
    # The host holds an exclusive lock on a file the task sees through its read-only root (the
    # same inode). A task that could take or test locks there would see it (a channel between
    # tasks and the host); it may neither lock, nor test for a lock, nor watch the file.
    shared = os.__file__
    program = (
        "import ctypes, fcntl, os, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"fd = os.open({shared!r}, os.O_RDONLY)\n"
        "out = []\n"
        "for name, f in [('flock', lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),\n"
        "                ('getlk', lambda: fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', 1, 0, 0, 0, 0))),\n"
        "                ('setlk', lambda: fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', 0, 0, 0, 0, 0)))]:\n"
        "    try:\n"
        "        f()\n"
        "        out.append(name + ' allowed')\n"
        "    except OSError as e:\n"
        "        out.append(name + ' ' + os.strerror(e.errno))\n"
        "watch = libc.inotify_init1(0)\n"
        "out.append('inotify ' + ('allowed' if watch >= 0 else os.strerror(ctypes.get_errno())))\n"
        "print('; '.join(out))\n"
    )
    with open(shared, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (result,) = run_with_controls(namespaces, stdio(program))
    assert stdout_of(result) == ("flock Operation not permitted; getlk No locks available; setlk No locks available; "
                                 "inotify Operation not permitted")


def test_proc_shows_no_host_configuration(namespaces):
    # Before: the server's argv (interpreter, script and the whole JSON configuration with its
    # host paths) and the host's cgroup paths of the slot.
    program = ("cmdline = open('/proc/self/cmdline', 'rb').read()\n"
               "cgroups = open('/proc/self/cgroup').read().splitlines()\n"
               "print(cmdline.rstrip(b'\\0'), len(cgroups) > 0, [c for c in cgroups if not c.endswith(':/')])\n")
    (result,) = run_with_controls(namespaces, stdio(program))
    assert stdout_of(result) == "b'sandbox' True []"


def test_orphans_are_reaped_so_zombies_cannot_use_up_the_process_limit(namespaces):
    # 300 orphans (more than the 64-process limit), each exiting at once: only an init that
    # reaps them keeps their slots in the pids cgroup free for the next fork.
    program = (
        "import os\nmade = 0\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            os.fork()\n"
        "        finally:\n"
        "            os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    made += 1\n"
        "print(made)\n"
    )
    (result,) = run_with_controls(namespaces, stdio(program, "300", time_limit_s=20.0))
    assert result.tests[0].verdict is Verdict.PASS, result.tests[0]


def test_socket_buffers_are_charged_to_the_task(namespaces):
    # Loopback TCP connections whose receivers never read: without accounting the kernel would
    # queue megabytes per connection (tcp_rmem/tcp_wmem autotuning), outside the memory limit.
    program = (
        "import socket\n"
        "listener = socket.socket()\nlistener.bind(('127.0.0.1', 0))\nlistener.listen(64)\n"
        "queued, keep = 0, []\n"
        "for _ in range(24):\n"
        "    try:\n"
        "        a = socket.create_connection(listener.getsockname())\n"
        "        b, _ = listener.accept()\n"
        "    except OSError:\n"
        "        break\n"
        "    keep += [a, b]\n"
        "    a.setblocking(False)\n"
        "    while True:\n"
        "        try:\n"
        "            queued += a.send(b'x' * 65536)\n"
        "        except OSError:\n"
        "            break\n"
        "print(queued >> 20)\n"
    )
    (result,) = run_with_controls(namespaces, stdio(program, time_limit_s=10.0))
    assert result.tests[0].verdict is Verdict.FAIL, result.tests[0]
    assert int(stdout_of(result)) <= 20, "MiB queued in socket buffers"
