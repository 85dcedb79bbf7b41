"""Surviving failures in a real run: a rollout worker's process and a sandbox actor's process
are killed (SIGKILL, as the OOM killer or a lost node would) as step 2 starts; every step must
finish with every sample, the replacements must hold the pushed weights, and the run must say
what happened. (The pool finds its actor dead at its next batch of programs: in step 2 or, when
the kill lands after step 2's last batch, in step 3.)"""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from launch.train import train
from rl.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every process below `root`."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {}
    for pid in parents:
        p = pid
        while p > 1 and p in parents:
            p = parents[p]
            if p == root:
                found[pid] = commands[pid]
                break
    return found


def kill_when_step_one_is_logged(out: Path, killed: list) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rows = [json.loads(line) for path in out.glob("*/metrics.jsonl") for line in path.read_text().splitlines()]
        if any(r.get("step") == 1 and "weight_version" in r for r in rows):
            break
        time.sleep(0.1)
    processes = descendants(os.getpid())
    for title in ("ray::RolloutWorker", "ray::SandboxActor"):   # the lowest pid: the actor, not a process it forked
        os.kill(min(p for p, cmd in processes.items() if cmd.startswith(title)), signal.SIGKILL)
        killed.append(title)


def test_killed_rollout_worker_and_sandbox_actor_are_replaced_mid_run(tiny_model, tmp_path, capfd):
    out = tmp_path / "runs"
    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", f"run.output_dir={out}", "sandbox.backend=ray", "run.steps=3",
        # a random-init model writes no program: seeded faulty first attempts keep the sandbox busy
        "episode.environment=repair", "episode.seeded_first_turns=1.0",
        f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length"])
    killed: list[str] = []
    killer = threading.Thread(target=kill_when_step_one_is_logged, args=(out, killed), daemon=True)
    killer.start()
    result = train(cfg)
    killer.join(5)
    assert killed == ["ray::RolloutWorker", "ray::SandboxActor"]
    run_dir = Path(result["run_dir"])
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[1]["faults/rollout_workers_replaced"] == 1   # generation follows the kill within step 2
    assert steps[2]["faults/rollout_workers_replaced"] == 1 and steps[2]["faults/sandbox_actors_replaced"] == 1
    batch = cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
    for step in (1, 2, 3):
        episodes = [json.loads(line) for line in (run_dir / "rollouts" / f"step-{step:06d}.jsonl").open()]
        assert len(episodes) == batch and all(len(e["turns"]) == cfg.episode.max_turns for e in episodes), step
        # Both workers, the replacement included, hold the weights of the step's push.
        held = steps[step - 1]["weights/held_by_workers"]
        assert len(held) == cfg.rollout.num_workers and len(set(held)) == 1
    err = capfd.readouterr().err
    assert "rollout worker" in err and "died" in err and "starting a replacement (1 of at most 4)" in err
    assert "sandbox actor on node" in err and "replacing it" in err
