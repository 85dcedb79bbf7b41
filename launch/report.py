"""`selfcorrect report RUN_DIR`: the run's dashboard without W&B — its curves as PNGs and one
Markdown page, rebuilt from the files every run writes (metrics.jsonl, tables/step-N.json,
eval.json, config.yaml).

    selfcorrect report runs/default-20261201-120000            # writes RUN_DIR/report/
    selfcorrect report runs/default-20261201-120000 --out somewhere
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (title, metric keys) of each chart; a chart whose keys the run never logged is left out
CHARTS = [
    ("reward", ["reward/mean", "reward/turn1", "reward/turn2", "reward/turn3"]),
    ("training accuracy", ["train/acc_t1", "train/acc_t2", "train/acc_t3", "repair/fixed", "repair/kept"]),
    ("self-correction", ["train/delta", "train/delta_i2c", "train/delta_c2i"]),
    ("learner", ["learner/kl", "kl/reward_mean", "learner/entropy", "learner/clip_fraction", "learner/grad_norm"]),
    ("seconds per step", ["time/generation", "time/execution", "time/passes", "time/training", "time/push", "time/step"]),
]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="selfcorrect report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory (runs/<name>-<timestamp>)")
    parser.add_argument("--out", help="output folder (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        parser.exit(2, f"selfcorrect report: error: {run_dir} has no metrics.jsonl: not a run directory\n")
    out = write_report(run_dir, Path(args.out) if args.out else run_dir / "report")
    print(f"report: {out / 'report.md'}")
    return out


def write_report(run_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from rl.report import _md_table, accuracy_table, comparison_label, comparison_table, repair_table

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "weight_version" in r]
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Run `{run_dir.name}`", "", f"{len(steps)} training steps; files in `{run_dir}`.", ""]

    for title, keys in CHARTS:
        keys = [k for k in keys if any(k in s for s in steps)]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for key in keys:
            points = [(s["step"], s[key]) for s in steps if key in s]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = title.replace(" ", "_") + ".png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        lines += [f"## {title}", "", f"![{title}]({name})", ""]

    if (run_dir / "eval.json").is_file():
        reports = json.loads((run_dir / "eval.json").read_text())
        evaluations = {k: v for k, v in reports.items() if k in ("before", "after")}
        turns = max((int(k[5:]) for r in evaluations.values() for k in r if k.startswith("acc_t") and k[5:].isdigit()), default=1)
        lines += ["## Held-out evaluation", "", accuracy_table(evaluations, turns, "held-out"), ""]
        if any("fix_rate" in r or "keep_rate" in r for r in evaluations.values()):   # on a benchmark (eval.benchmark)
            lines += [repair_table(evaluations), ""]
        if "comparison" in reports:
            lines += [comparison_table(reports["comparison"]), ""]
            lines += [f"- {comparison_label(name)}: {c['summary']}" for name, c in reports["comparison"].items()] + [""]

    tables = sorted((run_dir / "tables").glob("step-*.json"))
    if tables:
        transitions = []
        for path in tables:
            for row in json.loads(path.read_text())["transitions"]["rows"]:
                transitions.append([path.stem.split("-")[1].lstrip("0") or "0", *map(str, row)])
        lines += ["## Turn-to-turn transitions per step (sampled episodes)", "",
                  *_md_table(["step", "from turn", "to turn", "c→c", "c→i", "i→c", "i→i"], transitions), ""]
        last = json.loads(tables[-1].read_text())["episodes"]
        lines += [f"## Sample episodes of the last step ({tables[-1].stem})", "",
                  *_md_table(last["columns"], [[_cell(v) for v in row] for row in last["rows"]]), ""]
    (out / "report.md").write_text("\n".join(lines))
    return out


def _cell(value) -> str:
    """A table cell on one line: programs and feedback keep their line breaks as ⏎."""
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ⏎ ")[:300]


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
