"""Compare two evaluations of the same tasks (two `selfcorrect eval` outputs: a base model and a
trained one, or two recipes): the paired difference of Acc@t1 and Acc@tT, and on the repair
benchmark of the fix and keep rates, each with its 95 % task-bootstrap interval, the discordant
counts and the exact McNemar p-value; a difference whose interval includes 0 is reported as
within noise.

    selfcorrect compare runs/eval-base runs/eval-trained
    selfcorrect compare runs/eval-base runs/eval-trained --json change.json

The two evaluations must have run the same tasks the same way (dataset or benchmark, split,
limit, turns, feedback, samples, temperature, token budget); a difference is an error naming it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# What makes two evaluations comparable: everything in their settings but the model and the
# machine-level details (sandbox, isolation, the command line).
MUST_MATCH = ("dataset", "split", "limit", "tasks", "samples_per_task", "turns", "environment", "feedback",
              "temperature", "top_p", "max_new_tokens", "stop_on_public_pass")


class ComparisonError(ValueError):
    pass


def load_evaluation(path: str | Path) -> dict:
    """metrics.json of an evaluation folder (or the file itself)."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise ComparisonError(f"{path}: no metrics.json (the output folder of selfcorrect eval)")
    result = json.loads(file.read_text())
    if "correct" not in result or "settings" not in result:
        raise ComparisonError(f"{file}: not the metrics.json of selfcorrect eval (no per-task results)")
    return result


def compare_evaluations(before: dict, after: dict) -> dict[str, dict]:
    """The paired comparisons (rl/metrics.py:paired_comparisons) of two loaded evaluations."""
    from rl.metrics import paired_comparisons

    differ = [f"{k}: {before['settings'].get(k)!r} vs {after['settings'].get(k)!r}"
              for k in MUST_MATCH if before["settings"].get(k) != after["settings"].get(k)]
    if differ:
        raise ComparisonError("the evaluations did not run the same way: " + "; ".join(differ))
    try:
        return paired_comparisons(before["correct"], after["correct"], before["settings"]["turns"], before.get("rows") or None)
    except ValueError as exc:
        raise ComparisonError(str(exc)) from None


def main(argv: list[str] | None = None) -> dict:
    from rl.report import comparison_label, comparison_table

    parser = argparse.ArgumentParser(prog="selfcorrect compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="output folder (or metrics.json) of the first evaluation: the baseline")
    parser.add_argument("after", help="output folder (or metrics.json) of the second evaluation")
    parser.add_argument("--json", help="also write the comparisons to this file")
    args = parser.parse_args(argv)
    try:
        before, after = load_evaluation(args.before), load_evaluation(args.after)
        comparisons = compare_evaluations(before, after)
    except ComparisonError as exc:
        parser.exit(2, f"selfcorrect compare: error: {exc}\n")
    s = before["settings"]
    print(f"{s['dataset']} ({s['tasks']} tasks, {s['turns']} turn(s), {s['feedback']} feedback): "
          f"{s['model']} ({args.before}) -> {after['settings']['model']} ({args.after})")
    print(comparison_table(comparisons))
    for name, c in comparisons.items():
        print(f"{comparison_label(name)}: {c['summary']}")
    if args.json:
        Path(args.json).write_text(json.dumps(comparisons, indent=2))
    return comparisons


if __name__ == "__main__":
    main(sys.argv[1:])
