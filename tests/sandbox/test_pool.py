"""The Ray actor pool on a real local Ray (loopback only): order, level, back-pressure, retries."""
import os
import signal

import pytest

from envs.execution import ExecutionRequest
from envs.tasks import TestCase

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def pool():
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("the pool runs the namespaces level, which needs root")
    from envs.sandbox import make_executor

    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        executor = make_executor("namespaces", workers=2, backend="ray", max_in_flight=2, deadline_slack_s=3.0)
        yield executor
        executor.close()
    finally:
        ray.shutdown()


def requests(n):
    program = "def square(x):\n    return x * x\n"
    return [ExecutionRequest(program, (TestCase("call", f"square({i})", str(i * i)), TestCase("call", f"square({i})", "-1")),
                             "square", time_limit_s=2.0) for i in range(n)]


def test_results_in_order_with_the_level(pool):
    results = pool.run(requests(12))
    assert [r.tests[0].got for r in results] == [str(i * i) for i in range(12)]
    assert all(r.num_passed == 1 and r.isolation == "namespaces" for r in results)
    assert pool.isolation == "namespaces" and pool.info["nodes"] == 1 and pool.info["workers"] == 2


def test_a_killed_actor_is_replaced_and_its_work_retried(pool):
    actor = pool.actors[0][0]
    ray.kill(actor)
    results = pool.run(requests(6))
    assert all(r.num_passed == 1 for r in results)
    assert pool.actors[0][0] is not actor


def test_a_hung_actor_misses_its_deadline_and_is_replaced(pool):
    pid = ray.get(pool.actors[0][0].info.remote())["pid"]
    os.kill(pid, signal.SIGSTOP)  # the actor is alive but answers nothing
    try:
        results = pool.run(requests(4))
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert all(r.num_passed == 1 for r in results)
    assert ray.get(pool.actors[0][0].info.remote())["pid"] != pid
