"""The pre-forked execution server of the "namespaces" level. Standard library only.

Started once per slot as `python -I -S forkserver.py CONFIG_JSON` (root required). Part A of each
request (program, setup code, stdio inputs) arrives on stdin, part B (the tests) on the fd
config["tests_fd"]; the verdicts leave on stdout. Four roles:

  server   builds a read-only root once, in a mount namespace of its own, and starts the judge.
           Per request it reads part A, enters fresh mount/pid/net/ipc/uts namespaces itself,
           mounts the task's private tmpfs, forks the task's init, and is the task's launcher
           (envs/harness.py): it forks workers on the judge's command and reports how each
           ended. When the judge is done it kills the init, reaps every worker and returns to its
           own namespaces (setns). It never reads a test: no worker, a fork of it, ever held an
           expected value.
  judge    one per slot, forked at start: chrooted into the root, in network/ipc/uts namespaces
           of its own, unprivileged. Per request it gets the task's channel to the server, reads
           part B, runs the tests against the workers, and writes the verdicts to stdout once the
           server has closed the channel, that is once no process of the task is left.
  init     pid 1 of the task's pid namespace: an idle `cat` reading a pipe the server holds.
           Killing it makes the kernel kill every process left in the namespace, daemons
           included; it ends by itself when the server dies (end of its pipe).
  workers  the untrusted processes (envs/harness.py), each joining the slot's cgroups and
           chrooting before it drops to the task's uid; the task's first mounts its /proc.

The judge and the server die with the server's client (PR_SET_PDEATHSIG, end of stdin), the init
with the server. Per request this costs one fork per program load (the worker), one spawn of a
small binary (the init) and no interpreter start: the judge lives as long as the slot
(see docs/sandbox.md).
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
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (envs/harness.py: the same judge every level runs)
from cgroups import SlotCgroups  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
TASK_NAMESPACES = ((CLONE_NEWNS, "mnt"), (CLONE_NEWPID, "pid_for_children"), (CLONE_NEWNET, "net"),
                   (CLONE_NEWIPC, "ipc"), (CLONE_NEWUTS, "uts"))
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1


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


class Slot:
    """The server's state: the root, the cgroups, fds on its own namespaces, the limits in force."""

    def __init__(self, config):
        self.config, self.root = config, config["root"]
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount reaches the host
        build_root(config)
        self.cgroups = SlotCgroups(config["cgroups"])
        self.cgroups.open_procs()
        self.home = [(flag, os.open(f"/proc/self/ns/{name}", os.O_RDONLY)) for flag, name in TASK_NAMESPACES]
        self.limits = None

    def run_task(self, part_a, channel):
        """One request in fresh namespaces: set them up, launch workers for the judge, tear down."""
        config = self.config
        deadline = time.monotonic() + part_a["time_limit_s"] + config["grace_s"]  # backstop: the judge times tests itself
        unshare(sum(flag for flag, _ in TASK_NAMESPACES))
        hold_r, hold_w = os.pipe()
        init, workers = None, []
        try:
            # pid 1 of the new pid namespace: `cat` on a pipe only the server writes to, so it
            # exits when the server dies. Spawned (vfork + exec), not forked: no copy of the server.
            init = os.posix_spawn(config["init_program"], ["sandbox-init"], {},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, hold_r, 0),
                                                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
            os.close(hold_r)
            worker_uid = config["uid_base"] + 2 * init   # unique while the task's init lives
            socket.sethostname("sandbox")
            _loopback_up()
            mount("tmpfs", self.root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={config['tmpfs_mb']}m,nr_inodes=4096,mode=0700,uid={worker_uid},gid={worker_uid}")
            limits = ((part_a["memory_mb"] + config["tmpfs_mb"] + config["overhead_mb"]) << 20, config["max_processes"] + 4)
            if limits != self.limits:
                self.cgroups.set_limits(*limits)
                self.limits = limits
            task_config = dict(config["harness"], worker_uid=worker_uid)
            workers = harness._launcher(channel, part_a, task_config, enter=self._enter_worker, deadline=deadline)
        finally:
            os.close(hold_w)
            if init:
                os.kill(init, signal.SIGKILL)
        # The init exits only once every other process of the namespace is reaped: workers first.
        for pid in workers:
            os.waitpid(pid, 0)
        os.waitpid(init, 0)
        for flag, fd in self.home:
            _check(harness.libc.setns(fd, flag), "setns")

    def _enter_worker(self):
        """In each new worker, still root: join the slot's cgroups; the task's first worker mounts
        its /proc (a process inside the new pid namespace must); chroot."""
        self.cgroups.enter()
        proc = self.root + "/proc"
        if not os.path.ismount(proc):
            try:  # hide other uids' processes and everything but the pid directories
                mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid")
            except OSError:
                mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        os.chroot(self.root)


def judge_loop(config, slot, control):
    """The slot's judge: one request after another, for as long as the server runs."""
    harness.set_name("sandbox-judge")
    cgroups = slot.cgroups
    try:
        for fd in [fd for _, fd in slot.home] + cgroups.procs_fds:
            os.close(fd)
        oom_fd = cgroups.open_oom_counter()
        unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)  # test code reaches no network either
        os.chroot(config["root"])
        os.chdir("/")
        harness.become(config["judge_uid"], die_with_parent=True)
    except BaseException as exc:
        harness.write_frame(1, {"ready": False, "error": repr(exc)})
        return
    harness.write_frame(1, {"ready": True})
    tests_fd = config["tests_fd"]
    while True:
        msg, fds, _, _ = socket.recv_fds(control, 16, 1)
        if not msg:
            return
        channel = socket.socket(fileno=fds[0])
        part_b = harness.read_frame(tests_fd)
        if part_b is None:
            return
        oom_before = cgroups.read_oom_counter(oom_fd)
        verdicts = []
        judge = harness.Judge(verdicts.append, channel, config["harness"])
        try:
            judge.run(part_b)
        except RuntimeError:  # the server gave up on the task (its backstop deadline passed)
            pass
        finally:
            judge.close()
        # Done: the server now kills and reaps what is left of the task, then closes the channel.
        try:
            channel.shutdown(socket.SHUT_WR)
            while channel.recv(1 << 16):
                pass
        except OSError:
            pass
        channel.close()
        timed_out = len(verdicts) < len(part_b["tests"]) and time.monotonic() >= judge.deadline
        harness.write_frame(1, {"verdicts": verdicts, "oom_kills": cgroups.read_oom_counter(oom_fd) - oom_before,
                                "timed_out": timed_out})


def main():
    config = json.loads(sys.argv[1])
    harness.set_name("sandbox-server")
    try:
        slot = Slot(config)
    except BaseException as exc:
        harness.write_frame(1, {"ready": False, "error": repr(exc)})
        return
    # Modules test programs commonly import, loaded once here rather than once per task.
    for name in config["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass
    control, judge_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        try:
            harness.prctl(harness.PR_SET_PDEATHSIG, signal.SIGKILL)
            control.close()
            os.close(0)
            judge_loop(config, slot, judge_end)
        finally:
            os._exit(1)
    judge_end.close()
    os.close(config["tests_fd"])
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # only the judge writes to the client from here on
    os.close(devnull)
    # Everything alive now is shared with every task: keep the collector from walking it in
    # the children (each page it touches there is a copy-on-write fault, and forks dominate).
    gc.freeze()
    while True:
        part_a = harness.read_frame(0)
        if part_a is None:
            return  # the client closed the stream; the judge sees the channel close and stops
        channel, judge_channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socket.send_fds(control, [b"task"], [judge_channel.fileno()])
        judge_channel.close()
        try:
            slot.run_task(part_a, channel)
        finally:
            channel.close()  # the judge replies now: no process of the task is left


if __name__ == "__main__":
    main()
