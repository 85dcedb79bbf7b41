"""Placement from config (rl/cluster.py:Placement): a request the cluster cannot hold is a
ConfigError naming what was asked and what the cluster has, before any actor starts."""
import pytest
import ray

from rl.cluster import Placement
from rl.config import ConfigError, load_config


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_resource_no_node_has_is_refused_at_once(local_ray):
    cfg = load_config(None, ["rollout.resources={gpu_node: 1}", "rollout.num_workers=2"])
    with pytest.raises(ConfigError) as error:
        Placement(cfg, learner=True)
    message = str(error.value)
    assert "no node of the cluster can hold one rollout worker ({CPU: 1, gpu_node: 1})" in message
    assert "asked 1 learner rank x {CPU: 1} + 2 rollout workers x {CPU: 1, gpu_node: 1} (ray.placement=pack)" in message
    (node,) = ray.nodes()
    assert f"the cluster has node {node['NodeManagerAddress']} ({node['NodeID'][:8]})" in message and "CPU: 2" in message


def test_a_layout_the_cluster_cannot_hold_times_out_with_the_request(local_ray):
    cfg = load_config(None, ["ray.placement=strict_spread", "ray.placement_timeout_s=2", "rollout.num_cpus_per_worker=0.5"])
    with pytest.raises(ConfigError, match=r"did not hold 1 learner rank x \{CPU: 1\} \+ 1 rollout worker x \{CPU: 0.5\} "
                                          r"\(ray.placement=strict_spread\) within ray.placement_timeout_s=2s"):
        Placement(cfg, learner=True)
    assert ray.available_resources()["CPU"] == 2   # the group that could not be placed is gone


def test_bundles_carry_every_resource_and_place_actors(local_ray):
    cfg = load_config(None, ["rollout.num_workers=2", "rollout.num_cpus_per_worker=0.5", "rollout.memory_gib=0.25",
                             "learner.num_cpus_per_rank=1"])
    placement = Placement(cfg, learner=True)
    try:
        assert placement.rollout(1)["num_cpus"] == 0.5 and placement.rollout(1)["memory"] == 2**28
        ip, port = placement.address(0)
        (node,) = ray.nodes()
        assert ip == node["NodeManagerAddress"] and port > 0
    finally:
        placement.close()
