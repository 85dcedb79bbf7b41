"""The workers' seccomp filter: system calls no test program needs, denied. Standard library only.

The fork server builds the filter once at start with libseccomp (through ctypes: Debian's
libseccomp2, which apt itself depends on, so every Debian machine has it) and keeps the compiled
BPF; each worker then installs it with one prctl, as its last step before running the program
(after chroot, the uid change and PR_SET_NO_NEW_PRIVS, which lets an unprivileged process
install a filter). A filter is inherited by every child and can never be removed.

The filter allows by default and denies a list, each with an errno the program can handle
(Python raises OSError) rather than a kill, so a program that merely probes is judged on its
answers. Calls from another architecture's ABI (int 0x80, x32) kill the process: libseccomp
checks the architecture first. Every entry says what it stops.
"""
import ctypes
import ctypes.util
import errno
import os

_DENIED = {
    # Reading or changing another process: memory, registers, fds. Same-uid processes of a task
    # are already non-dumpable; these make it a rule rather than a setting.
    "ptrace": "attach to another process", "process_vm_readv": "read another process's memory",
    "process_vm_writev": "write another process's memory", "kcmp": "compare kernel objects of other processes",
    "pidfd_getfd": "steal another process's file descriptor",
    # Kernel keyrings are per uid and outlive the task that filled them.
    "keyctl": "keyrings persist across tasks", "add_key": "keyrings persist across tasks",
    "request_key": "keyrings persist across tasks",
    # Large, often-exploited kernel attack surface that no test needs.
    "perf_event_open": "performance counters (side channels, kernel bugs)", "bpf": "eBPF programs",
    "userfaultfd": "page-fault handling in user space (widens kernel races)",
    "io_uring_setup": "io_uring (bypasses this filter for the calls it performs)",
    "io_uring_enter": "io_uring", "io_uring_register": "io_uring",
    # File-system and namespace changes: the root the task sees is fixed by the server.
    "mount": "change the mount table", "umount2": "change the mount table", "pivot_root": "change the root",
    "chroot": "change the root", "move_mount": "change the mount table", "open_tree": "clone mounts",
    "fsopen": "new mounts", "fsconfig": "new mounts", "fsmount": "new mounts", "fspick": "reconfigure mounts",
    "mount_setattr": "change mount flags", "unshare": "new namespaces", "setns": "enter other namespaces",
    # Whole-machine operations (need privileges the worker lacks; denied so a kernel bug in a
    # privilege check is not enough).
    "kexec_load": "replace the kernel", "kexec_file_load": "replace the kernel", "reboot": "reboot",
    "init_module": "load kernel code", "finit_module": "load kernel code", "delete_module": "unload kernel code",
    "swapon": "swap", "swapoff": "swap", "acct": "process accounting", "quotactl": "disk quotas",
    "iopl": "port I/O", "ioperm": "port I/O", "syslog": "the kernel log", "vhangup": "terminals",
    "open_by_handle_at": "open files by handle, bypassing the root", "name_to_handle_at": "file handles",
    # A new program image would be dumpable again (execve resets it); the worker never needs one.
    "execve": "a fresh image is dumpable again", "execveat": "a fresh image is dumpable again",
    # The read-only root shares inodes with the host: locks and change notifications on them
    # would be seen by (and would see) the host and other tasks.
    "flock": "locks on inodes shared with the host", "inotify_init": "watches on inodes shared with the host",
    "inotify_init1": "watches on inodes shared with the host", "fanotify_init": "file-system watches",
}

# clone() flags that create namespaces (clone3 is refused as unknown, below: its flags are in
# memory a filter cannot read, and glibc then falls back to clone).
_CLONE_NEW = {"CLONE_NEWTIME": 0x80, "CLONE_NEWNS": 0x20000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
              "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
              "CLONE_NEWNET": 0x40000000}
# prctl options: PR_SET_DUMPABLE with a non-zero value (dumping back on), PR_SET_MM (rewrite the
# process's memory map descriptors), PR_SET_PTRACER (let another process ptrace this one).
_PRCTL_DUMPABLE, _PRCTL_DENIED = 4, (35, 0x59616D61)
# fcntl commands: POSIX and open-file-description locks, leases, directory notifications (all
# on inodes that may be the host's).
_FCNTL_DENIED = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)
# Socket families a test may use: AF_UNIX (socketpair, asyncio's self-pipe), AF_INET, AF_INET6
# (loopback only, in the task's network namespace), and AF_NETLINK for NETLINK_ROUTE only (glibc
# lists interfaces and addresses through it: if_nameindex, getaddrinfo's AI_ADDRCONFIG; it sees
# the task's own namespace). Others (packet, alg, vsock, other netlink protocols, ...) are
# kernel surface and unaccounted buffers.
_SOCKET_FAMILIES = (1, 2, 10, 16)
_AF_NETLINK, _NETLINK_ROUTE = 16, 0
# setsockopt(SOL_SOCKET, SO_SNDBUF / SO_RCVBUF / *FORCE): keeps every socket at the default
# buffer size, so the kernel memory a task can pin in socket buffers is bounded by its fd limits
# (TCP is also charged to the slot's memory cgroup; UDP and unix sockets are not on cgroup v1).
_SOL_SOCKET, _SOCKOPT_DENIED = 1, (7, 8, 32, 33)

_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_CMP_NE, _CMP_EQ, _CMP_GE, _CMP_MASKED_EQ = 1, 4, 5, 7
_INT = 0xFFFFFFFF   # int arguments: the kernel reads the low 32 bits, so compare only those
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _Arg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _errno(number):
    return 0x00050000 | number


def build():
    """The filter as BPF bytes (struct sock_filter[]); raises OSError when libseccomp is missing."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise OSError(errno.ENOENT, f"libseccomp is not installed (Debian: libseccomp2): {exc}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_Arg)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")

    def rule(action, syscall, *args):
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:
            return  # not a system call on this architecture
        array = (_Arg * max(len(args), 1))(*(_Arg(*a) for a in args))
        result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
        if result != 0:
            raise OSError(-result, f"seccomp rule for {syscall}: {os.strerror(-result)}")

    try:
        for syscall in _DENIED:
            rule(_errno(errno.EPERM), syscall)
        rule(_errno(errno.ENOSYS), "clone3")
        for flag in _CLONE_NEW.values():
            rule(_errno(errno.EPERM), "clone", (0, _CMP_MASKED_EQ, flag, flag))
        rule(_errno(errno.EPERM), "prctl", (0, _CMP_MASKED_EQ, _INT, _PRCTL_DUMPABLE), (1, _CMP_NE, 0, 0))
        for option in _PRCTL_DENIED:
            rule(_errno(errno.EPERM), "prctl", (0, _CMP_MASKED_EQ, _INT, option))
        for command in _FCNTL_DENIED:
            rule(_errno(errno.ENOLCK), "fcntl", (1, _CMP_MASKED_EQ, _INT, command))
        # Any family outside the allowed ones, with the upper half of the register included (a
        # family with high bits set is >= 11 and denied, whatever its low bits).
        allowed = set(_SOCKET_FAMILIES)
        for family in range(max(allowed)):
            if family not in allowed:
                rule(_errno(errno.EAFNOSUPPORT), "socket", (0, _CMP_EQ, family, 0))
        rule(_errno(errno.EAFNOSUPPORT), "socket", (0, _CMP_GE, max(allowed) + 1, 0))
        rule(_errno(errno.EPROTONOSUPPORT), "socket", (0, _CMP_EQ, _AF_NETLINK, 0), (2, _CMP_NE, _NETLINK_ROUTE, 0))
        for option in _SOCKOPT_DENIED:
            rule(_errno(errno.EPERM), "setsockopt", (1, _CMP_MASKED_EQ, _INT, _SOL_SOCKET),
                 (2, _CMP_MASKED_EQ, _INT, option))
        read_end, write_end = os.pipe()
        try:
            result = lib.seccomp_export_bpf(ctx, write_end)
            if result != 0:
                raise OSError(-result, f"seccomp_export_bpf: {os.strerror(-result)}")
            os.close(write_end)
            write_end = None
            chunks = []
            while chunk := os.read(read_end, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(read_end)
            if write_end is not None:
                os.close(write_end)
        return b"".join(chunks)
    finally:
        lib.seccomp_release(ctx)


class Filter:
    """A compiled filter held in memory, ready for `install` in a forked child (no allocation,
    no library call there: one prctl)."""

    def __init__(self, bpf):
        class _Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        self._bpf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _Prog(len(bpf) // 8, ctypes.cast(self._bpf, ctypes.c_char_p))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self):
        """Confine the calling thread (a worker is single-threaded here) and its future children."""
        if self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"installing the seccomp filter: {os.strerror(number)}")


def denied():
    """What the filter denies and why (for executor.info and the docs)."""
    return dict(_DENIED, clone3="refused as unknown (glibc falls back to clone, whose flags are checked)",
                **{f"clone({flag})": "new namespaces" for flag in _CLONE_NEW},
                **{"prctl(PR_SET_DUMPABLE, !=0)": "dumping back on", "prctl(PR_SET_MM)": "rewrite the memory map",
                   "prctl(PR_SET_PTRACER)": "let another process ptrace this one",
                   "fcntl(locks, leases, F_NOTIFY)": "on inodes shared with the host",
                   "socket(other than AF_UNIX, AF_INET, AF_INET6, NETLINK_ROUTE)": "kernel surface, unaccounted buffers",
                   "setsockopt(SO_SNDBUF, SO_RCVBUF, *FORCE)": "buffers beyond the default size"})
