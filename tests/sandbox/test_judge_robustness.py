"""Attacks on the judge (issue #14, classes 2 and 4): worker behaviour that used to raise inside
the judge, stall it or balloon it (and so lose the whole batch), and exceptions that steered the
judge's own control flow. Each runs in a batch with ordinary programs whose verdicts must hold;
`executor.run` must return for all of them."""
import signal
import time

import pytest

from envs.execution import ExecutionRequest, Verdict
from envs.sandbox import make_executor
from envs.tasks import TestCase

from sandbox_helpers import run_with_controls, sandbox_processes

pytestmark = pytest.mark.usefixtures("host_unchanged")

# A function program that, when loaded, writes `frame` (bytes) to its reply pipe (fd 4) as if
# it were the reply to the first call, then waits.
RAW_REPLY = ("import os, struct, time\n"
             "def f(x):\n"
             "    data = FRAME\n"
             "    os.write(4, struct.pack('<I', len(data)) + data)\n"
             "    time.sleep(30)\n")


def call_request(program, tests=(("f(1)", "1"),), time_limit_s=5.0):
    return ExecutionRequest(program, tuple(TestCase("call", i, e) for i, e in tests), "f", time_limit_s=time_limit_s)


def raw_reply(frame_expression):
    return call_request(RAW_REPLY.replace("FRAME", frame_expression))


def verdicts(result):
    return [t.verdict for t in result.tests]


def test_unnamed_signals_are_verdicts(namespaces):
    # Real-time signals have no name in the signal module: naming one used to raise in the judge.
    rt = signal.SIGRTMIN + 3
    kill_self = f"import os\nos.kill(os.getpid(), {rt})\n"
    call = call_request(f"import os\ndef f(x):\n    os.kill(os.getpid(), {rt})\n")
    stdio = ExecutionRequest(kill_self, (TestCase("stdio", "", ""),))
    for result in run_with_controls(namespaces, call, stdio):
        assert verdicts(result) == [Verdict.ERROR] and f"killed by signal {rt} (SIGRTMIN+3)" in result.tests[0].message


def test_a_worker_that_hangs_up_while_the_judge_writes(namespaces):
    # The program closes its end of the call pipe and keeps running; the judge's write of a
    # large argument then fails (EPIPE) in the middle of it.
    program = "import os, time\nos.close(3)\ndef f(x):\n    return len(x)\n"
    request = call_request(program, (("f('x' * (1 << 20))", "1048576"), ("f('')", "0")))
    start = time.monotonic()
    (result,) = run_with_controls(namespaces, request)
    assert verdicts(result) == [Verdict.ERROR, Verdict.ERROR] and "closed its call pipe" in result.tests[0].message
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("frame", [
    # 20 000 distinct ints that all hash to 0: building the set is quadratic (minutes) in CPython
    "('{\"value\": {\"s\": [' + ','.join(str(i * (2 ** 61 - 1)) for i in range(1, 20001)) + ']}}').encode()",
    "b'[' * 200000 + b']' * 200000",                                   # nesting deeper than the parser's recursion
    "b'{\"value\": ' + b'9' * 100000 + b'}'",                          # an int with too many digits to parse
    "b'{\"value\": [' + b'[],' * 1200000 + b'[]]}'",                   # 1.2 million values (ballooning memory)
    "b'\\xff\\xfe garbage'",                                            # not UTF-8 JSON
    "b'[1, 2]'",                                                        # JSON, but not a reply
    "b'{\"raised\": {\"type\": [1], \"message\": {}}}'",                # a malformed exception report
], ids=["hash_collisions", "deep_nesting", "huge_int", "many_values", "not_json", "not_an_object", "bad_raised"])
def test_replies_crafted_to_be_slow_huge_or_malformed(namespaces, frame):
    start = time.monotonic()
    (result,) = run_with_controls(namespaces, raw_reply(frame))
    assert verdicts(result) == [Verdict.ERROR], result.tests
    assert time.monotonic() - start < 6


def test_a_reply_frame_over_the_limit_is_not_read(namespaces):
    program = "import os, struct, time\nos.write(4, struct.pack('<I', 3 << 30))\ndef f(x):\n    time.sleep(30)\n"
    (result,) = run_with_controls(namespaces, call_request(program))
    assert verdicts(result) == [Verdict.ERROR] and "too large" in result.tests[0].message


def test_replies_nobody_asked_for(namespaces):
    # Valid replies written ahead of any call, without end: the judge keeps only a few.
    program = ("import os, json, struct\ndata = json.dumps({'value': 1}).encode()\n"
               "frame = struct.pack('<I', len(data)) + data\n"
               "def f(x):\n    while True:\n        os.write(4, frame * 1000)\n")
    start = time.monotonic()
    (result,) = run_with_controls(namespaces, call_request(program, (("f(2)", "2"), ("f(3)", "3"))))
    assert Verdict.PASS not in verdicts(result)
    assert time.monotonic() - start < 6


def test_a_dead_workers_pipes_flooded_by_what_it_left_behind(namespaces):
    # The worker exits at once; a daemon it started (outside its process group, so it outlives
    # it until the task ends) keeps writing to the stdout pipe the judge then drains.
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n"
               "        os.write(1, b'x' * 65536)\ntime.sleep(0.3)\nprint('done')\n")
    request = ExecutionRequest(program, (TestCase("stdio", "", "done"), TestCase("stdio", "", "done")), time_limit_s=5.0)
    start = time.monotonic()
    (result,) = run_with_controls(namespaces, request)
    assert verdicts(result) == [Verdict.OUTPUT_LIMIT] * 2
    assert time.monotonic() - start < 8


@pytest.mark.parametrize("exception", ["StopIteration", "StopAsyncIteration", "GeneratorExit", "KeyboardInterrupt",
                                       "SystemExit", "AssertionError"])
def test_exceptions_that_would_steer_the_judge(namespaces, exception):
    # `all(map(candidate, cases))`: a StopIteration rebuilt in the judge ended map() early and
    # all() of nothing is True, so a program that only raised passed.
    program = f"def f(x):\n    raise {exception}('from the program')\n"
    tests = (("all(map(f, [1, 2, 3]))", "True"), ("list(map(f, [1]))", "[1]"), ("next(iter([f(1)]), None)", "1"),
             ("[f(x) for x in [1]]", "[1]"))
    (result,) = run_with_controls(namespaces, call_request(program, tests))
    assert verdicts(result) == [Verdict.ERROR] * 4, result.tests
    assert all(exception in t.message for t in result.tests), result.tests


def test_ordinary_exceptions_still_match_their_type(namespaces):
    program = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    check = ("try:\n    f(-1)\nexcept ValueError as e:\n"
             "    assert type(e).__name__ == 'ValueError' and str(e) == 'negative' and e.type_name == 'ValueError'\n"
             "else:\n    raise AssertionError('no exception')\n")
    request = ExecutionRequest(program, (TestCase("assert", check), TestCase("call", "f(-2)", "0")), "f")
    (result,) = run_with_controls(namespaces, request)
    assert verdicts(result) == [Verdict.PASS, Verdict.ERROR] and "ValueError" in result.tests[1].message


@pytest.fixture
def one_slot():
    executor = make_executor("namespaces", workers=1)
    yield executor
    executor.close()


def test_a_slot_failure_is_that_programs_sandbox_verdict_and_the_batch_completes(one_slot):
    # The sandbox's own machinery fails under one request (its server is killed from outside, as
    # an OOM kill of the server would): that request gets Verdict.SANDBOX, the slot restarts,
    # and the rest of the batch is judged as usual.
    (slot,) = one_slot._slots
    victim = ExecutionRequest("import time\ntime.sleep(2)\nprint('late')\n", (TestCase("stdio", "", "late"),) * 2,
                              time_limit_s=5.0)
    killed = slot.proc.pid

    def kill_server_during(request):
        if request is victim:
            import threading
            threading.Timer(0.5, lambda: slot.proc.pid == killed and slot.proc.kill()).start()
        return original(request)

    original, slot.execute = slot.execute, kill_server_during
    try:
        (result,) = run_with_controls(one_slot, victim)
    finally:
        del slot.execute
    assert verdicts(result) == [Verdict.SANDBOX] * 2
    assert all(t.message.startswith("error: sandbox: ") for t in result.tests), result.tests
    assert result.extra["sandbox_error"] and slot.proc.pid != killed
    # The killed server's task dies with it (its init's pipe closes), reaped by the host's init.
    deadline = time.monotonic() + 5
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_sandbox_that_cannot_restart_raises(one_slot):
    (slot,) = one_slot._slots
    slot.config["root"] = "/nonexistent/selfcorrect-root"  # every fresh server fails to build its root
    slot.proc.kill()
    with pytest.raises(RuntimeError, match="the sandbox is broken"):
        one_slot.run([ExecutionRequest("print(1)", (TestCase("stdio", "", "1"),))])
