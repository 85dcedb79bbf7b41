"""The learning experiment: train the default model with recipe presets on a fixed task set for a
fixed budget, evaluate on held-out tasks before and after, and plot the reward curves.

    python bench/learning.py [--presets cocos score] [--steps 10] [--out docs/results] [key=value ...]

Every preset gets the same tasks, budget, seed and evaluation: BUDGET below (12 training tasks,
12 held-out ones, replies of up to 128 tokens, lr 1e-5, SCoRe switching stages at step 5), then
any extra key=value overrides. Writes <out>/learning.json, <out>/learning-rewards.png and prints a Markdown table.
"Rising beyond noise" is judged by a least-squares slope of the training reward per step and its
standard error: the rise over the run (slope x steps) against two standard errors of it.
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


# Sized for the 2-core CPU machine: about 28 minutes per preset (measured 2026-11-23). lr 1e-5 is the papers' rate.
BUDGET = ["data.limit=12", "rollout.max_new_tokens=128", "algo.lr=1e-5", "reward.score_switch_step=5"]


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
    minutes = (time.monotonic() - start) / 60
    rows = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    curve = [r["reward/mean"] for r in rows if "reward/mean" in r]
    return {"preset": preset, "run_dir": result["run_dir"], "minutes": minutes, "reward": curve,
            "acc_t1_train": [r.get("train/acc_t1") for r in rows if "reward/mean" in r],
            "trend": trend(curve), "before": result.get("before"), "after": result.get("after"),
            "max_turns": cfg.episode.max_turns}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        steps = list(range(1, len(r["reward"]) + 1))
        ax.plot(steps, r["reward"], "o-", label="mean episode reward")
        t = r["trend"]
        mid = (len(steps) + 1) / 2
        mean = sum(r["reward"]) / len(r["reward"])
        ax.plot(steps, [mean + t["slope"] * (s - mid) for s in steps], "--",
                label=f"fit: {t['slope']:+.3f}/step ± {t['stderr']:.3f}")
        ax.set_title(f"{r['preset']} ({r['minutes']:.0f} min)")
        ax.set_xlabel("learner step")
        ax.set_ylabel("training reward")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: list[dict]) -> str:
    lines = ["| preset | when | Acc@t1 | Acc@t2 | Δi→c | Δc→i | reward trend (per step) | rising beyond noise |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["trend"]
        for when in ("before", "after"):
            rep = r[when] or {}
            cells = [f"{100 * rep[k]:.1f}" if k in rep else "–" for k in ("acc_t1", "acc_t2", "delta_i2c", "delta_c2i")]
            extra = [f"{t['slope']:+.4f} ± {t['stderr']:.4f}", "yes" if t["beyond_noise"] else "no"] if when == "after" else ["", ""]
            lines.append(f"| {r['preset']} | {when} | " + " | ".join(cells + extra) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cocos", "score"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--runs", default="runs/learning", help="where the training runs go")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every preset")
    args = parser.parse_args()
    results = [run_preset(p, args.steps, args.overrides, args.runs) for p in args.presets]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps({"steps": args.steps, "overrides": BUDGET + args.overrides, "results": results}, indent=2))
    plot(results, out / "learning-rewards.png")
    print(table(results))


if __name__ == "__main__":
    main()
