"""A real two-node Ray cluster on this one machine (`ray start --head` and a second
`ray start --address ...`, each with its own CPUs and a custom resource, both on 127.0.0.1): the
learner is placed on the head, the rollout workers on the other node (placement from config),
two training steps run, every worker holds the learner's weights after each push, and the
weights crossed nodes through the cross-node transport; the sandbox pool has an actor on each
node. The cluster is stopped afterwards."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ray_cli import RAY, free_port, own_ports, stop_cluster, token_env

pytestmark = pytest.mark.e2e

@pytest.fixture
def two_nodes():
    temp = Path("/tmp") / f"ray-2n-{os.getpid()}"   # Ray's socket paths must stay short
    port = free_port()
    # `ray start --head` turns on Ray's token authentication; the other node and the driver join
    # with it (the token is this machine's ~/.ray/auth_token, so nothing needs copying here).
    env = token_env()
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", '--resources={"learner_node": 1}',
                        "--include-dashboard=false", f"--temp-dir={temp}", *common, *own_ports()], check=True, env=env, capture_output=True)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", '--resources={"rollout_node": 2}',
                        *common, *own_ports(head=False)], check=True, env=env, capture_output=True)
        yield f"127.0.0.1:{port}", env
    finally:
        stop_cluster(temp, port)


def test_learner_and_rollout_workers_on_two_nodes(two_nodes, tiny_model, tmp_path):
    address, env = two_nodes
    out = tmp_path / "runs"
    run = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config", str(REPO / "configs" / "tiny.yaml"), f"model.path={tiny_model}",
         f"run.output_dir={out}", f"ray.address={address}", "learner.resources={learner_node: 1}",
         "rollout.resources={rollout_node: 1}", "sandbox.backend=ray", "wandb.mode=disabled",
         f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    (run_dir,) = out.glob("tiny-*")
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["ray"]["joined"] and metadata["ray"]["nodes"] == 2
    placed = metadata["placement"]
    (learner_node,) = set(placed["learner"])
    assert len(placed["rollout"]) == 2 and learner_node not in placed["rollout"] and len(set(placed["rollout"])) == 1
    assert metadata["weight_transport"] == "tcp"
    assert metadata["sandbox"]["nodes"] == 2   # the sandbox pool executes on every node's CPUs
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert len({r["weights/checksum"] for r in steps}) == 2   # the weights changed at each step ...
    for r in steps:   # ... and after each push both workers held the learner's (checked against it in the run)
        assert len(r["weights/held_by_workers"]) == 2 and len(set(r["weights/held_by_workers"])) == 1
