"""The learning experiment: train the default model with recipe presets on a fixed task set for a
fixed budget, evaluate on held-out tasks before and after, and plot the reward curves.

    python bench/learning.py [--presets cocos score] [--steps 12] [--out docs/results] [key=value ...]
    python bench/learning.py --report RUN_DIR [RUN_DIR ...]    # rebuild the outputs from finished runs

Every preset gets the same tasks, budget, seed and evaluation: BUDGET below, then any extra
key=value overrides. The same 4 training tasks come back every step (so the curve measures the
policy, not which tasks a step drew), the 12 held-out ones are evaluated greedily before and after;
replies of up to 128 tokens, lr 1e-5, SCoRe switching stages half way; everything else is the
preset's. Writes <out>/learning.json, <out>/learning-rewards.png and prints a Markdown table.
"Rising beyond noise": a least-squares slope per step more than two standard errors above zero.
It is judged for each curve: the recipe's reward per episode and per turn (each turn is trained
on its own reward), and the shares of training episodes whose first and last programs pass every
test. The pass rates are on one scale across SCoRe's stages; its rewards are not, so they are
plotted but not fitted over a run that switches stages. The pass rates also show what
CoCoS's episode reward (which pays a wrong first attempt that gets fixed more than a right one
kept) does not on its own.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.train import train  # noqa: E402
from rl.config import load_config  # noqa: E402


# Sized for the 2-core CPU machine (about 35 minutes per preset, 2026-11-23). lr 1e-5 is the papers' rate.
BUDGET = ["data.limit=4", "rollout.tasks_per_step=4", "eval.max_tasks=12", "rollout.max_new_tokens=128",
          "algo.lr=1e-5", "reward.score_switch_step=6"]


def trend(values: list[float]) -> dict:
    """Least-squares slope of values against their index, its standard error, and the rise."""
    n = len(values)
    if n < 3:
        return {"slope": float("nan"), "stderr": float("nan"), "rise": float("nan"), "beyond_noise": False}
    xs = range(n)
    mx, my = (n - 1) / 2, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, values)) / sxx
    residual = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, values))
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return {"slope": slope, "stderr": stderr, "rise": slope * (n - 1), "beyond_noise": slope > 2 * stderr}


def run_preset(preset: str, steps: int, overrides: list[str], output_dir: str) -> dict:
    cfg = load_config(REPO / "configs" / f"{preset}.yaml",
                      [f"run.steps={steps}", f"run.name=learning-{preset}", f"run.output_dir={output_dir}",
                       "run.save_final=false", "wandb.mode=offline", *BUDGET, *overrides])
    start = time.monotonic()
    result = train(cfg)
    return summarize(Path(result["run_dir"]), preset, (time.monotonic() - start) / 60)


def curve_names(max_turns: int) -> list[tuple[str, str]]:
    """(metrics key, label) of every curve the bench plots and fits: the recipe's reward per
    episode and per turn (each turn is trained on its own), and the pass rates."""
    rewards = [("reward/mean", "episode reward")] + [(f"reward/turn{t}", f"turn-{t} reward") for t in range(1, max_turns + 1)]
    passes = [("train/acc_t1", "first program passes")] + ([(f"train/acc_t{max_turns}", "last program passes")] if max_turns > 1 else [])
    return rewards + passes


def summarize(run_dir: Path, preset: str, minutes: float) -> dict:
    """Curves, trends and the before/after evaluation of one finished run."""
    cfg = load_config(run_dir / "config.yaml")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    curves = {label: [r[key] for r in steps] for key, label in curve_names(cfg.episode.max_turns)}
    # SCoRe's rewards change definition at its stage switch: a line fitted across it measures
    # the switch, not learning. Only the pass rates are fitted over such a run.
    stages = [r.get("reward/score_stage", 0) for r in steps]
    switch = next((i + 1 for i in range(1, len(stages)) if stages[i] != stages[i - 1]), None)
    trends = {label: None if switch and "reward" in label else trend(values) for label, values in curves.items()}
    evaluation = json.loads((run_dir / "eval.json").read_text())
    if cfg.reward.name == "score" and cfg.reward.score_switch_step is not None and cfg.reward.score_switch_step >= cfg.run.steps:
        preset += " (stage I only)"
    return {"preset": preset, "run_dir": str(run_dir), "config": (run_dir / "config.yaml").read_text(), "minutes": minutes, "curves": curves,
            "trends": trends, "stage_switch_step": switch,
            "before": evaluation.get("before"), "after": evaluation.get("after"), "max_turns": cfg.episode.max_turns}


def from_run_dir(run_dir: Path) -> dict:
    """--report: a finished run, timed from its config (written first) to its eval.json (last)."""
    minutes = ((run_dir / "eval.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime) / 60
    return summarize(run_dir, run_dir.name.split("-")[1], minutes)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for col, r in enumerate(results):
        for label, values in r["curves"].items():
            ax = axes[0 if "reward" in label else 1][col]
            t = r["trends"][label]
            steps = list(range(1, len(values) + 1))
            line, = ax.plot(steps, values, "o-", markersize=3, label=label)
            if t is not None:
                mid, mean = (len(steps) + 1) / 2, sum(values) / len(values)
                ax.plot(steps, [mean + t["slope"] * (s - mid) for s in steps], "--", color=line.get_color(),
                        label=f"fit {t['slope']:+.3f}/step ± {t['stderr']:.3f}")
        if r["stage_switch_step"]:
            for ax in axes[:, col]:
                ax.axvline(r["stage_switch_step"] - 0.5, color="grey", linestyle=":", label="stage I → II")
        for row, ylabel in enumerate(("training reward", "share of training episodes")):
            axes[row][col].set_xlabel("learner step")
            axes[row][col].set_ylabel(ylabel)
            axes[row][col].legend(fontsize=7)
        axes[0][col].set_title(f"{r['preset']} ({r['minutes']:.0f} min)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: list[dict]) -> str:
    """Before/after held-out metrics, then each curve's trend: slope per step ± its standard
    error, marked "rising" when beyond noise."""
    lines = ["| preset | when | Acc@t1 | Acc@t2 | Δi→c | Δc→i |", "|---|---|---|---|---|---|"]
    for r in results:
        for when in ("before", "after"):
            rep = r[when] or {}
            cells = [f"{100 * rep[k]:.1f}" if k in rep else "–" for k in ("acc_t1", "acc_t2", "delta_i2c", "delta_c2i")]
            lines.append(f"| {r['preset']} | {when} | " + " | ".join(cells) + " |")
    labels = list(dict.fromkeys(label for r in results for label in r["trends"]))
    lines += ["", "| preset | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for r in results:
        cells = []
        for label in labels:
            t = r["trends"].get(label)
            if t is None:
                cells.append("– (not fitted: the reward changes at the stage switch)" if label in r["curves"] else "–")
            else:
                cells.append(f"{t['slope']:+.3f} ± {t['stderr']:.3f}" + (" **rising**" if t["beyond_noise"] else ""))
        lines.append(f"| {r['preset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cocos", "score"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--runs", default="runs/learning", help="where the training runs go")
    parser.add_argument("--report", nargs="+", metavar="RUN_DIR", help="only rebuild the outputs from these finished runs")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every preset")
    args = parser.parse_args()
    if args.report:
        results = [from_run_dir(Path(d)) for d in args.report]
    else:
        results = [run_preset(p, args.steps, args.overrides, args.runs) for p in args.presets]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Each result carries its run's whole config (what was run, whether now or rebuilt with --report).
    (out / "learning.json").write_text(json.dumps({"results": results}, indent=2))
    plot(results, out / "learning-rewards.png")
    print(table(results))


if __name__ == "__main__":
    main()
