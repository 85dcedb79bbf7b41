"""`ray job submit` against a real cluster: `ray start --head` on loopback, one training step
submitted as the README shows it, the job's driver joining that cluster (RAY_ADDRESS, set by the
job), its actors placed there, and the run directory where run.output_dir said."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ray_cli import RAY, free_port, own_ports, stop_cluster, token_env

pytestmark = pytest.mark.e2e

@pytest.fixture
def cluster(tmp_path):
    """A one-node cluster of its own (own ports, own temp dir), stopped afterwards."""
    temp = Path("/tmp") / f"ray-job-{os.getpid()}"   # Ray's socket paths must stay short
    port, dashboard = free_port(), free_port()
    env = token_env()   # the job's `python` is the one with the project; the submitting CLI needs the token
    subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", f"--port={port}", "--num-cpus=4",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
                    "--include-dashboard=true", "--disable-usage-stats", *own_ports()], check=True, env=env, capture_output=True)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        stop_cluster(temp, port)


def test_a_submitted_job_trains_on_the_cluster(cluster, tiny_model, tmp_path):
    address, env = cluster
    out = tmp_path / "runs"
    submitted = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
         "python", "-m", "launch.train", "--config", "configs/tiny.yaml", f"model.path={tiny_model}",
         f"run.output_dir={out}", "run.steps=1", "rollout.num_workers=1", "wandb.mode=disabled"],
        env=env, capture_output=True, text=True, timeout=900)
    logs = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0 and "succeeded" in logs, logs[-4000:]
    (run_dir,) = out.glob("tiny-*")
    assert f"run directory: {run_dir}" in logs
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    assert [r["step"] for r in steps] == [1]
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["ray"]["joined"] is True and metadata["ray"]["nodes"] == 1
    assert (run_dir / "logs" / "rollout-0.log").exists()
