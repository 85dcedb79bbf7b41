"""`selfcorrect compare`: two evaluations of the same tasks, paired by task, on hand-made
metrics.json files (the format `selfcorrect eval` writes)."""
import json

import pytest

from launch.compare import compare_evaluations, load_evaluation, main
from rl.metrics import paired_comparisons

SETTINGS = {"dataset": "benchmark repair_v1", "split": "all", "limit": None, "tasks": 4, "samples_per_task": 1,
            "turns": 2, "environment": "seeded", "feedback": "execution", "temperature": 0.0, "top_p": 1.0,
            "max_new_tokens": 192, "stop_on_public_pass": False}
ROWS = {"A:faulty:1": {"kind": "faulty", "task": "A"}, "A:faulty:2": {"kind": "faulty", "task": "A"},
        "A:correct": {"kind": "correct", "task": "A"}, "B:faulty:1": {"kind": "faulty", "task": "B"}}


def evaluation(model: str, last: dict[str, bool], **settings) -> dict:
    """One greedy episode per row: its seeded turn 1 is right exactly for the correct rows."""
    correct = {row: [[ROWS[row]["kind"] == "correct", ok]] for row, ok in last.items()}
    return {"settings": {**SETTINGS, "model": model, **settings}, "correct": correct, "rows": ROWS, "metrics": {}}


BASE = evaluation("base", {"A:faulty:1": False, "A:faulty:2": False, "A:correct": True, "B:faulty:1": False})
TRAINED = evaluation("trained", {"A:faulty:1": True, "A:faulty:2": True, "A:correct": False, "B:faulty:1": False})


def test_fix_and_keep_rates_are_paired_over_rows():
    c = compare_evaluations(BASE, TRAINED)
    assert set(c) == {"acc_t1", "acc_t2", "fix_rate", "keep_rate"}
    fix, keep = c["fix_rate"], c["keep_rate"]
    assert (fix["before"], fix["after"], fix["b"], fix["c"]) == (0.0, pytest.approx(2 / 3), 0, 2)
    assert fix["p_value"] == pytest.approx(0.5)
    assert (keep["before"], keep["after"], keep["b"], keep["c"]) == (1.0, 0.0, 1, 0)
    # turn 1 is the seeded attempt, the same in both
    assert c["acc_t1"]["difference"] == 0.0 and c["acc_t1"]["within_noise"]


def test_without_rows_only_the_accuracies_are_compared():
    out = paired_comparisons(BASE["correct"], TRAINED["correct"], 2)
    assert set(out) == {"acc_t1", "acc_t2"}
    # per task weighs the same: A's three rows and B's one are four tasks here
    assert out["acc_t2"]["before"] == pytest.approx(1 / 4) and out["acc_t2"]["after"] == pytest.approx(2 / 4)


def test_different_settings_or_tasks_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"feedback: 'execution' vs 'instruction'"):
        compare_evaluations(BASE, evaluation("x", {r: True for r in ROWS}, feedback="instruction"))
    fewer = {**TRAINED, "correct": {k: v for k, v in TRAINED["correct"].items() if k != "B:faulty:1"}}
    with pytest.raises(ValueError, match=r"not of the same tasks: 1 tasks in only one of them, e.g. \['B:faulty:1'\]"):
        compare_evaluations(BASE, fewer)


def test_cli_prints_the_paired_table_and_writes_json(tmp_path, capsys):
    for name, result in (("base", BASE), ("trained", TRAINED)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(result))
    out = main([str(tmp_path / "base"), str(tmp_path / "trained"), "--json", str(tmp_path / "change.json")])
    printed = capsys.readouterr().out
    assert "| fix rate | 0.0 | 66.7 | +66.7 [" in printed and "| keep rate | 100.0 | 0.0 | -100.0 [" in printed
    assert json.loads((tmp_path / "change.json").read_text())["fix_rate"]["c"] == out["fix_rate"]["c"] == 2
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "base"), str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "missing: no metrics.json" in capsys.readouterr().err
    assert load_evaluation(tmp_path / "base" / "metrics.json")["settings"]["model"] == "base"
