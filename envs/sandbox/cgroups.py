"""A pids + memory cgroup per execution slot, on cgroup v1 or v2. Standard library only.

The fork server (which runs with site-packages disabled) imports this to move each task into
its slot's group, set the memory limit for the request and read the OOM-kill counter after.
A slot's group is reused by its successive tasks: they run one at a time and every process of
a task is dead before the next one starts.
"""
import os

PREFIX = "selfcorrect-"


def _mounts():
    """controller -> (mount point, version) for the memory and pids controllers."""
    found = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, options = line.split()[:4]
            if fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options.split(","):
                        found.setdefault(controller, (point, 1))
            elif fstype == "cgroup2":
                try:
                    with open(os.path.join(point, _own_path(0), "cgroup.controllers")) as c:
                        enabled = c.read().split()
                except OSError:
                    continue
                for controller in ("memory", "pids"):
                    if controller in enabled:
                        found.setdefault(controller, (point, 2))
    return found


def _own_path(hierarchy_or_controller):
    """This process's cgroup path in a v1 controller's hierarchy (or v2's, given 0)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy_or_controller == 0 and number == "0":
                return path.lstrip("/")
            if hierarchy_or_controller in controllers.split(","):
                return path.lstrip("/")
    return ""


class SlotCgroups:
    """The memory and pids groups of one slot; either may be missing where not permitted."""

    def __init__(self, dirs):
        self.dirs = dirs  # controller -> [directory, version]

    @classmethod
    def create(cls, name, socket_bytes):
        """Make the slot's groups under this process's own; those we may not create are left out.

        socket_bytes: the TCP buffer memory the slot's tasks may hold. cgroup v2 charges socket
        memory to memory.max; v1 leaves it uncharged unless memory.kmem.tcp.limit_in_bytes is
        set, which turns the accounting on for the group, with that limit."""
        dirs = {}
        for controller, (point, version) in _mounts().items():
            parent = os.path.join(point, _own_path(controller if version == 1 else 0))
            path = os.path.join(parent, PREFIX + name)
            try:
                if version == 2:
                    with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                        f.write("+" + controller)
                os.makedirs(path, exist_ok=True)
            except OSError:
                continue
            dirs[controller] = [path, version]
            if controller == "memory" and version == 1:
                _write(path, "memory.kmem.tcp.limit_in_bytes", str(socket_bytes))
        return cls(dirs)

    def open_procs(self):
        """Open the groups' cgroup.procs once (in the fork server): `enter` in a forked child is
        then one write per group, with no path lookup and no file object."""
        self.procs_fds = [os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY) for path, _ in self.dirs.values()]

    def enter(self):
        """Move the calling process (and so everything it forks later) into the groups."""
        for fd in self.procs_fds:
            os.write(fd, b"0")

    def set_limits(self, memory_bytes, max_tasks):
        if "memory" in self.dirs:
            path, version = self.dirs["memory"]
            _write(path, "memory.max" if version == 2 else "memory.limit_in_bytes", str(memory_bytes))
        if "pids" in self.dirs:
            _write(self.dirs["pids"][0], "pids.max", str(max_tasks))

    def open_oom_counter(self):
        """An fd on the group's OOM-kill counter (None without a memory group).

        Opened before the judge chroots: it reads the counter through it afterwards."""
        if "memory" not in self.dirs:
            return None
        path, version = self.dirs["memory"]
        return os.open(os.path.join(path, "memory.events" if version == 2 else "memory.oom_control"), os.O_RDONLY)

    @staticmethod
    def read_oom_counter(fd):
        """Processes the kernel OOM-killed in the group so far (0 without a memory group)."""
        if fd is None:
            return 0
        for line in os.pread(fd, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self):
        for path, _ in self.dirs.values():
            try:
                os.rmdir(path)
            except OSError:
                pass

    def describe(self):
        return {c: f"cgroup v{v}" for c, (_, v) in sorted(self.dirs.items())}


def _write(path, name, value):
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


def remove_stale():
    """Remove slot groups left by executors whose process died without cleaning up."""
    for controller, (point, version) in _mounts().items():
        parent = os.path.join(point, _own_path(controller if version == 1 else 0))
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        remove_orphaned_dirs(parent, names, PREFIX)


def remove_orphaned_dirs(parent, names, prefix):
    """Remove the empty directories `prefix<pid>-...` among `names` whose pid is gone."""
    for name in names:
        owner = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass
