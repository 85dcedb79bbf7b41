"""Helpers shared by the sandbox tests (imported by name: tests/ is not a package)."""
import os
from pathlib import Path

from envs.execution import ExecutionRequest
from envs.sandbox.local import UID_BASE
from envs.tasks import TestCase

REPO = Path(__file__).resolve().parents[2]


def run(executor, program, tests=None, entry_point="", time_limit_s=3.0, memory_mb=256, setup_code=""):
    """One request; `tests` defaults to a single stdio test with no input and no expected output."""
    tests = tuple(tests) if tests is not None else (TestCase("stdio", "", "__never__"),)
    return executor.run([ExecutionRequest(program, tests, entry_point, setup_code, time_limit_s, memory_mb)])[0]


def stdout_of(result):
    """What a stdio program printed (the judge reports it as `got`)."""
    return result.tests[0].got


def sandbox_processes():
    """Pids of live (not zombie) processes running as a sandbox uid that are ours: descendants of
    this test process, or orphans adopted by the host's init (what an escaped daemon would be).

    Other sandboxes on the machine (another run of these tests) are not counted."""
    parents, uids = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        parents[int(pid)] = int(fields["PPid"])
        if fields["State"].strip().startswith("Z"):
            # A zombie is dead: it runs nothing and holds nothing but its exit status. Workers of
            # a slot whose server was killed (a machinery failure) are orphaned to the host's
            # init; where that init does not reap (some containers), they stay as zombies, and
            # would be counted by every later test run. Their uids are never reused anyway.
            continue
        uids[int(pid)] = int(fields["Uid"].split()[0])

    def ours(pid):
        seen = set()
        while pid not in (0, 1) and pid not in seen:
            if pid == os.getpid():
                return True
            seen.add(pid)
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, uid in uids.items() if uid >= UID_BASE and (parents.get(pid) == 1 or ours(pid))]


def memory_scan() -> str:
    """Source of `leak(needle_hex)`: how many 1 MiB chunks of the program's own memory hold the
    bytes whose hex is `needle_hex`.

    Workers are non-dumpable (and may not turn that back on), so /proc/self/mem is closed to
    them; the scan copies each readable mapping into a memfd instead, through os.write, which
    reports a hole in the mapping as an error rather than a crash. The comparison is in hex:
    the program holds the needle's hex, never its bytes."""
    return (
        "import ctypes, os\n"
        "def leak(needle):\n"
        "    found, sink = 0, os.memfd_create('scan')\n"
        "    with open('/proc/self/maps') as maps:\n"
        "        regions = [line.split() for line in maps]\n"
        "    for fields in regions:\n"
        "        lo, hi = (int(x, 16) for x in fields[0].split('-'))\n"
        "        if 'r' not in fields[1] or 'vsyscall' in fields[-1] or fields[-1] == '[vvar]':\n"
        "            continue\n"
        "        for at in range(lo, hi, 1 << 20):\n"
        "            size = min(hi - at, (1 << 20) + 64)\n"
        "            try:\n"
        "                os.ftruncate(sink, 0)\n"
        "                os.pwrite(sink, (ctypes.c_char * size).from_address(at), 0)\n"
        "            except OSError:\n"
        "                break\n"
        "            chunk = os.pread(sink, size, 0)\n"
        "            found += 1 if needle in chunk.hex() else 0\n"
        "    return found\n"
    )


def leak_call(text: str) -> str:
    """The test input calling `leak` for `text` (the request carries only its hex)."""
    return f"leak({text.encode().hex()!r})"


# Ordinary programs that go into every attack's batch: the attack must not change their verdicts.
CONTROLS = (
    (ExecutionRequest("def add(a, b):\n    return a + b\n", (TestCase("call", "add(1, 2)", "3"),), "add"), ["pass"]),
    (ExecutionRequest("def add(a, b):\n    return a - b\n", (TestCase("call", "add(1, 2)", "3"),), "add"), ["fail"]),
    (ExecutionRequest("print(sum(map(int, input().split())))\n", (TestCase("stdio", "2 3", "5"), TestCase("stdio", "1 1", "3"))),
     ["pass", "fail"]),
)


def run_with_controls(executor, *attacks):
    """Run the attack requests in one batch with CONTROLS around them; check the controls'
    verdicts and return the attacks' results."""
    controls = [request for request, _ in CONTROLS]
    results = executor.run(controls + list(attacks) + controls)
    for (request, expected), result in zip(CONTROLS + CONTROLS, results[:len(controls)] + results[len(controls) + len(attacks):]):
        assert [t.verdict.value for t in result.tests] == expected, (request.program, result.tests)
    return results[len(controls):len(controls) + len(attacks)]
