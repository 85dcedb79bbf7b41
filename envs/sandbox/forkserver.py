"""The pre-forked execution server of the "namespaces" level. Standard library only.

Started once per slot as `python -I -S forkserver.py` (root required). Its configuration is the
first frame on stdin (not argv: every process of the slot shows its argv in /proc/self/cmdline);
part A of each request (program, setup code, stdio inputs) follows on stdin, part B (the tests)
arrives on the fd config["tests_fd"]; the verdicts leave on stdout. Five roles:

  zygote   builds a read-only root once, in a mount namespace of its own, builds the workers'
           seccomp filter, imports the preloaded modules and starts the judge. Then, for each
           request, it forks a task server and waits for it. It never reads a request: every
           task server starts from a state that never held another request's data.
  task     one per request, a fresh fork of the zygote: reads part A, enters fresh mount, pid,
  server   net, ipc and uts namespaces, mounts the task's private tmpfs, spawns the task's init
           and is the task's launcher (envs/harness.py): it forks workers on the judge's command
           and reports how each ended. When the judge is done it kills the init, reaps every
           worker and exits. It never reads a test: no worker, a fork of it, ever held an
           expected value.
  judge    one per slot, forked at start: chrooted into the root, in network/ipc/uts namespaces
           of its own, unprivileged, under an address-space limit. Per request it gets the
           task's channel, reads part B, runs the tests against the workers, and writes the
           verdicts to stdout once the task server has exited, that is once no process of the
           task is left.
  init     pid 1 of the task's pid namespace: an idle `cat` reading a pipe the task server
           holds, with SIGCHLD ignored so that the kernel reaps the orphans it inherits. Killing
           it makes the kernel kill every process left in the namespace, daemons included.
  workers  the untrusted processes (envs/harness.py), each joining the slot's cgroups and a
           cgroup namespace of its own and chrooting before it drops to the task's uid; the
           task's first mounts its /proc; the seccomp filter is their last step.

The judge dies with the zygote (PR_SET_PDEATHSIG), the zygote with its client (end of stdin),
the init with the task server. Per request this costs one fork of the zygote, one fork per
program load (the worker), one spawn of a small binary (the init) and no interpreter start
(see docs/sandbox.md).
"""
import ctypes
import fcntl
import gc
import itertools
import os
import signal
import socket
import struct
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (envs/harness.py: the same judge every level runs)
import seccomp  # noqa: E402
from cgroups import SlotCgroups  # noqa: E402

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
TASK_NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
HOME_NAMESPACES = ((CLONE_NEWNS, "mnt"), (CLONE_NEWPID, "pid_for_children"), (CLONE_NEWNET, "net"),
                   (CLONE_NEWIPC, "ipc"), (CLONE_NEWUTS, "uts"))
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_NOATIME = 1, 2, 4, 8, 32, 1024
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
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
    """The read-only root every task chroots into: only the paths Python and the allowed packages need.

    The binds are the host's inodes: noatime, so that reading a file inside leaves no trace the
    host (or the next task) can see; locks and watches on them are denied by the seccomp filter."""
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
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOATIME | extra)
    for target, link in config["symlinks"]:
        os.symlink(target, root + link)
    for name in ("proc", "tmp"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", IFF_UP))


def hide_command_line(name):
    """Blank the argv area the kernel shows as /proc/PID/cmdline, in this process and so in
    every fork of it: the workers would otherwise read the host paths of the server."""
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])   # arg_start, arg_end (fields 48, 49)
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, name.encode()[: end - start - 1], min(len(name), end - start - 1))


class Slot:
    """The zygote's state: the root, the cgroups, fds on its own namespaces, the workers' seccomp
    filter, the limits in force."""

    def __init__(self, config):
        self.config, self.root = config, config["root"]
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount reaches the host
        build_root(config)
        self.cgroups = SlotCgroups(config["cgroups"])
        self.cgroups.open_procs()
        self.filter = seccomp.Filter(seccomp.build())
        self.home = [(flag, os.open(f"/proc/self/ns/{name}", os.O_RDONLY)) for flag, name in HOME_NAMESPACES]
        self.limits = None
        self.own_cgroup_namespace = not self._share_cgroup_namespace()

    def _share_cgroup_namespace(self):
        """Enter, once, a cgroup namespace rooted at the slot's groups, which every worker then
        inherits: a worker that joins the groups sees "/" in /proc/self/cgroup without an
        unshare of its own (each costs ~0.3 ms of CPU). Made by a helper child that joins the
        groups and unshares; checked by a second child that must join them from here. False
        (each worker unshares its own) where that does not work, e.g. cgroup v2, which refuses
        a move from outside the writer's namespace root."""
        if not self.cgroups.procs_fds:
            return False
        mine = os.open("/proc/self/ns/cgroup", os.O_RDONLY)
        try:
            ready_r, ready_w = os.pipe()
            helper = os.fork()
            if helper == 0:
                try:
                    os.close(ready_r)
                    self.cgroups.enter()
                    unshare(CLONE_NEWCGROUP)
                    os.write(ready_w, b"1")
                    time.sleep(30)  # until killed: its namespace stays open for the zygote
                finally:
                    os._exit(1)
            os.close(ready_w)
            try:
                if os.read(ready_r, 1) != b"1":
                    return False
                shared = os.open(f"/proc/{helper}/ns/cgroup", os.O_RDONLY)
            finally:
                os.close(ready_r)
                os.kill(helper, signal.SIGKILL)
                os.waitpid(helper, 0)
            try:
                _check(harness.libc.setns(shared, CLONE_NEWCGROUP), "setns cgroup")
            finally:
                os.close(shared)
            probe = os.fork()
            if probe == 0:
                try:
                    self.cgroups.enter()
                    with open("/proc/self/cgroup") as f:
                        os._exit(0 if all(line.rstrip("\n").endswith(":/") for line in f) else 1)
                finally:
                    os._exit(1)
            _, status = os.waitpid(probe, 0)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                return True
            _check(harness.libc.setns(mine, CLONE_NEWCGROUP), "setns cgroup")
            return False
        except OSError:
            harness.libc.setns(mine, CLONE_NEWCGROUP)
            return False
        finally:
            os.close(mine)

    def serve_one(self, control, sequence):
        """One request: False at the end of the stream. Reads only the request's header (its
        time and memory limits); the program and the tests go to the judge, and from the judge
        the program goes to each worker."""
        header = harness.read_frame(0)
        if header is None:
            return False
        channel, judge_channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socket.send_fds(control, [b"task"], [judge_channel.fileno()])
        judge_channel.close()
        try:
            # Each task the zygote runs takes the next uid of the slot's block.
            self.run_task(header, channel, self.config["uid_first"] + sequence)
        finally:
            channel.close()  # the judge replies now: no process of the task is left
            self.leave_task()
        return True

    def run_task(self, header, channel, worker_uid):
        """One request in fresh namespaces: set them up, launch workers for the judge, tear down."""
        config = self.config
        deadline = time.monotonic() + header["time_limit_s"] + config["grace_s"]  # backstop: the judge times tests itself
        unshare(TASK_NAMESPACES)
        hold_r, hold_w = os.pipe()
        init, workers = None, []
        try:
            init = self._spawn_init(hold_r)
            os.close(hold_r)
            hold_r = None
            socket.sethostname("sandbox")
            _loopback_up()
            mount("tmpfs", self.root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={config['tmpfs_mb']}m,nr_inodes=4096,mode=0700,uid={worker_uid},gid={worker_uid}")
            limits = ((header["memory_mb"] + config["tmpfs_mb"] + config["overhead_mb"]) << 20, config["max_processes"] + 4)
            if limits != self.limits:  # the slot's group keeps them: tasks run one at a time
                self.limits = None
                self.cgroups.set_limits(*limits)
                self.limits = limits
            task_config = dict(config["harness"], worker_uid=worker_uid)
            workers = harness._launcher(channel, task_config, enter=self._enter_worker,
                                        confine=self.filter.install, deadline=deadline)
        finally:
            if hold_r is not None:
                os.close(hold_r)
            os.close(hold_w)
            if init:
                os.kill(init, signal.SIGKILL)
        # The init exits only once every other process of the namespace is reaped: workers first.
        for pid in workers:
            os.waitpid(pid, 0)
        os.waitpid(init, 0)

    def leave_task(self):
        """Back into the zygote's own namespaces: the task's die with their last process and
        mount (its tmpfs, its /proc are gone with them)."""
        for flag, fd in self.home:
            _check(harness.libc.setns(fd, flag), "setns")

    def _spawn_init(self, hold_r):
        """pid 1 of the new pid namespace: `cat` on a pipe only the zygote writes to, so it
        exits when the zygote does. Spawned (vfork + exec), not forked: no copy of the zygote.
        SIGCHLD ignored survives exec, and a parent that ignores it has its children reaped by
        the kernel: the orphans the init inherits never pile up as zombies."""
        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            return os.posix_spawn(self.config["init_program"], ["sandbox-init"], {},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, hold_r, 0),
                                                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
        finally:
            signal.signal(signal.SIGCHLD, previous)

    def _enter_worker(self):
        """In each new worker, still root: join the slot's cgroups and make them the root of a
        cgroup namespace of its own (/proc/self/cgroup then shows "/", not the host's paths); the
        task's first worker mounts its /proc (a process inside the new pid namespace must); chroot."""
        self.cgroups.enter()
        if self.own_cgroup_namespace:
            unshare(CLONE_NEWCGROUP)
        proc = self.root + "/proc"
        if not os.path.ismount(proc):
            try:  # hide other uids' processes and everything but the pid directories
                mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid")
            except OSError:
                mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        os.chroot(self.root)


def judge_loop(config, slot, control):
    """The slot's judge: one request after another, for as long as the zygote runs."""
    harness.set_name("sandbox-judge")
    cgroups = slot.cgroups
    try:
        for fd in cgroups.procs_fds + [fd for _, fd in slot.home]:
            os.close(fd)
        oom_fd = cgroups.open_oom_counter()
        unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)  # test code reaches no network either
        os.chroot(config["root"])
        os.chdir("/")
        harness.become(config["judge_uid"], die_with_parent=True)
        harness.limit_judge_memory(config["harness"])
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
        except BaseException as exc:  # the judge's own failure (each test's are verdicts already)
            failure = {"verdict": "sandbox_error", "message": harness._short(f"error: sandbox: the judge failed: {exc!r}"),
                       "got": ""}
            verdicts += [failure] * (len(part_b["tests"]) - len(verdicts))
        finally:
            judge.close()
        # Done: the task server now kills and reaps what is left of the task, then exits, which
        # closes the channel. Bounded: a task server that never exits costs a slot restart, not a hang.
        try:
            channel.settimeout(config["grace_s"] + 5.0)
            channel.shutdown(socket.SHUT_WR)
            while channel.recv(1 << 16):
                pass
        except OSError:
            pass
        channel.close()
        harness.write_frame(1, {"verdicts": verdicts, "oom_kills": cgroups.read_oom_counter(oom_fd) - oom_before})


def main():
    config = harness.read_frame(0)
    harness.set_name("sandbox-zygote")
    hide_command_line("sandbox")
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
    for sequence in itertools.count():
        if not slot.serve_one(control, sequence):
            return  # the client closed the stream; the judge sees the control socket close and stops


if __name__ == "__main__":
    main()
