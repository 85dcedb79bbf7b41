"""The pre-forked execution server of the "namespaces" level. Standard library only.

Started once per slot as `python -I -S forkserver.py CONFIG_JSON` (root required). It builds a
read-only root once, in a mount namespace of its own, then serves requests one at a time:

  server      forks a supervisor per request and waits for it; exits when its stdin closes.
  supervisor  reads the request's part A, enters fresh mount/net/ipc/uts namespaces (a pid
              namespace for its children), mounts the task's private tmpfs, forks the
              harness's launcher, then chroots, drops to the judge's uid and judges: it reads
              part B, runs the tests, reads the OOM counter and replies on stdout.
  launcher    pid 1 of the task's pid namespace: joins the slot's cgroups, mounts /proc,
              chroots and forks the workers (envs/harness.py). When it exits the kernel kills
              every process left in the namespace, daemons included.

Each process dies with its parent (PR_SET_PDEATHSIG), so the tree dies with the server, and the
server dies with its client (end of stdin). Python starts once per slot, not once per request:
a request costs a few forks and mounts (see docs/sandbox.md).
"""
import ctypes
import fcntl
import gc
import json
import os
import signal
import socket
import struct
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (envs/harness.py: the same judge every level runs)
from cgroups import SlotCgroups  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1
EXIT_EOF = 3          # supervisor exit status: the client closed the stream, the server stops



def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags):
    _check(harness.libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(harness.libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def build_root(config):
    """The read-only root every task chroots into: only the paths Python and the allowed packages need."""
    root = config["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for source in config["binds"]:
        target = root + source
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        mount(source, target, None, MS_BIND | MS_REC)
        extra = 0 if source.startswith("/dev/") else MS_NODEV  # device nodes must stay usable
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | extra)
    for target, link in config["symlinks"]:
        os.symlink(target, root + link)
    for name in ("proc", "tmp"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", IFF_UP))


def supervise(config, cgroups):
    """One request, start to reply. Runs in a fresh child of the server, and becomes the judge."""
    harness.prctl(harness.PR_SET_PDEATHSIG, signal.SIGKILL)
    part_a = harness.read_frame(0)
    if part_a is None:
        os._exit(EXIT_EOF)
    # Backstop: the judge enforces the time limit itself; should it ever hang, SIGALRM ends it
    # and the server answers "timeout".
    signal.setitimer(signal.ITIMER_REAL, part_a["time_limit_s"] + config["grace_s"])
    worker_uid = config["uid_base"] + 2 * os.getpid()   # unique while this supervisor lives
    task_config = dict(config["harness"], worker_uid=worker_uid, judge_uid=worker_uid + 1, die_with_parent=True)
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    socket.sethostname("sandbox")
    _loopback_up()
    root = config["root"]
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={config['tmpfs_mb']}m,nr_inodes=4096,mode=0700,uid={worker_uid},gid={worker_uid}")
    cgroups.set_limits((part_a["memory_mb"] + config["tmpfs_mb"] + config["overhead_mb"]) << 20,
                       config["max_processes"] + 4)
    oom_fd = cgroups.open_oom_counter()
    oom_before = cgroups.read_oom_counter(oom_fd)
    # The launcher becomes pid 1 of the new pid namespace: when it exits, the kernel kills
    # every process left in it, daemons included.
    sock, launcher = harness.start_launcher(part_a, task_config, setup=lambda: _enter_task(root, cgroups))
    del part_a
    os.chroot(root)  # the judge runs test code: it sees the task's root, not the host's
    os.chdir("/")
    verdicts = []
    harness.judge(sock, 0, task_config, verdicts.append)  # part B is read only now, after the fork
    os.waitpid(launcher, 0)
    harness.write_frame(1, {"verdicts": verdicts, "oom_kills": cgroups.read_oom_counter(oom_fd) - oom_before})
    os._exit(0)


def _enter_task(root, cgroups):
    """In the launcher, pid 1 of the task: join the slot's cgroups, mount /proc, chroot."""
    cgroups.enter()
    harness.detach_stdio()
    try:  # hide other uids' processes and everything but the pid directories
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid")
    except OSError:
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.chroot(root)
    os.chdir("/tmp")


def main():
    config = json.loads(sys.argv[1])
    harness.set_name("sandbox-server")
    try:
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount reaches the host
        build_root(config)
        cgroups = SlotCgroups(config["cgroups"])
    except BaseException as exc:
        harness.write_frame(1, {"ready": False, "error": repr(exc)})
        return
    # Modules test programs commonly import, loaded once here rather than once per task.
    for name in config["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass
    harness.write_frame(1, {"ready": True})
    # Everything alive now is shared with every task: keep the collector from walking it in
    # the children (each page it touches there is a copy-on-write fault, and forks dominate).
    gc.freeze()
    while True:
        # The supervisor replies through this pipe, and the server forwards the reply only once
        # the supervisor has exited: a reply means no process of the task is left.
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(reply_r)
                os.dup2(reply_w, 1)
                os.close(reply_w)
                supervise(config, cgroups)
            finally:
                os._exit(1)
        os.close(reply_w)
        reply = _read_all(reply_r)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_EOF:
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            harness.write_all(1, reply)
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
            harness.write_frame(1, {"verdicts": [], "oom_kills": 0, "timed_out": True})
        else:
            harness.write_frame(1, {"error": f"supervisor ended with status {status}"})


def _read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


if __name__ == "__main__":
    main()
