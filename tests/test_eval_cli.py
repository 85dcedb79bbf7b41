"""`selfcorrect eval`: bad input exits with 2 before Ray starts; one sampled run end to end on the
random-init tiny model through a local Ray and one vLLM (CPU) rollout worker."""
import json

import pytest

import launch.eval as eval_cli
from launch.cli import main as cli_main


@pytest.fixture
def no_ray(monkeypatch):
    """Reaching the part that starts Ray and vLLM fails the test: input must be rejected first."""
    def refuse(*args, **kwargs):
        raise AssertionError("evaluation (Ray, vLLM) started before the input was rejected")

    monkeypatch.setattr(eval_cli, "evaluate", refuse)
    yield
    import sys
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "starter", "--samples", "2"], "--temperature 0"),
    (["--dataset", "starter", "--samples", "2", "--temperature", "1.0", "--k", "1", "3"], "--k"),
    (["--dataset", "no_such_dataset"], "data.dataset"),
    (["--dataset", "starter", "--turns", "9"], "episode.max_turns"),
    (["--dataset", "starter", "--samples", "0"], "--samples"),
    (["--dataset", "starter", "--temperature", "nan"], "--temperature"),
    (["--dataset", "starter", "--model", "/no/such/model/folder"], "model.path"),
    (["--dataset", "starter", "--split", "heldout", "data.heldout_fraction=0"], "no tasks"),
    (["--dataset", "starter", "--feedback", "shout"], "--feedback"),
    (["--dataset", "starter", "no_such.key=1"], "unknown config key"),
    (["--dataset", "starter", "episode.environment=repair"], "eval.environment"),
    (["--dataset", "starter", "episode.seeded_first_turns=0.5"], "--benchmark"),
])
def test_bad_input_exits_2_before_ray(argv, message, no_ray, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_main(["eval", "--out", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    if message:
        assert message in err, err
    assert not (tmp_path / "out").exists()


def test_out_folder_must_be_new_or_empty(no_ray, capsys, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        eval_cli.main(["--dataset", "starter", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_flags_set_config_keys(tmp_path):
    args = eval_cli.parse_args(["--dataset", "starter", "--turns", "3", "--feedback", "execution", "--limit", "5",
                                "--samples", "4", "--temperature", "0.7", "--max-new-tokens", "64",
                                "--out", str(tmp_path / "o"), "rollout.top_p=0.9"])
    cfg = args.cfg
    assert (cfg.data.dataset, cfg.episode.max_turns, cfg.episode.feedback, cfg.rollout.max_new_tokens) == ("starter", 3, "execution", 64)
    assert cfg.rollout.top_p == 0.9 and args.ks == [1, 4] and len(args.tasks) == 5 and args.samples == 4


@pytest.mark.e2e
def test_sampled_eval_end_to_end(tiny_model, tmp_path, capsys):
    out = tmp_path / "eval"
    result = cli_main(["eval", "--model", tiny_model, "--dataset", "starter", "--limit", "4", "--turns", "2",
                       "--samples", "2", "--temperature", "1.0", "--k", "1", "2", "--max-new-tokens", "16",
                       "--out", str(out), "rollout.num_workers=1", "model.max_model_len=512", "wandb.mode=disabled",
                       "episode.feedback=execution"])
    assert result is None  # the CLI returns nothing; everything is in the files
    for name in ("metrics.json", "table.md", "transitions.png", "episodes.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "metrics.json").read_text())
    m = data["metrics"]
    assert m["episodes"] == 8
    for t in (1, 2):
        assert 0.0 <= m[f"acc_t{t}"] <= 1.0
    for key in ("pass@1", "pass@2", "pass@1_t2", "pass@2_t2", "1@2", "2@4", "delta", "delta_i2c", "delta_c2i"):
        assert key in m, key
    assert 0.0 <= m["pass@1"] <= m["pass@2"] <= 1.0
    (table,) = data["transitions"]
    assert sum(table[x] for x in ("c2c", "c2i", "i2c", "i2i")) == 8
    assert sum(m[f"t1_t2_{x}"] for x in ("c2c", "c2i", "i2c", "i2i")) == 8
    # per task, per episode, per turn correctness: 4 tasks x 2 episodes, 1-2 turns each
    assert len(data["correct"]) == 4
    assert all(len(eps) == 2 and all(1 <= len(c) <= 2 for c in eps) for eps in data["correct"].values())
    printed = capsys.readouterr().out
    assert "Acc@t1" in printed and "pass@2" in printed and "2@4" in printed
    assert (out / "table.md").read_text().strip() in printed
    assert (out / "transitions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
