"""The local executor: `workers` slots on this machine, one request per slot at a time.

A slot is either a fork server (level "namespaces": one long-lived server per slot) or a
launcher of one `python -I -S harness.py` process per request (levels "bubblewrap", "rlimits",
"none"). Both speak the harness's two-frame protocol, so every level runs the same judge.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from envs import harness
from envs.execution import ExecutionRequest, ExecutionResult, TestResult, Verdict
from envs.sandbox import cgroups, seccomp

log = logging.getLogger(__name__)

FORKSERVER = str(Path(__file__).with_name("forkserver.py"))
HARNESS = str(Path(harness.__file__).resolve())
ROOT_PREFIX = "selfcorrect-root-"   # + owner pid: the (empty, on the host) mount point of a server's root
# Sandbox uids: blocks of UID_BLOCK from UID_BASE up to the last valid uid ((uid_t) -1 is not one)
# for the programs; block b's fork-server judge is UID_BASE - 1 - b, never a program's.
UID_BASE, UID_BLOCK = 1_500_000_000, 1 << 20
UID_BLOCKS = (2 ** 32 - 1 - UID_BASE) // UID_BLOCK
RESTARTS = 3   # failed starts in a row after which a slot, and so the executor, is broken


@dataclass(frozen=True)
class SandboxOptions:
    """Limits that do not vary per request (time and memory come with each request)."""

    tmpfs_mb: int = 64                 # the task's private working directory (/tmp)
    max_processes: int = 64            # processes + threads of the program (pids cgroup, RLIMIT_NPROC)
    max_open_files: int = 64           # RLIMIT_NOFILE
    max_file_mb: int = 16              # RLIMIT_FSIZE: largest file the program may write
    output_limit_kb: int = 1024        # stdout + stderr the judge reads before calling it a flood
    grace_s: float = 2.0               # set-up and tear-down allowance over a request's time limit
    judge_memory_mb: int = 2048        # the judge's address space (it decodes replies and runs test code)
    socket_mb: int = 16                # kernel TCP buffer memory of a task (cgroup v1; v2 charges it to memory)
    python_packages: tuple[str, ...] = ("numpy",)   # importable inside, when installed here
    # Imported once by the fork server so that tasks (which are forks of it) need not.
    preload: tuple[str, ...] = (
        "typing", "math", "collections", "itertools", "functools", "re", "heapq", "bisect", "string",
        "random", "statistics", "fractions", "decimal", "operator", "copy", "hashlib", "datetime",
        "dataclasses", "enum", "json", "io",
    )
    env: dict = field(default_factory=lambda: {
        "PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    })

    def harness_config(self, workdir: str | None, site_dirs: list[str]) -> dict:
        limits = {
            "RLIMIT_AS": 0,   # the request's memory_mb
            "RLIMIT_CPU": 0,  # the request's time limit, rounded up, + 1 s
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_FSIZE": self.max_file_mb << 20,
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_CORE": 0,
        }
        return {"limits": limits, "env": dict(self.env), "sys_path": site_dirs, "workdir": workdir,
                "output_limit": self.output_limit_kb << 10, "judge_memory_mb": self.judge_memory_mb}


def allocate_uids() -> tuple[int, int]:
    """(first uid, judge uid) of a block of UID_BLOCK uids no other slot here was given recently.

    Blocks are handed out in turn from a counter under flock in /run (a tmpfs: a reboot resets it,
    and with it everything the kernel held for any uid), so a block comes back only after all
    UID_BLOCKS others did: long after its tasks' processes, tmpfs and sockets are gone. Uids are
    never derived from pids, which recur within seconds."""
    folder = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    with open(os.path.join(folder, "selfcorrect-uid-blocks"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        block = int(text) % UID_BLOCKS if text.isdigit() else 0
        f.seek(0)
        f.truncate()
        f.write(str(block + 1))
    return UID_BASE + block * UID_BLOCK, UID_BASE - 1 - block


def package_paths(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(directories to expose, site directories to put on sys.path) for installed packages.

    A package's directory and its wheel's vendored-library sibling (numpy.libs) are exposed;
    packages that are not installed are skipped.
    """
    import importlib.util

    exposed, sites = [], []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        package = os.path.realpath(list(spec.submodule_search_locations)[0])
        site = os.path.dirname(package)
        exposed += [p for p in (package, package + ".libs") if os.path.isdir(p)]
        if site not in sites:
            sites.append(site)
    return exposed, sites


def interpreter() -> str:
    """The base interpreter: a venv's python is a symlink to it, and its site is not wanted."""
    return os.path.realpath(sys.executable)


def _frames(request: ExecutionRequest) -> tuple[bytes, bytes]:
    """The header (the request's limits: all the launcher, and the namespaces level's zygote,
    ever read of it) and the body (program and tests: for the judge, which sends each worker
    the program and that run's input), framed as the harness reads them."""
    header = {"time_limit_s": request.time_limit_s, "memory_mb": request.memory_mb}
    body = {"program": request.program, "tests": [asdict(t) for t in request.tests], "setup_code": request.setup_code,
            "entry_point": request.entry_point, "time_limit_s": request.time_limit_s, "memory_mb": request.memory_mb}
    return _frame(header), _frame(body)


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "little") + data


class _SlotFailure(Exception):
    """The slot's machinery failed on one request (not the program's doing)."""


def _sandbox_result(request: ExecutionRequest, what: str, isolation: str, duration: float) -> ExecutionResult:
    """Every test of a request the sandbox failed on: Verdict.SANDBOX, and the reason."""
    log.warning("sandbox (%s) failed on a program: %s", isolation, what)
    failed = TestResult(Verdict.SANDBOX, harness._short(f"error: sandbox: {what}"))
    return ExecutionResult((failed,) * len(request.tests), isolation, duration, {"sandbox_error": what})


def _checked_verdicts(verdicts) -> list[dict]:
    """The judge's verdicts, or _SlotFailure when they are not what a judge writes."""
    values = {v.value for v in Verdict}
    if type(verdicts) is not list or not all(
            type(v) is dict and v.get("verdict") in values and type(v.get("message")) is str and type(v.get("got")) is str
            for v in verdicts):
        raise _SlotFailure("malformed verdicts from the judge")
    return verdicts


def _result(request: ExecutionRequest, verdicts: list[dict], timed_out: bool, oom_kills: int, isolation: str,
            duration: float) -> ExecutionResult:
    """ExecutionResult from the judge's verdicts; tests it never reached get the reason it stopped."""
    tests = []
    for item in verdicts:
        verdict, message = Verdict(item["verdict"]), item["message"]
        # A SIGKILL the judge saw while the memory cgroup recorded an OOM kill was the kernel's.
        if oom_kills and verdict is Verdict.ERROR and "signal 9" in message:
            verdict, message = Verdict.MEMORY, "killed by the kernel: over the memory limit"
        tests.append(TestResult(verdict, message, item["got"]))
    if len(tests) < len(request.tests):
        if timed_out:
            missing = TestResult(Verdict.TIMEOUT, f"exceeded the {request.time_limit_s:g}s time limit")
        elif oom_kills:
            missing = TestResult(Verdict.MEMORY, "killed by the kernel: over the memory limit")
        else:
            missing = TestResult(Verdict.ERROR, "the sandbox stopped before reporting this test")
        tests += [missing] * (len(request.tests) - len(tests))
    extra = {"oom_kills": oom_kills} if oom_kills else {}
    return ExecutionResult(tuple(tests[: len(request.tests)]), isolation, duration, extra)


class _ForkServerSlot:
    """One fork server ("namespaces" level) and the cgroups its tasks run in.

    A failure of the server on one request (no reply in time, a reply that is not a judge's)
    becomes that request's Verdict.SANDBOX and a fresh server; the executor raises only when
    RESTARTS fresh servers in a row fail to start."""

    def __init__(self, name: str, options: SandboxOptions):
        exposed, sites = package_paths(options.python_packages)
        base = os.path.realpath(sys.base_prefix)
        self.root = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")
        self.cgroups = cgroups.SlotCgroups.create(name, socket_bytes=options.socket_mb << 20)
        binds = ["/usr/lib"] + [p for p in ("/usr/lib64",) if os.path.isdir(p)] + [base + "/lib"] + exposed
        binds += ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"]
        self.config = {
            "root": self.root, "binds": binds,
            "symlinks": [["usr/lib", "/lib"]] + ([["usr/lib64", "/lib64"]] if "/usr/lib64" in binds else []),
            "tmpfs_mb": options.tmpfs_mb, "overhead_mb": 64, "max_processes": options.max_processes,
            "grace_s": options.grace_s, "preload": list(options.preload),
            "init_program": shutil.which("cat") or "/bin/cat",
            "cgroups": self.cgroups.dirs,
            "harness": options.harness_config("/tmp", sites),
        }
        self.grace_s = options.grace_s
        self.proc = self.tests = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        # The configuration is the first frame on stdin, then part A of each request; part B (the
        # tests) goes to the judge's own pipe. Each server gets a fresh block of uids, one per task.
        (self.uid_first, judge_uid), self.tasks = allocate_uids(), 0
        tests_r, tests_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [interpreter(), "-I", "-S", FORKSERVER],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.config["harness"]["env"], pass_fds=(tests_r,),
            )
        finally:
            os.close(tests_r)
        self.tests = os.fdopen(tests_w, "wb")
        try:
            self._send(self.proc.stdin, _frame(dict(self.config, tests_fd=tests_r, uid_first=self.uid_first, judge_uid=judge_uid)), 30.0)
            ready = self._read(30.0)
        except _SlotFailure as exc:
            ready = {"error": str(exc)}
        if not ready.get("ready"):
            self._stop()
            raise RuntimeError(f"fork server did not start: {ready.get('error')}")

    def _send(self, stream, data: bytes, timeout: float):
        """Write all of `data` within `timeout`: a stuck server must not block this thread."""
        fd = stream.fileno()
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise _SlotFailure("the server stopped reading requests")
            try:
                view = view[os.write(fd, view[:select.PIPE_BUF]):]
            except OSError as exc:
                raise _SlotFailure(f"the server is gone ({exc.strerror})") from None

    def _read(self, timeout: float) -> dict:
        """The judge's next frame within `timeout`, at most harness.MAX_FRAME bytes."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = bytearray()
        while True:
            if len(data) >= 4:
                size = int.from_bytes(data[:4], "little")
                if size > harness.MAX_FRAME:
                    raise _SlotFailure(f"a reply of {size} bytes")
                if len(data) >= 4 + size:
                    try:
                        reply = json.loads(data[4:4 + size])
                    except ValueError as exc:
                        raise _SlotFailure(f"an unreadable reply ({exc})") from None
                    if type(reply) is not dict:
                        raise _SlotFailure("a reply that is not an object")
                    return reply
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _SlotFailure(f"no reply within {timeout:g}s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _SlotFailure("the server died")
            data += chunk

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        start = time.monotonic()
        # Uids used up (a fresh server, a fresh block), or the server died since the last reply.
        if self.tasks >= UID_BLOCK or self.proc.poll() is not None:
            self._restart()
        self.tasks += 1
        header, body = _frames(request)
        try:
            self._send(self.proc.stdin, header, 10.0)
            self._send(self.tests, body, 10.0)
            reply = self._read(request.time_limit_s + self.grace_s + 10.0)
            if "verdicts" not in reply or type(reply.get("oom_kills")) is not int:
                raise _SlotFailure(f"the server failed: {reply.get('error', 'a reply without verdicts')}")
            verdicts = _checked_verdicts(reply["verdicts"])
            # The judge outlives the server: when the server dies under a request (killed, as an
            # OOM kill would), the judge still replies, with the launcher's loss as a sandbox
            # verdict, possibly before the server's exit is visible here. Either sign means the
            # slot's machinery is gone: a fresh server before the next request.
            machinery = next((v["message"] for v in verdicts if v["verdict"] == Verdict.SANDBOX.value), None)
            if machinery is not None or self.proc.poll() is not None:
                raise _SlotFailure((machinery or "the server died during the request").removeprefix("error: sandbox: "))
        except _SlotFailure as failure:
            self._restart()
            return _sandbox_result(request, str(failure), "namespaces", time.monotonic() - start)
        return _result(request, verdicts, False, reply["oom_kills"], "namespaces", time.monotonic() - start)

    def _restart(self):
        """A fresh server; RuntimeError (the sandbox is broken) when RESTARTS starts in a row fail."""
        self._stop()
        for attempt in range(RESTARTS):
            try:
                self._start()
                return
            except (OSError, RuntimeError) as exc:
                log.warning("sandbox slot restart %d/%d failed: %s", attempt + 1, RESTARTS, exc)
                error = exc
        raise RuntimeError(f"the sandbox is broken: a slot failed to restart {RESTARTS} times in a row: {error}")

    def _stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # its judge and tasks die with it (death signals)
            self.proc.wait()
        if self.tests is not None:
            try:
                self.tests.close()
            except BrokenPipeError:
                pass
            self.tests = None

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # end of stream: the server stops after its current task (the judge with it)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._stop()
        self.cgroups.remove()
        try:
            os.rmdir(self.root)
        except OSError:
            pass


class _ProcessSlot:
    """One fresh `python -I -S harness.py` per request, under bubblewrap or bare."""

    def __init__(self, level: str, options: SandboxOptions):
        self.level, self.options = level, options
        exposed, sites = package_paths(options.python_packages)
        root = os.geteuid() == 0
        self.own_uids = False
        if level == "bubblewrap":
            # Inside bubblewrap every process has the same uid: no per-task uid.
            self.config = options.harness_config("/tmp", sites)
            self.command = _bwrap_command(options, exposed) + ["-I", "-S", "/sandbox/harness.py"]
        else:
            self.config = options.harness_config(None, sites)
            if level == "none":
                self.config["limits"] = {}
            elif root and _readable_by_all(os.path.realpath(sys.base_prefix)):
                # A fresh unprivileged uid per request makes RLIMIT_NPROC bind and keeps the
                # program out of root's files. (Not possible when the interpreter itself sits
                # where only root can read, e.g. under /root: the program could not import.)
                self.own_uids = True
                self.uid_next = self.uid_end = 0
            else:
                del self.config["limits"]["RLIMIT_NPROC"]  # it would count every process of this user
            self.command = [interpreter(), "-I", "-S", HARNESS]
        self.config.update(worker_uid=None, judge_uid=None, die_with_parent=True)

    def _request_config(self) -> dict:
        """The harness's configuration for one request: with own uids, the next two of the block
        (worker, judge), and the worker's killed by uid at the end (no pid namespace here)."""
        if not self.own_uids:
            return self.config
        if self.uid_next + 2 > self.uid_end:
            self.uid_next = allocate_uids()[0]
            self.uid_end = self.uid_next + UID_BLOCK
        worker, self.uid_next = self.uid_next, self.uid_next + 2
        return dict(self.config, worker_uid=worker, judge_uid=worker + 1, kill_uid=True)

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        start = time.monotonic()
        proc = subprocess.Popen(self.command + [json.dumps(self._request_config())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=self.options.env, start_new_session=True)
        timed_out = False
        try:
            out, _ = proc.communicate(b"".join(_frames(request)), timeout=request.time_limit_s + self.options.grace_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            out = b""
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if timed_out:
                out, _ = proc.communicate()
            proc.wait()
        try:
            verdicts = _checked_verdicts([json.loads(line) for line in out.decode(errors="replace").splitlines()])
        except (ValueError, _SlotFailure) as exc:
            return _sandbox_result(request, f"unreadable verdicts ({exc})", self.level, time.monotonic() - start)
        return _result(request, verdicts, timed_out, 0, self.level, time.monotonic() - start)

    def close(self):
        pass


def _remove_stale_roots():
    """Remove the root mount points of servers whose executor died without closing (a killed
    Ray actor): on the host they are empty directories."""
    folder = tempfile.gettempdir()
    cgroups.remove_orphaned_dirs(folder, os.listdir(folder), ROOT_PREFIX)


def _readable_by_all(path: str) -> bool:
    """Whether every directory from / down to `path` lets other users through and list it."""
    while True:
        mode = os.stat(path).st_mode
        if not mode & 0o001 or (os.path.isdir(path) and not mode & 0o004 and path != "/"):
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def _bwrap_command(options: SandboxOptions, exposed: list[str]) -> list[str]:
    python = interpreter()
    base = os.path.realpath(sys.base_prefix)
    # A user namespace with an unprivileged uid inside, and no further user namespaces: root
    # outside maps to nobody inside, and the program cannot build a namespace of its own.
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns",
           "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--ro-bind", "/usr/lib", "/usr/lib", "--symlink", "usr/lib", "/lib"]
    if os.path.isdir("/usr/lib64"):
        cmd += ["--ro-bind", "/usr/lib64", "/usr/lib64", "--symlink", "usr/lib64", "/lib64"]
    cmd += ["--ro-bind", base + "/lib", base + "/lib", "--ro-bind", python, python,
            "--ro-bind", HARNESS, "/sandbox/harness.py"]
    for path in exposed:
        cmd += ["--ro-bind", path, path]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--size", str(options.tmpfs_mb << 20), "--tmpfs", "/tmp",
            "--hostname", "sandbox", "--chdir", "/tmp", "--clearenv"]
    for key, value in options.env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", python]


class LocalExecutor:
    """`workers` slots of one level; `run` spreads a batch over them and keeps its order."""

    def __init__(self, level: str, workers: int, options: SandboxOptions):
        self.isolation, self.options = level, options
        self._free: queue.Queue = queue.Queue()
        self._slots = []
        try:
            if level == "namespaces":
                cgroups.remove_stale()
                _remove_stale_roots()
                for i in range(workers):
                    self._slots.append(_ForkServerSlot(f"{os.getpid()}-{id(self):x}-{i}", options))
            else:
                self._slots = [_ProcessSlot(level, options) for _ in range(workers)]
        except BaseException:
            self.close()
            raise
        for slot in self._slots:
            self._free.put(slot)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
        self.info = self._describe()

    def run(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        return list(self._pool.map(self._run_one, requests))

    def _run_one(self, request: ExecutionRequest) -> ExecutionResult:
        slot = self._free.get()
        try:
            return slot.execute(request)
        finally:
            self._free.put(slot)

    def close(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=True)
        for slot in self._slots:
            slot.close()
        self._slots = []

    def _describe(self) -> dict:
        """What is in force, for logs and run metadata."""
        o = self.options
        info = {"level": self.isolation, "workers": len(self._slots),
                "rlimits": {"address_space": "request memory_mb", "cpu_s": "request time limit + 1",
                            "open_files": o.max_open_files, "file_size_mb": o.max_file_mb},
                "output_limit_kb": o.output_limit_kb, "wall_time": "request time_limit_s"}
        if self.isolation == "none":
            info["rlimits"] = {}
        if self.isolation == "namespaces":
            info.update(namespaces=["mount", "pid", "net", "ipc", "uts", "cgroup"], root="read-only, chroot",
                        tmpfs_mb=o.tmpfs_mb, uid="unprivileged, one per task, never reused while anything of it may remain",
                        cgroups=self._slots[0].cgroups.describe() if self._slots else {},
                        seccomp=sorted(seccomp.denied()), worker_origin="fresh forks of a zygote that never held a request",
                        judge_memory_mb=o.judge_memory_mb)
            info["rlimits"]["processes"] = o.max_processes
        elif self.isolation == "bubblewrap":
            info.update(namespaces=["mount", "pid", "net", "ipc", "uts", "user", "cgroup"], root="read-only, bubblewrap",
                        tmpfs_mb=o.tmpfs_mb, uid="shared by the task's processes", cgroups={})
        elif self.isolation == "rlimits" and self._slots and self._slots[0].own_uids:
            info.update(uid="unprivileged, one per task")
            info["rlimits"]["processes"] = o.max_processes
        elif self.isolation == "rlimits":
            info.update(uid="the caller's")
        return info
