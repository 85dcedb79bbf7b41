"""Runs one request's tests and reports one verdict per test. Standard library only.

It runs inside whatever isolation the executor set up: as the roles of the fork server of the
"namespaces" level (envs/sandbox/forkserver.py: `Judge`, `_launcher`, `_worker`), or as
`python -I -S harness.py CONFIG_JSON` per request under bubblewrap or plain rlimits (`main`).
Either way three roles split the work, so that the process running untrusted code can neither
forge a verdict nor read the answers:

  judge     reads the tests (with their expected values), runs the test code itself and writes
            the verdicts to a pipe that only it holds. It never runs untrusted code.
  launcher  never reads the tests: with `main` it is forked by the judge *before* the judge
            reads them; in the fork server it is the server, which never sees them at all. So
            no worker, a fork of it, ever held an expected value. It forks one worker per
            program load (function tests) or per run (stdio tests) and tells the judge how each
            one ended.
  worker    the untrusted process: own uid (when started as root), rlimits, no new privileges.
            It runs the program and answers "call f with these arguments" with the *value*,
            encoded as plain data. The judge decodes it into fresh built-in objects and compares
            them itself, so `__eq__` tricks, a patched `assert`, printing "passed", `exit(0)` or
            `os._exit` earn nothing; stdio programs are judged on the bytes they wrote.

Streams: the executor writes two frames, part A (program, setup code, stdio inputs: what the
program may see) then part B (the tests); `main` reads both from stdin, the fork server gets
part A on the server's stdin and part B on the judge's own pipe. Frames are a 4-byte little-endian
length and UTF-8 JSON.
"""
import builtins
import ctypes
import fcntl
import json
import math
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
import traceback

MAX_TEXT = 400              # message / got fields are cut to this many characters
MAX_FRAME = 16 << 20        # largest frame the trusted parts exchange (requests, verdicts)
MAX_REPLY = 4 << 20         # largest reply frame accepted from a worker (its JSON; decoding is bounded below)
MAX_DEPTH = 100             # deepest nesting a transferred value may have
MAX_NODES = 1 << 20         # most values (containers and scalars together) one reply may decode into
MAX_SAME_HASH = 64          # most set members or dict keys of one value that may share a hash
JUDGE_MEMORY_MB = 2048      # the judge's address-space limit, where the executor sets none
WORKER_FDS = (3, 4)         # the worker's RPC pipes: requests in, replies out
EXIT_MEMORY = 99            # a stdio run that ended in MemoryError (the program could fake it, for nothing)

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_NO_NEW_PRIVS = 1, 4, 15, 38


def _short(text):
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


# ----------------------------------------------------------------------------- framing

def write_frame(fd, obj):
    data = json.dumps(obj).encode()
    write_all(fd, struct.pack("<I", len(data)) + data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_frame(fd):
    """One frame from a blocking fd; None at end of stream."""
    data = read_frame_bytes(fd)
    return None if data is None else json.loads(data[4:])


def read_frame_bytes(fd):
    """One frame, length prefix included, undecoded; None at end of stream."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack("<I", head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    body = _read_exact(fd, size)
    if body is None:
        raise EOFError("stream ended inside a frame")
    return head + body


def _read_exact(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            if left == size:
                return None
            raise EOFError("stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------------------- values
# Only plain data crosses from worker to judge. The decoder builds fresh built-in objects, so
# nothing the program defined (an always-true __eq__, a lying __class__) reaches a comparison.

class Opaque:
    """A value the program returned that is not plain data: equal to nothing but itself."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__

    def __repr__(self):
        return self.text


def encode(value, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply to transfer")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind in (tuple, set, frozenset):
        return {_TAGS[kind]: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    # Subclasses of built-ins (IntEnum, numpy.float64) and numpy values travel as their plain
    # equivalent, as they would compare in the original harness. This runs in the worker, so
    # whatever these conversions do, the judge still only receives JSON.
    for base in (bool, int, float, str, bytes, complex, list, tuple, dict, set, frozenset):
        if isinstance(value, base):
            return encode(base(value), depth + 1)
    if callable(getattr(value, "tolist", None)):
        return encode(value.tolist(), depth + 1)
    try:
        text = repr(value)
    except BaseException:
        text = f"<{kind.__name__} object>"
    return {"o": _short(text)}


_TAGS = {tuple: "t", set: "s", frozenset: "f"}
_BUILD = {"t": tuple, "s": set, "f": frozenset}


def decode(obj):
    """Fresh built-in objects from a transferred value. The value comes from the program, so the
    cost is bounded: nesting, the number of values, and hash collisions (a set of values that
    all share one hash, e.g. multiples of 2**61 - 1, takes quadratic time to build)."""
    return _decode(obj, 0, [MAX_NODES])


def _decode(obj, depth, budget):
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"value has more than {MAX_NODES} parts")
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply to transfer")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [_decode(v, depth + 1, budget) for v in obj]
    if type(obj) is not dict or len(obj) != 1:
        raise ValueError("malformed value")
    (tag, body), = obj.items()
    if tag in _BUILD or tag == "d":
        if type(body) is not list:
            raise ValueError("malformed value")
        if tag == "d":
            pairs = [(_decode(k, depth + 1, budget), _decode(v, depth + 1, budget)) for k, v in _pairs(body)]
            _check_hashes([k for k, _ in pairs])
            return dict(pairs)
        items = [_decode(v, depth + 1, budget) for v in body]
        if tag != "t":
            _check_hashes(items)
        return _BUILD[tag](items)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "c" and type(body) is list and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    if tag == "o":
        return Opaque(_short(body))
    raise ValueError(f"unknown value tag {_short(repr(tag))}")


def _pairs(body):
    for pair in body:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("malformed value")
        yield pair


def _check_hashes(items):
    """Refuse a would-be set or dict whose members collide on one hash more than MAX_SAME_HASH
    times. Sorted, not counted in a dict: hash values themselves can be made to collide."""
    try:
        hashes = sorted(hash(item) for item in items)
    except TypeError:
        raise ValueError("unhashable member of a set or dict key") from None
    run = 1
    for a, b in zip(hashes, hashes[1:]):
        run = run + 1 if a == b else 1
        if run > MAX_SAME_HASH:
            raise ValueError("set or dict whose members collide on one hash")


# ----------------------------------------------------------------------------- process setup

libc = ctypes.CDLL(None, use_errno=True)


def prctl(option, value):
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def set_name(name):
    """The process name `ps` and `top` show: sandbox roles are told apart at a glance."""
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0)


def become(uid, die_with_parent):
    """Drop to `uid` (when given) with no supplementary groups; optionally die with the parent.

    The death signal is set after the uid change because setresuid clears it, then the parent
    is checked once, in case it died before the signal was armed.
    """
    parent = os.getppid()
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 0)   # no ptrace and no /proc/PID/{mem,fd} for same-uid processes
    if die_with_parent:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)


def _set_limits(limits):
    for name, value in limits.items():
        # CPU: hard one second above soft, so the soft limit's SIGXCPU (read as a timeout)
        # comes first; with soft == hard the kernel sends SIGKILL straight away.
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))


def limit_judge_memory(config):
    """The judge's own address-space limit: a reply or a test that balloons it raises
    MemoryError there (that test's sandbox verdict) instead of taking the machine's memory."""
    limit = config.get("judge_memory_mb", JUDGE_MEMORY_MB) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# ----------------------------------------------------------------------------- worker

def _worker(config, mode, fds, enter=None, confine=None):
    """Child of the launcher: becomes the untrusted process and never returns.

    The launcher never holds the program: once unprivileged, the worker reads it (with its
    limits and, for a stdio run, its one input) as a frame the judge writes to fd 3.
    confine: run last, right before the program (the fork server's seccomp filter)."""
    try:
        set_name("sandbox-worker")
        if enter is not None:
            enter()
        os.setsid()  # its own process group, so the launcher can kill what it forks
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]  # out of the way of 0..n-1
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 16)
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # when memory runs out, the worker goes first, never the judge
        except OSError:
            pass
        become(config["worker_uid"], die_with_parent=False)
        load = read_frame(WORKER_FDS[0])
        if load is None:
            os._exit(70)
        if mode != "functions":
            os.close(WORKER_FDS[0])  # a stdio run gets nothing more from the judge
        limits = dict(config["limits"])
        if limits:  # the per-request ones
            limits["RLIMIT_CPU"] = int(math.ceil(load["time_limit_s"])) + 1
            limits["RLIMIT_AS"] = load["memory_mb"] << 20
        _set_limits(limits)
        if os.environ != config["env"]:  # the fork server already runs with it
            os.environ.clear()
            os.environ.update(config["env"])
        sys.path[:0] = config["sys_path"]
        os.chdir(config["workdir"])
        sys.stdin = open(0, closefd=False) if mode == "functions" else _stdin_from(load["stdin"])
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        # Without setup code the program's line numbers in its tracebacks are its own.
        source = (load["setup_code"] + "\n" if load["setup_code"] else "") + load["program"]
        entry_point = load["entry_point"]
        del load
        if confine is not None:
            confine()
        code = _serve_functions(source, entry_point) if mode == "functions" else _run_main(source)
    except BaseException:
        code = 70
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code)


def _stdin_from(text):
    # A memfd rather than a pipe: no writer to keep alive, and any size fits.
    fd = os.memfd_create("stdin")
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)
    return open(0, closefd=False)


def _run_main(source):
    """stdio mode: the program as __main__; exit status 0 unless it raised."""
    sys.argv = ["main.py"]
    try:
        exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as exc:
        sys.stderr.write(program_traceback(exc, "main.py"))
        return 1


def _serve_functions(source, entry_point):
    """functions mode: load the program once, then answer calls until the judge hangs up."""
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(source, "<program>", "exec"), namespace)
        reply = {"loaded": True, "has_entry": callable(namespace.get(entry_point))}
    except BaseException as exc:
        reply = {"loaded": False, "raised": _describe(exc)}
    write_frame(WORKER_FDS[1], reply)
    while True:
        call = read_frame(WORKER_FDS[0])
        if call is None:
            return 0
        try:
            args = decode(call["args"])
            kwargs = decode(call["kwargs"])
            value = namespace[entry_point](*args, **kwargs)
            reply = {"value": encode(value)}
            data = json.dumps(reply)
        except BaseException as exc:
            data = json.dumps({"raised": _describe(exc)})
        write_all(WORKER_FDS[1], struct.pack("<I", len(data)) + data.encode())


def _describe(exc):
    name = type(exc).__name__
    return {"type": name if isinstance(name, str) else "Exception", "message": _short(exc),
            "traceback": _short(program_traceback(exc, "<program>").strip())}


def program_traceback(exc, filename, frames=2):
    """The program's part of a traceback: its last `frames` frames (those compiled from
    `filename`) and the exception line. The harness's and the library's frames are left out:
    their host paths would reach the policy and make feedback depend on the checkout."""
    try:
        own = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename][-frames:]
        lines = traceback.format_list(own) + traceback.format_exception_only(type(exc), exc)
    except BaseException:  # a program's exception whose str() raises, or worse
        lines = [f"{type(exc).__name__}\n"]
    return "".join(lines)


# ----------------------------------------------------------------------------- launcher

def _launcher(sock, config, enter=None, deadline=None, confine=None):
    """Fork workers on the judge's command and report how each ended, until the judge hangs up
    (or `deadline`, a time.monotonic() value, passes). Then kill the process groups of the
    workers still alive and return their pids, not yet reaped. Never runs untrusted code.

    enter: run first in each new worker, before it drops privileges (joining cgroups, chroot).
    confine: run last in each new worker, right before the program.
    """
    workers = {}  # id -> (pid, pidfd)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    next_id = 0
    judge_gone = False
    while not judge_gone:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            break
        for key, _ in sel.select(timeout):
            if key.data is None:
                try:
                    msg, _, _, _ = socket.recv_fds(sock, 1 << 16, 0)
                except OSError:  # ECONNRESET: it hung up with our notices unread
                    msg = b""
                if not msg:
                    judge_gone = True
                    break
                cmd = json.loads(msg)
                if cmd["op"] == "kill":
                    if cmd["id"] in workers:
                        _kill_group(workers[cmd["id"]][0])
                    continue
                next_id += 1
                pid, judge_fds = _spawn(config, cmd, enter, confine)
                pidfd = os.pidfd_open(pid)
                workers[next_id] = (pid, pidfd)
                sel.register(pidfd, selectors.EVENT_READ, next_id)
                socket.send_fds(sock, [json.dumps({"id": next_id}).encode()], judge_fds)
                for fd in judge_fds:
                    os.close(fd)
            else:
                pid, pidfd = workers.pop(key.data)
                sel.unregister(pidfd)
                os.close(pidfd)
                _kill_group(pid)  # what it forked into its group goes with it
                _, status = os.waitpid(pid, 0)
                notice = {"exited": key.data, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                          "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
                try:
                    sock.send(json.dumps(notice).encode())
                except OSError:  # the judge hung up first: clean up all the same
                    judge_gone = True
                    break
    sel.close()
    for pid, pidfd in workers.values():
        _kill_group(pid)
        os.close(pidfd)
    return [pid for pid, _ in workers.values()]


def _finish(config):
    """End of a launcher process (the levels that start an interpreter per request)."""
    if config.get("kill_uid"):
        kill_uid(config["worker_uid"])  # daemons that left the process group too
    if config.get("remove_workdir"):
        import shutil
        shutil.rmtree(config["workdir"], ignore_errors=True)
    os._exit(0)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _spawn(config, cmd, enter=None, confine=None):
    """Fork one worker; return its pid and the judge's ends of its pipes (stdout, stderr, the
    load-and-call pipe to the worker and, for function tests, the reply pipe)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    req_r, req_w = os.pipe()
    child_fds, judge_fds = [os.open(os.devnull, os.O_RDONLY), out_w, err_w, req_r], [out_r, err_r, req_w]
    if cmd["mode"] == "functions":
        rep_r, rep_w = os.pipe()
        child_fds.append(rep_w)
        judge_fds.append(rep_r)
    pid = os.fork()
    if pid == 0:
        _worker(config, cmd["mode"], child_fds, enter, confine)
    for fd in child_fds:
        os.close(fd)
    return pid, judge_fds


# ----------------------------------------------------------------------------- judge

class _Fault(BaseException):
    """The worker failed in a way that decides the verdict (timeout, memory, crash...), or the
    sandbox's own machinery did (verdict "sandbox_error").

    A BaseException so that test code's `except Exception` cannot swallow it."""

    def __init__(self, verdict, message):
        super().__init__(message)
        self.verdict, self.message = verdict, message


def _sandbox_fault(what):
    return _Fault("sandbox_error", _short(f"error: sandbox: {what}"))


class ProgramError(Exception):
    """The program raised: its exception as data (`type_name`, the message, `sandbox_traceback`),
    never a live object of the program's type.

    For an ordinary built-in type it is also an instance of that type, through a subclass made
    here, so a test's `except ValueError` still works. Types that steer the judge's own control
    flow are never mimicked: StopIteration (it would end the judge's iteration, so that
    `all(map(candidate, cases))` passes), StopAsyncIteration, AssertionError (a failed test),
    and everything outside Exception (SystemExit, KeyboardInterrupt, GeneratorExit)."""

    type_name = "Exception"
    sandbox_traceback = ""


_NOT_MIMICKED = (StopIteration, StopAsyncIteration, AssertionError)
_MIMICS = {}


def _mimic(name):
    """The ProgramError subclass standing for built-in exception `name` (ProgramError if none may)."""
    kind = getattr(builtins, name, None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)) or issubclass(kind, _NOT_MIMICKED):
        return ProgramError
    if kind not in _MIMICS:
        try:
            _MIMICS[kind] = type(name, (ProgramError, kind), {"__module__": "builtins"})
        except TypeError:  # a base whose layout cannot be combined
            _MIMICS[kind] = ProgramError
    return _MIMICS[kind]


def _raised(reply):
    """The exception a worker's reply reports, as three short strings, whatever it put there."""
    raised = reply.get("raised")
    raised = raised if type(raised) is dict else {}
    return {key: _short(raised[key]) if type(raised.get(key)) is str else "" for key in ("type", "message", "traceback")}


def _program_exception(raised):
    """What a call raises in the judge when the program raised (`raised` from `_raised`)."""
    if raised["type"] == "MemoryError":
        return _Fault("memory", "MemoryError")
    if raised["type"] == "RecursionError":
        return _Fault("error", raised["traceback"])
    try:
        exc = _mimic(raised["type"])(raised["message"])
    except Exception:  # a type whose constructor wants more (UnicodeDecodeError)
        exc = ProgramError(raised["message"])
    exc.type_name, exc.sandbox_traceback = raised["type"] or "Exception", raised["traceback"] or raised["message"]
    return exc


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name of their own
        if signal.SIGRTMIN < number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return "unknown signal"


class _Worker:
    """The judge's handle on one worker: its pipes, output budget and fate."""

    MAX_PENDING = 4   # replies the program wrote ahead of the calls that would ask for them

    def __init__(self, judge, mode, index=None):
        self.judge = judge
        msg, fds = judge.command({"op": "spawn", "mode": mode, "index": index})
        self.id = msg["id"]
        self.out_r, self.err_r, self.req_w = fds[0], fds[1], fds[2]
        self.rep_r = fds[3] if mode == "functions" else None
        self.stdout, self.stderr = bytearray(), bytearray()
        self.replies, self.buffer = [], bytearray()
        self.exit = None          # (signal, code) once the launcher reported it
        self.fault = None         # a _Fault once the worker can no longer be used
        for fd in fds:
            os.set_blocking(fd, False)

    def fds(self):
        return [fd for fd in (self.out_r, self.err_r, self.rep_r) if fd is not None]

    def on_readable(self, fd):
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.judge.sel.unregister(fd)
            return
        self.take(fd, data)

    def take(self, fd, data):
        """Bytes read from one of the worker's pipes: replies are framed and parsed, output is
        kept up to the output limit. Whatever the worker writes, this only sets a fault."""
        if fd != self.rep_r:
            target = self.stdout if fd == self.out_r else self.stderr
            room = self.judge.output_limit - len(self.stdout) - len(self.stderr)
            target += data[:max(room, 0)]
            if len(data) > room:
                self.fail(_Fault("output_limit", f"wrote more than {self.judge.output_limit} bytes of output"))
            return
        self.buffer += data
        while len(self.buffer) >= 4 and self.fault is None:
            (size,) = struct.unpack("<I", self.buffer[:4])
            if size > MAX_REPLY:
                self.fail(_Fault("error", "the program returned a value too large to transfer"))
            elif len(self.buffer) < 4 + size:
                return
            elif len(self.replies) >= self.MAX_PENDING:
                self.fail(_Fault("error", "the program wrote replies no call asked for"))
            else:
                frame = bytes(self.buffer[4:4 + size])
                del self.buffer[:4 + size]
                try:  # too deep (RecursionError), an int of too many digits, bad UTF-8 (ValueError)
                    reply = json.loads(frame)
                except (ValueError, RecursionError) as exc:
                    reply = exc
                if type(reply) is dict:
                    self.replies.append(reply)
                else:
                    self.fail(_Fault("error", f"the program's reply could not be read: {_short(reply)}"))
        if self.fault is not None:
            self.buffer.clear()

    def fail(self, fault):
        if self.fault is None:
            self.fault = fault
            self.judge.send({"op": "kill", "id": self.id})

    def wait(self, until, deadline):
        """Pump events until `until()` holds, the worker ends or the deadline passes."""
        while not until() and self.fault is None and self.exit is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(_Fault("timeout", f"exceeded the {self.judge.time_limit:g}s time limit"))
                break
            self.judge.pump(left)
        if self.exit is not None and self.fault is None:
            self.drain()

    def drain(self):
        """What is left in the pipes of a worker that ended. A process it left behind may still
        hold them and keep writing, so at most one output limit and one reply more are read."""
        budget = self.judge.output_limit + MAX_REPLY + 8
        for fd in self.fds():
            while budget > 0 and self.fault is None:
                try:
                    data = os.read(fd, min(1 << 16, budget))
                except OSError:
                    break
                if not data:
                    break
                budget -= len(data)
                self.take(fd, data)

    def call(self, args, kwargs, deadline):
        if self.fault is not None:
            raise self.fault
        try:
            payload = json.dumps({"args": encode(list(args)), "kwargs": encode(dict(kwargs))}).encode()
        except (ValueError, TypeError) as exc:
            raise TypeError(f"test argument cannot be sent to the program: {exc}") from None
        self.send_request(struct.pack("<I", len(payload)) + payload, deadline)
        return self.reply(deadline)

    def send_request(self, data, deadline):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.req_w, view):]
            except BlockingIOError:
                self.wait(lambda: True, min(deadline, time.monotonic() + 0.01))
            except OSError:  # EPIPE: the program closed its end of the call pipe
                self.fail(_Fault("error", "the program closed its call pipe"))
            if self.fault is not None:
                raise self.fault
            if self.exit is not None:
                raise self.died()

    def reply(self, deadline):
        self.wait(lambda: bool(self.replies), deadline)
        if self.replies:
            return self.replies.pop(0)
        if self.fault is not None:
            raise self.fault
        raise self.died()

    def died(self):
        """The fault for a worker that ended on its own in the middle of a test."""
        sig, code = self.exit
        if sig == signal.SIGXCPU:
            fault = _Fault("timeout", "exceeded the CPU time limit")
        elif sig == signal.SIGSEGV:
            fault = _Fault("error", "segmentation fault")
        elif sig:
            fault = _Fault("error", f"killed by signal {sig} ({_signal_name(sig)})")
        else:
            fault = _Fault("error", f"the program exited (status {code}) before the test finished")
        self.fault = fault
        return fault

    def close(self):
        try:
            if self.exit is None:
                self.fail(self.fault or _Fault("error", "closed"))
        finally:
            for fd in self.fds() + ([self.req_w] if self.req_w is not None else []):
                try:
                    self.judge.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
                os.close(fd)


class _Remote:
    """Stands for the program's entry point in the judge's namespace: calls go to the worker."""

    def __init__(self, judge, name):
        self.judge, self.name = judge, name

    def __call__(self, *args, **kwargs):
        worker = self.judge.function_worker()
        reply = worker.call(args, kwargs, self.judge.deadline)
        if "value" in reply:
            try:
                return decode(reply["value"])
            except (ValueError, TypeError, RecursionError) as exc:
                raise _Fault("error", f"the program's reply could not be read: {exc}") from None
        raise _program_exception(_raised(reply))

    def __repr__(self):
        return f"<function {self.name}>"


class Judge:
    def __init__(self, report, sock, config):
        self.sock, self._report = sock, report
        self.output_limit = config["output_limit"]
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, None)
        self.workers = {}
        self.function = None
        self.load_fault = None
        self.time_limit, self.deadline = 0.0, math.inf

    # -- launcher channel: a failure here is the sandbox's, never the program's

    def machinery_fault(self, what):
        """Past the request's deadline, the launcher giving up is its backstop: a timeout."""
        if time.monotonic() >= self.deadline:
            return _Fault("timeout", f"exceeded the {self.time_limit:g}s time limit")
        return _sandbox_fault(what)

    def send(self, cmd):
        try:
            self.sock.send(json.dumps(cmd).encode())
        except OSError as exc:
            raise self.machinery_fault(f"the launcher is gone ({exc.strerror})") from None

    def receive(self, max_fds=0):
        """One message from the launcher (trusted: it never runs untrusted code)."""
        try:
            msg, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, max_fds)
        except OSError as exc:
            raise self.machinery_fault(f"the launcher is gone ({exc.strerror})") from None
        if not msg:
            raise self.machinery_fault("the launcher died")
        return json.loads(msg), fds

    def command(self, cmd):
        self.send(cmd)
        while True:  # exit notices of earlier workers may arrive before the answer
            reply, fds = self.receive(8)
            if "exited" in reply:
                self._exited(reply)
                continue
            return reply, fds

    def _exited(self, notice):
        worker = self.workers.pop(notice["exited"], None)
        if worker is not None:
            worker.exit = (notice["signal"], notice["code"])

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._exited(self.receive()[0])
            else:
                key.data.on_readable(key.fd)

    def start(self, mode, index=None, stdin=""):
        """A fresh worker, sent the program (the launcher never holds it) and its stdio input."""
        worker = _Worker(self, mode, index)
        self.workers[worker.id] = worker
        for fd in worker.fds():
            self.sel.register(fd, selectors.EVENT_READ, worker)
        load = json.dumps(dict(self.load, stdin=stdin)).encode()
        try:
            worker.send_request(struct.pack("<I", len(load)) + load, self.deadline)
        except BaseException:
            worker.close()
            raise
        if mode != "functions":
            os.close(worker.req_w)
            worker.req_w = None
        return worker

    # -- tests

    def function_worker(self):
        """The loaded program; a fresh one when the last test killed it (time allowing)."""
        if self.function is not None and (self.function.fault is not None or self.function.exit is not None):
            self.function.close()
            self.function = None
        if self.load_fault is not None:  # the program is broken, not the worker: no reload
            raise self.load_fault
        if self.function is None:
            if time.monotonic() >= self.deadline:
                raise _Fault("timeout", f"exceeded the {self.time_limit:g}s time limit")
            self.function = self.start("functions")
            loaded = self.function.reply(self.deadline)
            if loaded.get("loaded") is not True:
                raised = _raised(loaded)
                if raised["type"] == "MemoryError":
                    self.load_fault = _Fault("memory", "MemoryError while loading the program")
                else:
                    self.load_fault = _Fault("error", "program failed to load: " + raised["traceback"])
            elif loaded.get("has_entry") is not True:
                self.load_fault = _Fault("error", f"the program does not define a function `{self.entry_point}`")
            if self.load_fault is not None:
                raise self.load_fault
        return self.function

    def run(self, part_b):
        """Report one verdict per test, in order. Nothing a worker does makes this raise: a fault
        of the sandbox itself becomes that test's sandbox_error."""
        self.time_limit = part_b["time_limit_s"]
        self.entry_point = part_b["entry_point"]
        # What each worker is sent; only the judge and the workers ever hold the program.
        self.load = {key: part_b[key] for key in ("program", "setup_code", "entry_point", "time_limit_s", "memory_mb")}
        self.deadline = time.monotonic() + self.time_limit
        namespace, setup_error = {"__name__": "__judge__"}, None
        try:
            exec(compile(part_b["setup_code"], "<setup>", "exec"), namespace)
        except BaseException as exc:
            setup_error = "test setup failed: " + _short(traceback.format_exception_only(type(exc), exc)[-1].strip())
        if self.entry_point:
            namespace[self.entry_point] = _Remote(self, self.entry_point)
        stdio_index = 0
        for test in part_b["tests"]:
            try:
                if test["kind"] == "stdio":
                    stdio_index += 1
                    verdict = self.stdio_test(stdio_index - 1, test["input"], test["expected"])
                elif setup_error:
                    verdict = ("error", setup_error, "")
                else:
                    verdict = self.function_test(namespace, test)
            except _Fault as fault:
                verdict = (fault.verdict, fault.message, "")
            except MemoryError:
                verdict = ("sandbox_error", "error: sandbox: the judge ran out of memory", "")
            except BaseException as exc:
                verdict = ("sandbox_error", f"error: sandbox: {exc!r}", "")
            self.report(*verdict)
        if self.function is not None:
            self.function.close()

    def close(self):
        self.sel.close()

    def report(self, verdict, message="", got=""):
        self._report({"verdict": verdict, "message": _short(message), "got": _short(got)})

    def function_test(self, namespace, test):
        try:
            if test["kind"] == "call":
                got = eval(compile(test["input"], "<test>", "eval"), namespace)
                want = eval(compile(test["expected"], "<test>", "eval"), namespace)
                ok = got == want
                if type(ok) is not bool:
                    ok = False
                return ("pass", "", repr(got)) if ok else ("fail", f"expected {test['expected']}", repr(got))
            exec(compile(test["input"], "<test>", "exec"), namespace)
            return ("pass", "", "")
        except _Fault as fault:
            return (fault.verdict, fault.message, "")
        except AssertionError as exc:
            return ("fail", str(exc) or "assertion failed", "")
        except MemoryError:
            return ("sandbox_error", "error: sandbox: the judge ran out of memory", "")
        except BaseException as exc:
            tail = getattr(exc, "sandbox_traceback", None)
            if tail is None:
                tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ("error", tail, "")

    def stdio_test(self, index, stdin, expected):
        if time.monotonic() >= self.deadline:
            return ("timeout", f"exceeded the {self.time_limit:g}s time limit", "")
        worker = self.start("stdio", index, stdin)
        try:
            worker.wait(lambda: False, self.deadline)
            if worker.fault is not None:
                return (worker.fault.verdict, worker.fault.message, "")
            got = _normalise(worker.stdout.decode(errors="replace"))
            sig, code = worker.exit
            if sig:
                fault = worker.died()
                return (fault.verdict, fault.message, got)
            if code == EXIT_MEMORY:
                return ("memory", "MemoryError", got)
            if code:
                tail = worker.stderr.decode(errors="replace").strip()[-(MAX_TEXT - 40):]
                return ("error", f"exited with status {code}" + (": " + tail if tail else ""), got)
            return ("pass", "", got) if got == _normalise(expected) else ("fail", "wrong output", got)
        finally:
            worker.close()


def _normalise(text):
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


# ----------------------------------------------------------------------------- entry points

def start_launcher(config, setup=None):
    """Fork the launcher; `setup()` runs first in the child (namespace set-up).

    Returns the judge's end of the launcher channel and the launcher's pid. Call this before
    the request body (program and tests) is read: the launcher and every worker are copies of
    this process, and the workers get the program from the judge.
    config: worker_uid / judge_uid (None: keep the current uid), limits (rlimit name -> value),
    env, sys_path, workdir, output_limit, die_with_parent.
    """
    judge_sock, launcher_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            judge_sock.close()
            set_name("sandbox-launch")
            if setup is not None:
                setup()
            prctl(PR_SET_DUMPABLE, 0)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _launcher(launcher_sock, config)
            _finish(config)
        finally:
            os._exit(1)
    launcher_sock.close()
    return judge_sock, pid


def judge(sock, request_fd, config, report):
    """Read the request body (program and tests) from request_fd, run the tests,
    `report(verdict_dict)` each in order.

    Drops to the judge's uid first. Closing the channel at the end makes the launcher kill
    what is left of the workers and exit.
    """
    set_name("sandbox-judge")
    become(config["judge_uid"], die_with_parent=config["die_with_parent"])
    limit_judge_memory(config)
    try:
        Judge(report, sock, config).run(read_frame(request_fd))
    finally:
        sock.close()


def main():
    """Stand-alone judge for the levels that start one interpreter per request."""
    config = json.loads(sys.argv[1])
    if config["workdir"] is None:
        import tempfile
        config["workdir"] = tempfile.mkdtemp(prefix="selfcorrect-task-")
        config["remove_workdir"] = True
        if config["worker_uid"] is not None:
            os.chown(config["workdir"], config["worker_uid"], config["worker_uid"])
    if read_frame(0) is None:  # the header (the request's limits): the workers read theirs from the judge
        return
    sock, launcher = start_launcher(config, setup=detach_stdio)
    judge(sock, 0, config, lambda verdict: write_all(1, (json.dumps(verdict) + "\n").encode()))
    os.waitpid(launcher, 0)


def detach_stdio():
    """Point stdin and stdout at /dev/null: the request and verdict streams are the judge's alone."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def kill_uid(uid):
    """SIGKILL every process of `uid`, daemons that left our process group included.

    A child that becomes `uid` and calls kill(-1): the kernel then signals every process that
    uid may signal, which is exactly that uid's processes.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # Linux spares the caller itself
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
