"""Evaluate a policy's self-correction: run episodes of up to N turns on a task set (no learner)
and report Acc@t per turn, Δ, Δi→c, Δc→i, turn-to-turn transitions, pass@k and n@k.

    selfcorrect eval --model smollm2-135m-instruct --dataset humaneval --turns 2
    selfcorrect eval --model runs/default-X/final --dataset starter --split heldout --samples 5 --temperature 0.8 --k 1 5
    python -m launch.eval --model PATH --dataset starter --config configs/default.yaml sandbox.workers=4

Writes <out>/metrics.json, <out>/table.md, <out>/transitions.png and <out>/episodes.jsonl, and
prints the table. The metrics are defined in rl/metrics.py and docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launch.inputs import load_split, resolve_model, start_sandbox
from rl.config import Config, ConfigError, load_config
from rl.metrics import TRANSITIONS, group_by_task, per_turn_report, sampled_report, transition_counts


@dataclass
class EvalArgs:
    cfg: Config
    split: str
    limit: int | None
    samples: int
    temperature: float
    ks: list[int]
    out: Path
    chunk_tasks: int
    tasks: list            # loaded and checked before anything starts
    model_path: str
    argv: list[str]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selfcorrect eval",
        description="Evaluate multi-turn self-correction of a model on a task set (Ray + vLLM, no learner). "
                    "Flags override the matching config keys; any other key can be set as section.key=value.",
    )
    p.add_argument("--model", help="HF folder, hub id or 'smollm2-135m-instruct' (model.path; default: the config's)")
    p.add_argument("--dataset", help="starter, humaneval, leetcode, jsonl (with data.path=FILE), jsonl:FILE, or module:function (data.dataset)")
    p.add_argument("--turns", type=int, help="turns per episode (episode.max_turns)")
    p.add_argument("--split", choices=("heldout", "train", "all"), default="all",
                   help="which part of the data.heldout_fraction / data.split_seed split to evaluate (default: all)")
    p.add_argument("--limit", type=int, help="evaluate a deterministic subset of at most this many tasks")
    p.add_argument("--feedback", choices=("instruction", "execution"), help="feedback between turns (episode.feedback)")
    p.add_argument("--samples", type=int, default=1, help="episodes per task (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); --samples > 1 needs > 0")
    p.add_argument("--k", type=int, nargs="+", help="k values for pass@k and n@k, each <= --samples (default: 1 and --samples)")
    p.add_argument("--max-new-tokens", type=int, help="token budget of one turn's reply (rollout.max_new_tokens)")
    p.add_argument("--out", help="output folder (default runs/eval-<timestamp>); must not exist or be empty")
    p.add_argument("--chunk-tasks", type=int, default=32, help="tasks whose episodes run as one batch; progress is printed per chunk (default 32)")
    p.add_argument("--config", help="YAML config file (see configs/); its model/data/episode/rollout/sandbox/ray keys apply")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, applied after --config and before the flags")
    return p


def parse_args(argv: list[str] | None = None) -> EvalArgs:
    """Every check on user input happens here, before Ray or vLLM start; bad input exits with 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(message: str):
        parser.exit(2, f"selfcorrect eval: error: {message}\n")

    if args.samples < 1:
        fail(f"--samples must be at least 1, got {args.samples}")
    if not 0 <= args.temperature < float("inf"):
        fail(f"--temperature must be a number >= 0, got {args.temperature}")
    if args.samples > 1 and args.temperature == 0:
        fail(f"--samples {args.samples} with --temperature 0: greedy decoding gives {args.samples} identical episodes; set --temperature > 0")
    ks = sorted(set(args.k)) if args.k else sorted({1, args.samples})
    if ks[0] < 1 or ks[-1] > args.samples:
        fail(f"--k {' '.join(map(str, args.k))}: each k must be between 1 and --samples ({args.samples})")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be at least 1, got {args.limit}")
    if args.chunk_tasks < 1:
        fail(f"--chunk-tasks must be at least 1, got {args.chunk_tasks}")
    out = Path(args.out) if args.out else Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"--out {out}: exists and is not an empty folder")

    # The flags become overrides applied last (JSON is YAML: values come back exactly as given),
    # so the config is validated once, as a whole, with everything in place.
    flags = [f"{key}={json.dumps(value)}" for key, value in (
        ("model.path", args.model), ("data.dataset", args.dataset), ("episode.max_turns", args.turns),
        ("episode.feedback", args.feedback), ("rollout.max_new_tokens", args.max_new_tokens),
        ("eval.temperature", args.temperature),
    ) if value is not None]
    try:
        cfg = load_config(args.config, [*args.overrides, *flags])
        if cfg.episode.revisions_per_attempt != 1:
            raise ConfigError("episode.revisions_per_attempt: evaluation needs independent episodes (1)")
        tasks = _load_tasks(cfg, args.split, args.limit)
        model_path = resolve_model(cfg)
    except ConfigError as exc:
        fail(f"config error: {exc}")
    return EvalArgs(cfg, args.split, args.limit, args.samples, args.temperature, ks, out, args.chunk_tasks,
                    tasks, model_path, argv)


def _load_tasks(cfg: Config, split: str, limit: int | None) -> list:
    tasks = load_split(cfg, split, limit)
    if not tasks:
        raise ConfigError(f"data.dataset: {cfg.data.dataset!r} has no tasks in split {split!r} "
                          f"(data.heldout_fraction={cfg.data.heldout_fraction:g})")
    return tasks


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        return evaluate(args)
    except ConfigError as exc:  # input the checks above could only see once it was loaded
        print(f"selfcorrect eval: config error: {exc}", file=sys.stderr)
        sys.exit(2)


def evaluate(args: EvalArgs) -> dict:
    """Runs the evaluation; returns the contents of metrics.json."""
    import ray
    from transformers import AutoTokenizer

    from envs.episode import ChatFormat
    from rl.cluster import RolloutGroup, init_ray
    from rl.episodes import run_episodes, turn_scores
    from rl.rollout import SamplingSpec

    cfg, turns = args.cfg, args.cfg.episode.max_turns
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    chat = ChatFormat(tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    started_ray = not ray.is_initialized()
    if started_ray:
        init_ray(cfg)
    executor = None
    try:
        executor = start_sandbox(cfg)
        rollout = RolloutGroup(cfg, args.model_path)
        rollout.node_ids()  # returns once every worker's vLLM engine is up: start-up is timed apart
        ready = time.monotonic()
        top_p = cfg.rollout.top_p if args.temperature > 0 else 1.0
        spec = SamplingSpec(1, args.temperature, top_p, cfg.rollout.max_new_tokens)
        episodes = []
        for i in range(0, len(args.tasks), args.chunk_tasks):
            chunk = args.tasks[i:i + args.chunk_tasks]
            episodes += run_episodes(chunk, args.samples, rollout.generate, executor, chat, tokenizer,
                                     cfg.episode, cfg.sandbox, spec, 0, cfg.model.max_model_len)
            done = min(i + args.chunk_tasks, len(args.tasks))
            acc = sum(turn_scores(e)[-1].correct for e in episodes) / len(episodes)
            print(f"[eval] {done}/{len(args.tasks)} tasks, {len(episodes)} episodes, "
                  f"final-turn accuracy so far {100 * acc:.1f}%, {time.monotonic() - started:.0f} s", flush=True)
        isolation, sandbox_info = executor.isolation, executor.info
    finally:
        if executor is not None:
            executor.close()
        if started_ray:
            ray.shutdown()
    wall_s = time.monotonic() - started

    scores = [turn_scores(e) for e in episodes]
    correct = [[s.correct for s in ep] for ep in scores]
    by_task = group_by_task([e.task.task_id for e in episodes], correct)
    metrics = {**per_turn_report(correct, turns), **sampled_report(list(by_task.values()), turns, args.ks)}
    result = {
        "metrics": metrics,
        "transitions": [{"from_turn": t + 1, "to_turn": t + 2, **table}
                        for t, table in enumerate(transition_counts(correct, turns))],
        "settings": {
            "model": cfg.model.path, "model_path": args.model_path, "dataset": cfg.data.dataset,
            "split": args.split, "limit": args.limit, "tasks": len(by_task), "samples_per_task": args.samples,
            "turns": turns, "feedback": cfg.episode.feedback, "temperature": args.temperature,
            "top_p": spec.top_p, "max_new_tokens": cfg.rollout.max_new_tokens, "ks": args.ks,
            "stop_on_public_pass": cfg.episode.stop_on_public_pass, "isolation": isolation, "sandbox": sandbox_info,
            "command": "selfcorrect eval " + " ".join(args.argv),
        },
        "timing": {"wall_s": wall_s, "startup_s": ready - started, "episodes_s": wall_s - (ready - started)},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "config": cfg.to_dict(),
        # per task, per episode, per turn: whether the program passed every test (as run, not padded)
        "correct": by_task,
        "episode_turns": sum(len(e.turns) for e in episodes) / len(episodes),
        "no_code_fraction": sum(not s.has_code for ep in scores for s in ep) / sum(len(ep) for ep in scores),
    }
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_episodes(args.out / "episodes.jsonl", episodes, scores)
    table = format_eval_table(result)
    (args.out / "table.md").write_text(table + "\n")
    plot_transitions(result, args.out / "transitions.png")
    print(table)
    print(f"wall time {wall_s:.0f} s (start-up {ready - started:.0f} s); outputs in {args.out}")
    return result


def write_episodes(path: Path, episodes, scores) -> None:
    """One JSON line per episode: each turn's reply, extracted program and test outcome."""
    with path.open("w") as f:
        for e, ep_scores in zip(episodes, scores):
            f.write(json.dumps({
                "task_id": e.task.task_id, "sample_index": e.sample_index, "feedback": e.feedback,
                "turns": [{"text": t.text, "code": t.code, "finish_reason": t.finish_reason, "correct": s.correct,
                           "hidden_passed": s.hidden_passed, "hidden_total": s.hidden_total,
                           "public_passed": s.public_passed, "public_total": s.public_total}
                          for t, s in zip(e.turns, ep_scores)],
            }) + "\n")


def format_eval_table(result: dict) -> str:
    """The Markdown report: settings line, Acc@t and Δs, transition counts, pass@k and n@k."""
    m, s = result["metrics"], result["settings"]
    turns, ks = s["turns"], s["ks"]
    decoding = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']:g}, top-p {s['top_p']:g}"
    lines = [
        f"**{s['dataset']}** ({s['split']}, {s['tasks']} tasks × {s['samples_per_task']} episode(s), "
        f"{turns} turn(s), {s['feedback']} feedback, {decoding}, {s['max_new_tokens']} new tokens/turn); "
        f"model `{s['model']}`. Percentages; {int(m['episodes'])} episodes.",
        "",
    ]
    cols = [(f"Acc@t{t + 1}", f"{100 * m[f'acc_t{t + 1}']:.1f}") for t in range(turns)]
    if turns > 1:
        cols += [(f"Δ(t1,t{turns})", f"{100 * m['delta']:+.1f}"), ("Δi→c", f"{100 * m['delta_i2c']:.1f}"),
                 ("Δc→i", f"{100 * m['delta_c2i']:.1f}")]
    lines += _md_table([c for c, _ in cols], [[v for _, v in cols]])
    if turns > 1:
        lines += ["", "Transitions between consecutive turns (episodes; early stops keep their last program):", ""]
        rows = [[f"t{tr['from_turn']}→t{tr['to_turn']}", *(str(tr[x]) for x in TRANSITIONS),
                 f"{100 * (tr['i2c'] - tr['c2i']) / max(m['episodes'], 1):+.1f}"] for tr in result["transitions"]]
        lines += _md_table(["turns", "c→c", "c→i", "i→c", "i→i", "Δ"], rows)
    lines += ["", f"pass@k at each turn (unbiased, from {s['samples_per_task']} episode(s) per task) and "
                  f"n@k (n episodes of ≤ {turns} turns = n·{turns} samples; ≥ 1 of n final programs correct):", ""]
    header = ["turn", *(f"pass@{k}" for k in ks)]
    rows = [[f"t{t + 1}", *(f"{100 * m[f'pass@{k}_t{t + 1}']:.1f}" for k in ks)] for t in range(turns)]
    lines += _md_table(header, rows)
    lines += [""]
    lines += _md_table([f"{k}@{k * turns}" for k in ks], [[f"{100 * m[f'{k}@{k * turns}']:.1f}" for k in ks]])
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def plot_transitions(result: dict, path: Path) -> None:
    """Left: Acc@t per turn. Right: for each consecutive turn pair, four bars: the share of
    episodes c→c / i→c / c→i / i→i, each labelled with its episode count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, s = result["metrics"], result["settings"]
    turns, n = s["turns"], max(int(m["episodes"]), 1)
    fig, (ax_acc, ax_tr) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, max(turns - 1, 1) + 0.6]})
    xs = list(range(1, turns + 1))
    acc = [100 * m[f"acc_t{t}"] for t in xs]
    ax_acc.plot(xs, acc, marker="o", color="#1f4e79", linewidth=2)
    for x, y in zip(xs, acc):
        ax_acc.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=10)
    ax_acc.set_xticks(xs, [f"t{t}" for t in xs])
    ax_acc.set_xlim(0.5, turns + 0.5)
    top = max(acc + [1.0])
    ax_acc.set_ylim(0, min(100, top * 1.3 + 2))
    ax_acc.set_ylabel("Acc@t (% of episodes correct)")
    ax_acc.set_title("Accuracy after each turn")
    ax_acc.grid(axis="y", alpha=0.3)

    styles = [("c2c", "correct → correct", "#2e7d32"), ("i2c", "incorrect → correct", "#66bb6a"),
              ("c2i", "correct → incorrect", "#e53935"), ("i2i", "incorrect → incorrect", "#9e9e9e")]
    pairs = result["transitions"]
    if pairs:
        # Grouped rather than stacked: at low accuracy i→i dwarfs the rest, and the transitions
        # that matter (i→c, c→i) would be slivers. Each bar is labelled with its episode count.
        width = 0.2
        top = max(100 * p[key] / n for p in pairs for key, _, _ in styles)
        for j, (key, label, color) in enumerate(styles):
            xs_j = [i + (j - 1.5) * width for i in range(len(pairs))]
            heights = [100 * p[key] / n for p in pairs]
            ax_tr.bar(xs_j, heights, width=width * 0.92, color=color, label=label)
            for x, h, p in zip(xs_j, heights, pairs):
                ax_tr.text(x, h + top * 0.015, str(p[key]), ha="center", va="bottom", fontsize=9)
        ax_tr.set_xticks(range(len(pairs)), [f"turn {p['from_turn']} → turn {p['to_turn']}" for p in pairs])
        ax_tr.set_xlim(-0.6, len(pairs) - 0.4)
        ax_tr.set_ylim(0, min(100, top * 1.15) + 1)
        ax_tr.set_ylabel("% of episodes")
        ax_tr.set_title("Turn-to-turn transitions (bar labels: episode counts)")
        ax_tr.grid(axis="y", alpha=0.3)
        ax_tr.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    else:
        ax_tr.axis("off")
        ax_tr.text(0.5, 0.5, "one turn: no transitions", ha="center", va="center")
    decoding = "greedy" if s["temperature"] == 0 else f"T={s['temperature']:g}"
    fig.suptitle(f"{s['dataset']} ({s['split']}, {s['tasks']} tasks × {s['samples_per_task']}), {s['feedback']} feedback, "
                 f"{decoding} — {Path(str(s['model'])).name}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
