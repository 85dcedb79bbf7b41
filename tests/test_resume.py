"""Exact resume, through the real stack as a user runs it (`python -m launch.train` in its own
process): four steps straight, against two steps, `kill -9` of the driver, a resume that a Ctrl-C
stops after step 3, and a second resume for step 4. Every metric but timings and memory, every episode
and the weights of steps 3 and 4 must be the same, and the resumed run continues the same
metrics log and W&B run.

One thing is equal only to float rounding: the logprobs vLLM reports for the sampled tokens. A
fresh engine holding the step-2 weights and the engine that reached them by two in-place reloads
sample the same tokens, but their logprobs differ by ~1e-8 (measured: the mean |Δ| between
learner and engine, 1.69e-7 against 1.64e-7). They enter only a diagnostic metric here (the loss
recomputes logprobs from the token ids), so they are compared to 1e-6."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def command(tiny_model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "launch.train", "--config", str(REPO / "configs" / "tiny.yaml"),
            f"model.path={tiny_model}", f"run.output_dir={out}", "run.steps=4", "run.checkpoint_every=2",
            "rollout.num_workers=1", f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length", *extra]


def start(args: list[str], log: Path) -> subprocess.Popen:
    # Each run with its own W&B service, as from a user's shell: an in-process run of an earlier
    # test leaves WANDB_SERVICE set here, and a killed run's stream would stay registered in it.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    # Ctrl-C reaches the run as from a terminal's foreground, even when the suite itself was started
    # in the background of a shell script (which starts it, and so every child, with SIGINT ignored).
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:g}s"
        time.sleep(0.2)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600.0) -> int:
    try:
        return proc.wait(timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever the run left behind (Ray, vLLM)
        except ProcessLookupError:
            pass


def steps(run_dir: Path) -> list[dict]:
    return [row for row in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in row]


SAMPLING_LOGPROBS = ("learner/rollout_logprob_abs_diff", "rollout_logprobs")


def same(x, y) -> bool:
    """Equal, except vLLM's sampling logprobs: to 1e-6 (see the module docstring)."""
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(
            same(x[k], y[k]) if k not in SAMPLING_LOGPROBS else x[k] == pytest.approx(y[k], abs=1e-6) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return x == y


MEASURED = ("time/", "learner/tokens_per_s", "learner/peak_rss_gb")   # of the machine, not of the computation


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(MEASURED)}


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    straight = start(command(tiny_model, root / "straight"), root / "straight.log")
    assert finish(straight, root / "straight.log") == 0, (root / "straight.log").read_text()[-3000:]

    killed = start(command(tiny_model, root / "resumed"), root / "killed.log")
    run_dir = lambda: next((root / "resumed").glob("tiny-*"), None)
    wait_for(killed, lambda: run_dir() is not None and (run_dir() / "checkpoints" / "step-000002" / "manifest.json").exists(),
             "checkpoint of step 2")
    os.kill(killed.pid, signal.SIGKILL)   # the driver only, as an OOM kill or a lost node would
    finish(killed, root / "killed.log")

    interrupted = start(command(tiny_model, root / "resumed", f"run.resume={run_dir()}"), root / "interrupted.log")
    wait_for(interrupted, lambda: len(steps(run_dir())) >= 3 and steps(run_dir())[-1]["step"] == 3, "step 3 logged")
    os.kill(interrupted.pid, signal.SIGINT)   # Ctrl-C
    code = finish(interrupted, root / "interrupted.log")
    assert code == 130, (root / "interrupted.log").read_text()[-3000:]

    last = start(command(tiny_model, root / "resumed", "run.resume=auto"), root / "last.log")
    assert finish(last, root / "last.log") == 0, (root / "last.log").read_text()[-3000:]
    return next((root / "straight").glob("tiny-*")), run_dir(), root


def test_resumed_steps_compute_what_the_straight_run_computed(runs):
    straight, resumed, _ = runs
    a, b = steps(straight), steps(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]   # each step once: rows of the killed step were dropped
    assert len({r["weights/checksum"] for r in a}) == 4, "every step must change the weights"
    for x, y in zip(a, b):
        assert same(comparable(x), comparable(y)), f"step {x['step']}: {comparable(x)} != {comparable(y)}"
    for step in (3, 4):
        name = f"rollouts/step-{step:06d}.jsonl"
        episodes = [[json.loads(line) for line in (run / name).open()] for run in (straight, resumed)]
        assert same(*episodes), name


def test_the_resumed_run_says_what_happened_and_continues_its_wandb_run(runs):
    _, resumed, root = runs
    checkpoints = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert checkpoints == ["step-000003", "step-000004"]   # 2 kept; step 3's written on Ctrl-C
    interrupted = (root / "interrupted.log").read_text()
    assert "interrupted: checkpoint after step 3" in interrupted and f"run.resume={resumed}" in interrupted
    assert f"resuming {resumed} after step 3" in (root / "last.log").read_text()
    metadata = json.loads((resumed / "metadata.json").read_text())
    assert [r["after_step"] for r in metadata["resumed"]] == [2, 3]
    ids = {p.name.rsplit("-", 1)[1] for p in (resumed / "wandb").glob("offline-run-*")}
    assert len(list((resumed / "wandb").glob("offline-run-*"))) == 3 and len(ids) == 1


def test_engine_output_goes_to_the_run_logs(runs):
    _, resumed, root = runs
    terminal = (root / "last.log").read_text()
    assert "INFO" not in terminal and "RotaryEmbedding" not in terminal
    assert "Reloading weights" in (resumed / "logs" / "rollout-0.log").read_text()
    assert (resumed / "logs" / "learner-rank0.log").exists()
