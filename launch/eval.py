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

from launch.runtime import held_out_tasks, resolve_model
from rl.config import Config, ConfigError, load_config


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
    environment: str       # what the episodes run in: eval.environment, or seeded on a benchmark (eval.benchmark)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selfcorrect eval",
        description="Evaluate multi-turn self-correction of a model on a task set (Ray + vLLM, no learner). "
                    "Flags override the matching config keys; any other key can be set as section.key=value.",
    )
    p.add_argument("--model", help="HF folder, hub id or 'smollm2-135m-instruct' (model.path; default: the config's)")
    p.add_argument("--dataset", help="starter, humaneval, leetcode, jsonl (with data.path=FILE), jsonl:FILE, or module:function (data.dataset)")
    p.add_argument("--benchmark", help="the held-out repair benchmark instead of a dataset: repair_v1 or a JSONL file of "
                                        "seeded first attempts (docs/repair_benchmark.md); reports the fix and keep rates")
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
    for override in args.overrides:   # keys only training reads: setting them here would change nothing
        key = override.split("=", 1)[0].strip()
        if key in TRAINING_ONLY_KEYS:
            fail(f"{override}: {key} {TRAINING_ONLY_KEYS[key]}")
    out = Path(args.out) if args.out else Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"--out {out}: exists and is not an empty folder")

    # The flags become overrides applied last (JSON is YAML: values come back exactly as given),
    # so the config is validated once, as a whole, with everything in place.
    flags = [f"{key}={json.dumps(value)}" for key, value in (
        ("model.path", args.model), ("data.dataset", args.dataset), ("episode.max_turns", args.turns),
        ("episode.feedback", args.feedback), ("rollout.max_new_tokens", args.max_new_tokens),
        ("eval.temperature", args.temperature), ("eval.benchmark", args.benchmark),
    ) if value is not None]
    try:
        cfg = load_config(args.config, [*args.overrides, *flags])
        tasks, environment = held_out_tasks(cfg, args.split, args.limit)
        if not tasks:
            raise ConfigError(f"data.dataset: {cfg.data.dataset!r} has no tasks in split {args.split!r} "
                              f"(data.heldout_fraction={cfg.data.heldout_fraction:g})")
        model_path = resolve_model(cfg)
    except ConfigError as exc:
        fail(f"config error: {exc}")
    return EvalArgs(cfg, args.split, args.limit, args.samples, args.temperature, ks, out, args.chunk_tasks,
                    tasks, model_path, argv, environment)


TRAINING_ONLY_KEYS = {
    "episode.environment": "is the training episodes' environment; selfcorrect eval runs eval.environment "
                           "(self_correction; seeded with --benchmark, whose rows are the seeded first attempts)",
    "episode.seeded_first_turns": "is the repair curriculum's share of seeded training tasks; to evaluate from "
                                  "seeded first attempts use --benchmark",
    "episode.seeded_correct_turns": "is the repair curriculum's share of training tasks seeded with a correct "
                                    "program; to evaluate from seeded first attempts use --benchmark",
}



def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        return evaluate(args)
    except ConfigError as exc:  # input the checks above could only see once it was loaded
        print(f"selfcorrect eval: config error: {exc}", file=sys.stderr)
        sys.exit(2)


def evaluate(args: EvalArgs) -> dict:
    """Runs the evaluation; returns the contents of metrics.json."""
    from launch.runtime import Runtime, evaluate as run_evaluation
    from rl.episode import write_episodes
    from rl.metrics import benchmark_rows, correctness, transition_counts
    from rl.report import eval_report, plot_transitions

    cfg, turns = args.cfg, args.cfg.episode.max_turns
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Runtime(cfg, args.model_path, learner=False, log_dir=str(args.out / "logs")) as rt:
        ready = time.monotonic()
        env = rt.environment(args.environment, args.tasks)
        episodes, metrics = run_evaluation(rt, env, args.tasks, samples=args.samples, temperature=args.temperature,
                                           ks=args.ks, chunk_tasks=args.chunk_tasks,
                                           progress=lambda line: print(f"[eval] {line}", flush=True))
        isolation, sandbox_info = rt.executor.isolation, rt.executor.info
    wall_s = time.monotonic() - started

    by_task = correctness(episodes)
    turns_run = [t for e in episodes for t in e.turns]
    result = {
        "metrics": metrics,
        "transitions": [{"from_turn": t + 1, "to_turn": t + 2, **table}
                        for t, table in enumerate(transition_counts([c for cs in by_task.values() for c in cs], turns))],
        "settings": {
            "model": cfg.model.path, "model_path": args.model_path,
            "dataset": f"benchmark {cfg.eval.benchmark}" if cfg.eval.benchmark else cfg.data.dataset,
            "split": args.split, "limit": args.limit, "tasks": len(by_task), "samples_per_task": args.samples,
            "turns": turns, "environment": args.environment, "feedback": cfg.episode.feedback,
            "temperature": args.temperature, "top_p": cfg.rollout.top_p if args.temperature > 0 else 1.0,
            "max_new_tokens": cfg.rollout.max_new_tokens, "ks": args.ks,
            "stop_on_public_pass": cfg.episode.stop_on_public_pass, "isolation": isolation, "sandbox": sandbox_info,
            "command": "selfcorrect eval " + " ".join(args.argv),
        },
        "timing": {"wall_s": wall_s, "startup_s": ready - started, "episodes_s": wall_s - (ready - started)},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "config": cfg.to_dict(),
        # per task, per episode, per turn: whether the program passed every test (as run, not padded)
        "correct": by_task,
        # a benchmark's row id -> its kind and base task (what `selfcorrect compare` pairs the fix and keep rates by)
        "rows": benchmark_rows(episodes),
        "episode_turns": len(turns_run) / len(episodes),
        "no_code_fraction": sum(t.code is None for t in turns_run) / len(turns_run),
    }
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_episodes(args.out / "episodes.jsonl", episodes)
    table = eval_report(result)
    (args.out / "table.md").write_text(table + "\n")
    plot_transitions(result, args.out / "transitions.png")
    print(table)
    print(f"wall time {wall_s:.0f} s (start-up {ready - started:.0f} s); outputs in {args.out}")
    return result


if __name__ == "__main__":
    main()
