"""Verdicts: what each kind of test reports, the reward hacks that must not earn a pass, and
positive controls that must still pass inside the sandbox."""
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest
from pathlib import Path

from envs import harness
from envs.execution import ExecutionRequest, Verdict
from envs.sandbox import SandboxUnavailable, make_executor
from envs.sandbox.local import SandboxOptions
from envs.tasks import TestCase

from sandbox_helpers import leak_call, memory_scan, run

ADD = "def add(a, b):\n    return a + b\n"


def verdicts(result):
    return [t.verdict for t in result.tests]


# ---------------------------------------------------------------- plain verdicts

def test_call_assert_and_stdio_verdicts(namespaces):
    result = run(namespaces, ADD, [TestCase("call", "add(1, 2)", "3"), TestCase("call", "add(1, 1)", "3"),
                                   TestCase("assert", "assert add(2, 2) == 5, 'two and two'"),
                                   TestCase("call", "add(1, 'x')", "0")], "add")
    assert verdicts(result) == [Verdict.PASS, Verdict.FAIL, Verdict.FAIL, Verdict.ERROR]
    assert result.tests[1].got == "2" and result.tests[2].message == "two and two"
    assert "TypeError" in result.tests[3].message
    stdio = run(namespaces, "a, b = map(int, input().split())\nprint(a + b)\n",
                [TestCase("stdio", "2 3\n", "5"), TestCase("stdio", "2 2\n", "5")])
    assert verdicts(stdio) == [Verdict.PASS, Verdict.FAIL] and stdio.tests[1].got == "4"
    assert stdio.isolation == "namespaces"


def test_program_that_does_not_load(namespaces):
    result = run(namespaces, "def add(a, b)\n    return a + b\n", [TestCase("call", "add(1, 2)", "3")] * 2, "add")
    assert verdicts(result) == [Verdict.ERROR] * 2 and all("SyntaxError" in t.message for t in result.tests)
    missing = run(namespaces, "def plus(a, b):\n    return a + b\n", [TestCase("call", "add(1, 2)", "3")], "add")
    assert "does not define" in missing.tests[0].message


def test_setup_helpers_are_the_tasks_not_the_programs(namespaces):
    # HumanEval/38-style: the test uses a helper from the prompt; a program that redefines the
    # helper (here to make its own job trivial) is still judged with the task's helper.
    setup = "def encode(s):\n    return s[::-1]\n"
    program = "def encode(s):\n    return s\ndef decode(s):\n    return s\n"
    result = run(namespaces, program, [TestCase("assert", "assert decode(encode('abc')) == 'abc'")], "decode", setup_code=setup)
    assert verdicts(result) == [Verdict.FAIL]


def test_a_timeout_uses_up_the_request(namespaces):
    program = "def f(x):\n    while x:\n        pass\n    return 1\n"
    result = run(namespaces, program, [TestCase("call", "f(0)", "1"), TestCase("call", "f(1)", "1"),
                                       TestCase("call", "f(0)", "1")], "f", time_limit_s=1.0)
    assert verdicts(result) == [Verdict.PASS, Verdict.TIMEOUT, Verdict.TIMEOUT]


def test_a_crash_restarts_the_program_for_the_next_test(namespaces):
    program = "import ctypes\ndef f(x):\n    if x:\n        ctypes.string_at(0)\n    return 1\n"
    result = run(namespaces, program, [TestCase("call", "f(1)", "1"), TestCase("call", "f(0)", "1")], "f")
    assert verdicts(result) == [Verdict.ERROR, Verdict.PASS]


# ---------------------------------------------------------------- reward hacks

HACKS = {
    "prints_passed": "def add(a, b):\n    print('passed')\n    print('{\"verdict\": \"pass\", \"message\": \"\", \"got\": \"\"}')\n    return 0\n",
    "exit_0_on_load": "import sys\nsys.exit(0)\n" + ADD,
    "exit_0_in_call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "always_equal": "class E:\n    def __eq__(self, o):\n        return True\n    __ne__ = lambda self, o: False\n"
                    "def add(a, b):\n    return E()\n",
    "int_subclass_equal": "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
                          "def add(a, b):\n    return I(0)\n",
    "patched_builtins": "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
                        "builtins.isinstance = lambda *a: True\nbuiltins.bool = lambda *a: True\n"
                        "def add(a, b):\n    return 0\n",
    "forged_verdict_on_every_fd": "import os, json\nline = (json.dumps({'verdict': 'pass', 'message': '', 'got': ''}) + '\\n').encode()\n"
                                  "for fd in range(3, 256):\n    try:\n        os.write(fd, line * 10)\n    except OSError:\n        pass\n"
                                  "def add(a, b):\n    return 0\n",
    "kills_its_parents": "import os, signal\nfor pid in range(1, 64):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
                         "def add(a, b):\n    return 0\n",
}


@pytest.mark.parametrize("program", HACKS.values(), ids=HACKS.keys())
def test_reward_hacks_earn_nothing(namespaces, program):
    tests = [TestCase("call", "add(1, 2)", "3"), TestCase("assert", "assert add(2, 2) == 4"),
             TestCase("assert", "assert isinstance(add(1, 1), int) and add(1, 1) == 2")]
    result = run(namespaces, program, tests, "add")
    assert result.num_passed == 0, [(t.verdict, t.message) for t in result.tests]


def test_the_program_never_holds_the_expected_values(namespaces):
    # The worker is forked before the judge reads the tests, so the expected value is nowhere in
    # its memory.
    secret = "expected-7f3a9c1e5b"
    result = run(namespaces, memory_scan(), [TestCase("call", leak_call(secret), repr(secret))], "leak", time_limit_s=20.0,
                 memory_mb=512)
    assert result.tests[0].verdict is Verdict.FAIL and result.tests[0].got == "0", result.tests[0]


# ---------------------------------------------------------------- positive controls

def test_positive_controls(isolated):
    threads = ("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(16)]\n"
               "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(sum(out))\n")
    files = ("with open('data.txt', 'w') as f:\n    f.write('hello')\nimport os\n"
             "print(open('data.txt').read(), os.path.getsize('/tmp/data.txt'))\n")
    stdin = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
    recursion = ("import sys\nsys.setrecursionlimit(20000)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
                 "print(depth(10000), depth.__name__)\n")
    default_recursion = "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(900))\n"
    cases = [(threads, "", "120"), (files, "", "hello 5"), (stdin, "1 2 3\n4", "10"), (recursion, "", "10000 depth"),
             (default_recursion, "", "900")]
    requests = [ExecutionRequest(p, (TestCase("stdio", i, e),), time_limit_s=5.0) for p, i, e in cases]
    for (program, _, _), result in zip(cases, isolated.run(requests)):
        assert result.all_passed, (program, result.tests[0])


def test_numpy_if_installed(isolated):
    pytest.importorskip("numpy")
    program = "import numpy as np\ndef total(xs):\n    return np.asarray(xs).sum()\n"
    result = run(isolated, program, [TestCase("call", "total([1, 2, 3])", "6")], "total", time_limit_s=10.0)
    assert result.all_passed, result.tests


# ---------------------------------------------------------------- levels

def test_unisolated_levels_need_explicit_permission():
    for level in ("rlimits", "none"):
        with pytest.raises(SandboxUnavailable, match="allow_unisolated"):
            make_executor(level, workers=1)
    with pytest.raises(ValueError):
        make_executor("chroot", workers=1)


def test_auto_picks_the_strongest(namespaces):
    executor = make_executor("auto", workers=1)
    try:
        assert executor.isolation == "namespaces"
        assert set(executor.info["cgroups"]) == {"memory", "pids"}  # this machine and CI: cgroup v1, writable
    finally:
        executor.close()


def test_rlimits_level_judges_the_same_way():
    executor = make_executor("rlimits", allow_unisolated=True, workers=1)
    try:
        result = run(executor, ADD, [TestCase("call", "add(1, 2)", "3"), TestCase("call", "add(1, 1)", "3")], "add")
        assert verdicts(result) == [Verdict.PASS, Verdict.FAIL] and result.isolation == "rlimits"
        assert run(executor, HACKS["always_equal"], [TestCase("call", "add(1, 2)", "3")], "add").num_passed == 0
        assert run(executor, "while True:\n    pass\n", time_limit_s=1.0).tests[0].verdict is Verdict.TIMEOUT
    finally:
        executor.close()


def test_the_launcher_gives_up_at_its_deadline_and_kills_its_workers(tmp_path):
    # The fork server's backstop, should a judge never hang up: the launcher loop returns at its
    # deadline with its workers' process groups killed, for the server to reap.
    judge_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    load = {"program": "import time\ntime.sleep(60)\n", "setup_code": "", "entry_point": "", "stdin": "",
            "time_limit_s": 60.0, "memory_mb": 512}
    config = dict(SandboxOptions().harness_config(str(tmp_path), []), worker_uid=None)
    judge_end.send(json.dumps({"op": "spawn", "mode": "stdio", "index": 0}).encode())
    start = time.monotonic()
    signal.alarm(20)  # a launcher that ignored its deadline fails the test instead of hanging it
    try:
        # The worker gets its program from the judge (here: this test) on its load pipe.
        sender = threading.Thread(target=lambda: harness.write_frame(socket.recv_fds(judge_end, 1 << 16, 8)[1][2], load))
        sender.start()
        workers = harness._launcher(launcher_end, config, deadline=start + 0.5)
        sender.join()
    finally:
        signal.alarm(0)
    assert 0.5 <= time.monotonic() - start < 5
    assert len(workers) == 1
    _, status = os.waitpid(workers[0], 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("level", ["namespaces", "rlimits"])
def test_error_messages_show_no_host_paths(level, request):
    # Feedback to the policy must not carry the judge's or the library's host paths: they leak
    # the host and make the messages depend on where the repository is checked out.
    executor = request.getfixturevalue("namespaces") if level == "namespaces" else \
        make_executor("rlimits", allow_unisolated=True, workers=1)
    programs = {
        "raises": ("def f(x):\n    return g(x)\ndef g(x):\n    raise ValueError('bad value')\n", "f(1)", "ValueError"),
        "raises_in_library": ("import json\ndef f(x):\n    return json.loads('{')\n", "f(1)", "JSONDecodeError"),
        "syntax_error": ("def f(x:\n    return x\n", "f(1)", "SyntaxError"),
        "fails_assertion": ("def f(x):\n    return x + 1\n", "f(1)", ""),
    }
    forbidden = [str(Path(__file__).resolve().parents[2]), "/tmp", "site-packages", "harness.py",
                 os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)]
    try:
        messages = []
        for name, (program, call, expected_in) in programs.items():
            test = TestCase("assert", f"assert {call} == 1, 'f(1) is not 1'") if name == "fails_assertion" else \
                TestCase("call", call, "1")
            result = run(executor, program, [test], "f")
            message = result.tests[0].message
            assert expected_in in message, (name, message)
            messages.append(message)
        stdio = run(executor, "import json\ndef g():\n    json.loads('{')\ng()\n", [TestCase("stdio", "", "1")])
        assert "JSONDecodeError" in stdio.tests[0].message and 'File "main.py", line 4' in stdio.tests[0].message
        messages.append(stdio.tests[0].message)
        assert 'File "<program>"' in messages[0] and "raise ValueError" not in messages[0]
        for message in messages:
            assert not any(path in message for path in forbidden), message
    finally:
        if level != "namespaces":
            executor.close()
