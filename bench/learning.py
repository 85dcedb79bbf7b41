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
It is judged on the recipe's reward and on the shares of training episodes whose first and last
programs pass every test; those are on one scale across SCoRe's stages, whose rewards are not,
and they are what CoCoS's reward (which pays a wrong first attempt that gets fixed more than a
right one kept) does not show on its own.
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


def summarize(run_dir: Path, preset: str, minutes: float) -> dict:
    """Curves, trends and the before/after evaluation of one finished run."""
    cfg = load_config(run_dir / "config.yaml")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    curve = [r["reward/mean"] for r in steps]
    first = [r["train/acc_t1"] for r in steps]
    solved = [r[f"train/acc_t{cfg.episode.max_turns}"] for r in steps]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    return {"preset": preset, "run_dir": str(run_dir), "minutes": minutes, "reward": curve,
            "first": first, "solved": solved,
            "trend": trend(curve), "first_trend": trend(first), "solved_trend": trend(solved),
            "before": evaluation.get("before"), "after": evaluation.get("after"), "max_turns": cfg.episode.max_turns}


def from_run_dir(run_dir: Path) -> dict:
    """--report: a finished run, timed from its config (written first) to its eval.json (last)."""
    minutes = ((run_dir / "eval.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime) / 60
    return summarize(run_dir, run_dir.name.split("-")[1], minutes)


CURVES = (("reward", "trend", "recipe's reward"), ("first", "first_trend", "first program passes"),
          ("solved", "solved_trend", "last program passes"))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 6.4), squeeze=False)
    for col, r in enumerate(results):
        for key, trend_key, label in CURVES:
            ax = axes[0 if key == "reward" else 1][col]
            values, t = r[key], r[trend_key]
            steps = list(range(1, len(values) + 1))
            line, = ax.plot(steps, values, "o-", label=label)
            mid, mean = (len(steps) + 1) / 2, sum(values) / len(values)
            ax.plot(steps, [mean + t["slope"] * (s - mid) for s in steps], "--", color=line.get_color(),
                    label=f"fit: {t['slope']:+.3f}/step ± {t['stderr']:.3f}")
            ax.set_xlabel("learner step")
            ax.set_ylabel("training reward" if key == "reward" else "share of training episodes")
            ax.legend(fontsize=7)
        axes[0][col].set_title(f"{r['preset']} ({r['minutes']:.0f} min)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: list[dict]) -> str:
    lines = ["| preset | when | Acc@t1 | Acc@t2 | Δi→c | Δc→i | " + " | ".join(f"{label} (trend per step)" for _, _, label in CURVES) + " |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(t):
        return f"{t['slope']:+.3f} ± {t['stderr']:.3f} ({'rising' if t['beyond_noise'] else 'not beyond noise'})"

    for r in results:
        for when in ("before", "after"):
            rep = r[when] or {}
            cells = [f"{100 * rep[k]:.1f}" if k in rep else "–" for k in ("acc_t1", "acc_t2", "delta_i2c", "delta_c2i")]
            extra = [cell(r[trend_key]) for _, trend_key, _ in CURVES] if when == "after" else ["", "", ""]
            lines.append(f"| {r['preset']} | {when} | " + " | ".join(cells + extra) + " |")
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
    (out / "learning.json").write_text(json.dumps({"steps": args.steps, "overrides": BUDGET + args.overrides, "results": results}, indent=2))
    plot(results, out / "learning-rewards.png")
    print(table(results))


if __name__ == "__main__":
    main()
