"""The weight transports end to end at tiny scale, on a local two-node Ray cluster (two raylets on
this machine, each with its own object store, so object_store moves the bytes between nodes as
on a real cluster, and tcp connects to the other node's address): real DeepSpeed learner actors
publish, a real vLLM rollout worker receives, reloads in place and answers with the checksum of
what its engine loaded and holds."""
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file

from rl.config import ConfigError, load_config
from rl.weight_sync import PublishedWeights, checksum_tensors, choose_transport
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_auto_picks_shm_on_one_node_and_tcp_across_nodes():
    assert choose_transport("auto", "n1", ["n1", "n1"]) == "shm"
    assert choose_transport("auto", "n1", ["n1", "n2"]) == "tcp"
    assert choose_transport("object_store", "n1", ["n1"]) == "object_store"
    assert choose_transport("tcp", "n1", ["n1"]) == "tcp"


def test_explicit_shm_with_a_worker_elsewhere_is_refused_naming_its_node():
    with pytest.raises(ConfigError) as refused:
        choose_transport("shm", "n1", ["n1", "n2", "n1", "n3"])
    message = str(refused.value)
    assert message.startswith("weight_sync.transport=shm: rollout workers 1 (node n2), 3 (node n3) ")
    assert "learner rank 0's node n1" in message and "tcp or object_store" in message


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    """Head node: the rollout worker (on `tiny_model`) and a learner; the other node: a learner.
    Each learner has its own random weights (the tiny model's architecture, other seeds), so a
    push visibly replaces what the worker started with."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rl.advantages import estimator
    from rl.cluster import Placement, RolloutGroup
    from rl.learner import LearnerActor, learner_options
    from rl.models import build_tiny_model

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", "rollout.num_workers=1", "weight_sync.timeout_s=60",
        "weight_sync.bucket_mb=8",   # the embedding (25 MB) alone, the rest in another bucket
        "rollout.resources={rollout_node: 1}",   # only the head has it
    ])
    # The learners are pinned first, so the rollout worker gets the head's last CPU.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {"rollout_node": 1},
                                                            "object_store_memory": 200 << 20})
    far = cluster.add_node(num_cpus=1, object_store_memory=200 << 20)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        head = ray.get_runtime_context().get_node_id()

        def learner(seed, node, port):
            model = build_tiny_model(tmp_path_factory.mktemp(f"tiny-model-seed{seed}"), seed=seed)
            return LearnerActor.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
                str(model), **learner_options(cfg, estimator(cfg.algo.advantage)), master_port=port)

        near, far_learner = learner(1, head, 29851), learner(2, far.node_id, 29852)
        assert ray.get([near.node_id.remote(), far_learner.node_id.remote()]) == [head, far.node_id]
        rollout = RolloutGroup(cfg, tiny_model, str(tmp_path_factory.mktemp("weights")), Placement(cfg, learner=False))
        yield SimpleNamespace(cfg=cfg, rollout=rollout, near=near, far=far_learner, head=head, other=far.node_id,
                              initial=load_file(str(Path(tiny_model) / "model.safetensors")))
    finally:
        ray.shutdown()
        cluster.shutdown()


def _push_and_check(c, learner, transport: str) -> PublishedWeights:
    """Publish `learner`'s weights through `transport` and push them; the worker must return the
    learner's checksum and then hold its embeddings and norms, which differ from its initial ones."""
    import ray

    from rl.vllm_ext import verbatim_parameter_names

    weights = ray.get(learner.publish.remote(transport, c.rollout.weights_dir, c.cfg.weight_sync))
    assert (weights.transport, weights.version) == (transport, 0)
    assert weights.checksum == ray.get(learner.checksum.remote())
    c.rollout.push(weights)   # raises unless the engine loaded exactly weights.checksum
    names = verbatim_parameter_names(ray.get(learner.parameter_names.remote()))
    expected = ray.get(learner.checksum.remote(names))
    assert c.rollout.verify_held(names, expected, weights.version) == [expected]
    assert expected != checksum_tensors({n: c.initial[n] for n in names})
    return weights


def test_shm_moves_a_same_node_learners_weights_into_the_engine(cluster):
    assert cluster.rollout.nodes == [cluster.head]
    transport = choose_transport("auto", cluster.head, cluster.rollout.nodes)
    assert transport == "shm"
    weights = _push_and_check(cluster, cluster.near, transport)
    assert Path(weights.location).parent == Path(cluster.rollout.weights_dir)


def test_tcp_moves_weights_across_nodes_into_the_engine(cluster):
    import ray

    assert cluster.other not in cluster.rollout.nodes
    transport = choose_transport("auto", cluster.other, cluster.rollout.nodes)
    assert transport == "tcp"
    weights = _push_and_check(cluster, cluster.far, transport)
    assert weights.location.startswith(f"tcp://{ray.util.get_node_ip_address()}:")   # the learner's node's Ray address
    again = _push_and_check(cluster, cluster.far, transport)       # the same server, the next publish
    assert again.location.split("/")[2] == weights.location.split("/")[2]
    assert not list(Path(cluster.rollout.weights_dir).glob("received-*")), "tcp stages no file"


def test_object_store_moves_weights_across_nodes_in_buckets(cluster):
    assert cluster.other not in cluster.rollout.nodes
    weights = _push_and_check(cluster, cluster.far, "object_store")
    embedding, rest = weights.location   # buckets of 8 MiB: the 25 MB embedding alone, then all the rest
    assert [name for name, *_ in embedding.tensors] == ["model.embed_tokens.weight"] and len(rest.tensors) > 1
    assert not list(Path(cluster.rollout.weights_dir).glob("received-*")), "the worker removes what it staged"


def test_a_push_to_a_busy_worker_fails_within_its_timeout_naming_the_worker(cluster):
    """The worker is generating a long batch and cannot take the push: the push must give up
    after weight_sync.timeout_s and say which worker, on which node, did not answer."""
    import ray

    from rl.cluster import WeightPushError
    from rl.rollout import SamplingSpec

    rollout = cluster.rollout
    weights = ray.get(cluster.near.publish.remote("shm", rollout.weights_dir, cluster.cfg.weight_sync))
    busy = rollout.workers[0].generate.remote([[1, 2, 3]] * 32, SamplingSpec(max_new_tokens=900))
    rollout.push_timeout_s = 3.0
    start = time.monotonic()
    with pytest.raises(WeightPushError) as late:
        rollout.push(weights)
    assert time.monotonic() - start < 3.0 + 2.0
    assert f"no answer within weight_sync.timeout_s=3s from rollout worker 0 (node {rollout.nodes[0]})" in str(late.value)
    assert not ray.wait([busy], timeout=0)[0], "the worker must still have been busy (else the test proves nothing)"
