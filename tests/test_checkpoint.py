"""The checkpoint folder's rules (launch/checkpoint.py): only complete checkpoints are picked,
the newest `keep` survive, run.resume finds what it names, and a configuration that cannot
continue a checkpoint is refused by key. The learner's side is exercised end to end in
tests/test_resume.py; here it is a recorder of what it was asked to write."""
from pathlib import Path

import pytest

from launch import checkpoint
from rl.config import ConfigError, load_config


class RecordingLearner:
    def save_checkpoint(self, directory: str) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "state").write_text("weights")

    def checksum(self) -> str:
        return "c0ffee"


def state(step: int, cfg) -> checkpoint.DriverState:
    return checkpoint.DriverState(step, step, {"rng": 1}, {}, checkpoint.capture_rngs(), cfg.to_dict(), "wandb-id")


def test_saves_are_complete_pruned_and_read_back(tmp_path):
    cfg = load_config()
    for step in (1, 2, 3):
        path = checkpoint.save(tmp_path, state(step, cfg), RecordingLearner(), keep=2)
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    loaded, manifest = checkpoint.load(path)
    assert (loaded.step, loaded.wandb_id, manifest["step"], manifest["weights_checksum"]) == (3, "wandb-id", 3, "c0ffee")
    assert (path / "learner" / "state").read_text() == "weights"


def test_a_half_written_checkpoint_is_never_picked_and_is_cleared_by_the_next_save(tmp_path):
    cfg = load_config()
    checkpoint.save(tmp_path, state(1, cfg), RecordingLearner(), keep=None)
    (tmp_path / "checkpoints" / "step-000002.partial" / "learner").mkdir(parents=True)   # killed mid-write
    (tmp_path / "checkpoints" / "step-000003").mkdir()                                  # no manifest
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-000001"]
    with pytest.raises(ConfigError, match="being written"):
        checkpoint.find(load_config(overrides=[f"run.resume={tmp_path / 'checkpoints' / 'step-000002.partial'}"]))
    checkpoint.save(tmp_path, state(4, cfg), RecordingLearner(), keep=None)
    assert not list((tmp_path / "checkpoints").glob("*.partial"))


def test_resume_finds_auto_a_run_directory_or_a_checkpoint(tmp_path):
    old, new, other = tmp_path / "exp-20261201-100000", tmp_path / "exp-20261202-100000", tmp_path / "exp-b-20261203-100000"
    cfg = load_config(overrides=[f"run.output_dir={tmp_path}", "run.name=exp"])
    for run, step in ((old, 5), (new, 2), (other, 9)):
        run.mkdir()
        checkpoint.save(run, state(step, cfg), RecordingLearner(), keep=None)
    (tmp_path / "exp-20261203-100000").mkdir()   # the newest run died before its first checkpoint
    auto = load_config(overrides=[f"run.output_dir={tmp_path}", "run.name=exp", "run.resume=auto"])
    assert checkpoint.find(auto) == new / "checkpoints" / "step-000002"   # not another run's name
    assert checkpoint.find(load_config(overrides=[f"run.resume={old}"])) == old / "checkpoints" / "step-000005"
    assert checkpoint.find(load_config(overrides=["run.resume=auto", f"run.output_dir={tmp_path / 'none'}"])) is None
    with pytest.raises(ConfigError, match="run.resume: .* neither a checkpoint"):
        checkpoint.find(load_config(overrides=[f"run.resume={tmp_path / 'missing'}"]))


def test_config_changes_that_cannot_continue_are_named():
    saved = load_config().to_dict()
    now = load_config(overrides=["run.steps=40", "learner.zero_stage=1", "algo.lr=3e-6", "wandb.mode=disabled"]).to_dict()
    fatal, noted = checkpoint.differences(saved, now)
    assert fatal == ["learner.zero_stage"] and noted == ["algo.lr"]


def test_driver_rngs_round_trip():
    import random

    import numpy as np
    import torch

    rngs = checkpoint.capture_rngs()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.restore_rngs(rngs)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
