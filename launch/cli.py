"""The `selfcorrect` command."""
from __future__ import annotations

import sys

USAGE = """usage: selfcorrect <command> [options]

commands:
  train    train a policy (selfcorrect train --help lists every config key)
  eval     evaluate multi-turn self-correction: Acc@t, Δ, transitions, pass@k, n@k (selfcorrect eval --help)
  compare  two evaluations of the same tasks: paired differences with intervals and McNemar p (selfcorrect compare A B)
  report   a finished run's curves and tables as PNGs and one Markdown page, without W&B (selfcorrect report RUN_DIR)
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command == "train":
        from launch.train import main as train_main
        train_main(rest)
    elif command == "eval":
        from launch.eval import main as eval_main
        eval_main(rest)
    elif command == "compare":
        from launch.compare import main as compare_main
        compare_main(rest)
    elif command == "report":
        from launch.report import main as report_main
        report_main(rest)
    else:
        sys.exit(f"selfcorrect: unknown command {command!r}\n{USAGE}")
