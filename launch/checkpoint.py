"""Checkpoints a run continues from exactly (`run.checkpoint_every`, `run.resume`; docs/checkpoints.md).

    <run>/checkpoints/step-000004/
        learner/       every learner rank's DeepSpeed state (policy and critic, optimizer and its
                       step counts; with ZeRO, each rank's partition) and each rank's torch RNG
        driver.pkl     the driver's state (`DriverState`)
        manifest.json  written last: step, weight version, weights checksum, time

A checkpoint is written as step-N.partial and renamed when complete (a rename is atomic within one
file system), so a crash or `kill -9` mid-write leaves only a .partial folder: never picked, and
removed by the next save. Nothing else is needed to continue exactly: the vLLM sampling seeds are
a function of the run's seed and the step (rl/rollout.py:derive_seed), the rollout workers get the
checkpoint's weights pushed before the first step, and SCoRe's stage is a function of the step.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rl.config import Config, ConfigError

MANIFEST = "manifest.json"

# Keys a resumed run may change without changing what it computes (or, for run.steps, only
# how far it goes); any other difference is reported before the run continues.
FREE_TO_CHANGE = ("run.steps", "run.resume", "run.checkpoint_every", "run.keep_checkpoints", "run.save_final",
                  "run.save_rollouts", "eval.after", "wandb.", "ray.", "weight_sync.", "sandbox.workers",
                  "sandbox.backend", "rollout.num_workers", "rollout.num_cpus_per_worker", "learner.num_cpus_per_rank",
                  "learner.torch_threads")
# Keys whose change makes the learner's state unloadable or meaningless.
MUST_MATCH = ("model.path", "model.dtype", "learner.num_ranks", "learner.zero_stage", "algo.advantage",
              "algo.mini_batches", "algo.micro_batch_size", "rollout.tasks_per_step", "rollout.samples_per_task")


@dataclass
class DriverState:
    """Everything outside the learner a step depends on, as it was after `step`."""

    step: int
    weight_version: int
    sampler: dict                  # envs/tasks.py:TaskSampler.state_dict
    environment: dict              # the training environment's state_dict
    rngs: dict                     # the driver's Python, NumPy and torch global RNGs
    config: dict                   # the configuration that wrote it
    wandb_id: str | None = None    # the resumed run continues this W&B run
    before: tuple | None = None    # (episodes, report) of the evaluation before training


def capture_rngs() -> dict:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rngs(rngs: dict) -> None:
    import numpy as np
    import torch

    random.setstate(rngs["python"])
    np.random.set_state(rngs["numpy"])
    torch.set_rng_state(rngs["torch"])


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("step-*")
             if re.fullmatch(r"step-\d+", p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save(run_dir: str | Path, state: DriverState, learner, keep: int | None) -> Path:
    """Write the checkpoint of `state.step` (the learner as it is now), then keep the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    final, staging = root / f"step-{state.step:06d}", root / f"step-{state.step:06d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    learner.save_checkpoint(str(staging / "learner"))
    with open(staging / "driver.pkl", "wb") as f:
        pickle.dump(state, f)
    manifest = {"step": state.step, "weight_version": state.weight_version, "weights_checksum": learner.checksum(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _sync_tree(staging)
    if final.exists():   # this step saved before (Ctrl-C right after a periodic save): replace it
        shutil.rmtree(final)
    os.rename(staging, final)
    _sync_dir(root)
    for old in complete_checkpoints(run_dir)[:-keep] if keep else ():
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob("step-*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def load(checkpoint: Path) -> tuple[DriverState, dict]:
    """(the driver's state, the manifest) of a complete checkpoint."""
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    with open(checkpoint / "driver.pkl", "rb") as f:
        return pickle.load(f), manifest


def find(cfg: Config) -> Path | None:
    """The checkpoint `run.resume` names: '' none; 'auto' the newest complete checkpoint of the
    newest run of this run.name under run.output_dir that has one (none: a fresh start); else a
    checkpoint folder, or a run directory (its newest complete checkpoint)."""
    resume = cfg.run.resume
    if not resume:
        return None
    if resume == "auto":
        pattern = re.escape(cfg.run.name) + r"-\d{8}-\d{6}"
        runs = sorted(p for p in Path(cfg.run.output_dir).glob(f"{cfg.run.name}-*") if re.fullmatch(pattern, p.name))
        for run in reversed(runs):
            if found := complete_checkpoints(run):
                return found[-1]
        return None
    path = Path(resume)
    if (path / MANIFEST).is_file():
        return path
    if found := complete_checkpoints(path):
        return found[-1]
    why = "a checkpoint being written (no manifest.json yet)" if path.name.endswith(".partial") else \
        "neither a checkpoint (a folder with manifest.json) nor a run directory with a complete one"
    raise ConfigError(f"run.resume: {resume!r} is {why}")


def differences(saved: dict, now: dict) -> tuple[list[str], list[str]]:
    """(keys that must match but differ, other differing keys) between two config dicts."""
    changed = [f"{s}.{k}" for s in now for k in now[s] if saved.get(s, {}).get(k) != now[s][k]]
    fatal = [k for k in changed if k in MUST_MATCH]
    noted = [k for k in changed if k not in MUST_MATCH and not k.startswith(FREE_TO_CHANGE)]
    return fatal, noted


def _sync_tree(root: Path) -> None:
    """fsync every file and folder under root: a complete checkpoint survives a power cut too."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(Path(folder) / name, "rb") as f:
                os.fsync(f.fileno())
        _sync_dir(Path(folder))


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
