"""The training driver, orchestration only: task -> episode -> record -> advantages -> loss ->
weights, repeated, with a held-out evaluation before and after. Each stage lives in its own
module (docs/design.md); this file only calls them in order and logs.

    selfcorrect train --config configs/default.yaml rollout.temperature=0.8
    python -m launch.train --config configs/default.yaml      (the form `ray job submit -- ...` runs)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from rl.config import Config, ConfigError, describe, load_config


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="selfcorrect train",
        description="Train a policy to correct its own programs with turn-level RL (Ray + vLLM + DeepSpeed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configuration keys (set in YAML under their section, or as section.key=value):\n\n" + describe(),
    )
    parser.add_argument("--config", help="YAML file with config sections (see configs/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, applied after --config")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        parser.exit(2, f"selfcorrect: config error: {exc}\n")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    try:
        train(cfg)
    except ConfigError as exc:  # input the checks above could only see once it was loaded
        print(f"selfcorrect: config error: {exc}", file=sys.stderr)
        sys.exit(2)


def train(cfg: Config) -> dict:
    """Runs the whole job; returns {'run_dir', 'before', 'after', 'comparison'} (the evaluation
    reports, and the paired after − before differences when both ran)."""
    from launch.runtime import Runtime, load_split, resolve_model
    from rl.report import accuracy_table, comparison_table
    from rl.tracking import Tracker

    # Everything that can fail on user input fails here, before Ray or vLLM start.
    train_tasks = load_split(cfg, "train", cfg.data.limit)
    eval_tasks = load_split(cfg, "heldout", cfg.eval.max_tasks or cfg.data.limit)
    if not train_tasks:
        raise ConfigError(f"data.dataset: {cfg.data.dataset!r} has no training tasks")
    model_path = resolve_model(cfg)

    run_dir = Path(cfg.run.output_dir) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with Runtime(cfg, model_path, learner=True, run_name=run_dir.name) as rt:
        train_env = rt.environment(cfg.episode.environment, train_tasks)
        eval_env = rt.environment(cfg.eval.environment, eval_tasks) if eval_tasks else None
        metadata = {"isolation": rt.executor.isolation, "sandbox": rt.executor.info, "model_path": model_path,
                    "train_tasks": len(train_tasks), "eval_tasks": len(eval_tasks),
                    "environment": cfg.episode.environment, "initial_weights_checksum": rt.learner.checksum(),
                    "weight_transport": rt.weight_transport}
        (run_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
        with Tracker(cfg, run_dir, metadata) as tracker:
            reports = run_loop(cfg, rt, tracker, train_env, eval_env, train_tasks, eval_tasks, run_dir, model_path)
    if reports:
        rows = {name: r for name, r in reports.items() if name in ("before", "after")}
        print(accuracy_table(rows, cfg.episode.max_turns, f"held-out ({len(eval_tasks)} tasks)"))
    if "comparison" in reports:
        print()
        print(comparison_table(reports["comparison"]))
        for name, c in reports["comparison"].items():
            print(f"{name.replace('acc_t', 'Acc@t')}: {c['summary']}")
    print(f"run directory: {run_dir}")
    return {"run_dir": str(run_dir), **reports}


def run_loop(cfg: Config, rt, tracker, train_env, eval_env, train_tasks, eval_tasks, run_dir: Path, model_path: str) -> dict:
    """Evaluation before, the training steps, evaluation after, checkpoints; returns the reports."""
    from tqdm import tqdm

    from envs.tasks import TaskSampler
    from launch.runtime import evaluate
    from rl.metrics import paired_comparisons
    from rl.report import episode_tables

    def held_out(version: int):
        return evaluate(rt, eval_env, eval_tasks, samples=1, temperature=cfg.eval.temperature, ks=[1], weight_version=version)

    loop = Loop(cfg, rt, train_env, run_dir / "rollouts" if cfg.run.save_rollouts else None)
    reports, episodes = {}, {}
    if cfg.eval.before and eval_env:
        episodes["before"], reports["before"] = held_out(0)
        tracker.log(0, {f"eval/{k}": v for k, v in reports["before"].items()})
    sampler = TaskSampler(train_tasks, cfg.run.seed)
    with tqdm(range(1, cfg.run.steps + 1), desc="train", unit="step", file=sys.stdout) as bar:
        for step in bar:
            metrics, episodes_of_step = loop.step(sampler.next(cfg.rollout.tasks_per_step), step)
            tracker.log(step, metrics, episode_tables(episodes_of_step, cfg.episode.max_turns, cfg.wandb.sample_episodes), {
                "hist/episode_reward": [sum(e.credit.rewards) for e in episodes_of_step],
                "hist/reply_tokens": [len(t.response_ids) for e in episodes_of_step for t in e.turns if not t.seeded]})
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc_t1=f"{metrics.get('train/acc_t1', float('nan')):.2f}",
                            kl=f"{metrics.get('learner/kl', metrics.get('kl/reward_mean', float('nan'))):.4f}")
            if cfg.run.save_every is not None and step % cfg.run.save_every == 0:
                rt.learner.save(str(run_dir / "checkpoints" / f"step-{step:06d}"), model_path)
    if cfg.eval.after and eval_env:
        episodes["after"], reports["after"] = held_out(loop.version)
        tracker.log(cfg.run.steps, {f"eval/{k}": v for k, v in reports["after"].items()})
    if len(episodes) == 2:   # the same tasks before and after: the paired difference and its noise
        reports["comparison"] = paired_comparisons(episodes["before"], episodes["after"], cfg.episode.max_turns)
        tracker.log(cfg.run.steps, {f"eval/change_{name}_{k}": c[k] for name, c in reports["comparison"].items()
                                    for k in ("difference", "low", "high", "p_value")})
    if cfg.run.save_final:
        rt.learner.save(str(run_dir / "final"), model_path)
    if reports:
        (run_dir / "eval.json").write_text(json.dumps(reports, indent=2))
        tracker.summary({f"eval_{name}/{k}": v for name in ("before", "after") if name in reports for k, v in reports[name].items()})
    return reports


class Loop:
    """One training step over the started runtime: task -> episode -> record -> advantages ->
    loss -> weights."""

    def __init__(self, cfg: Config, rt, env, rollouts_dir: Path | None = None):
        from rewards import REWARDS
        from rl.advantages import estimator
        from rl.credit import passes_needed
        from rl.vllm_ext import verbatim_parameter_names

        self.cfg, self.rt, self.env, self.rollouts_dir = cfg, rt, env, rollouts_dir
        self.reward_fn = REWARDS.get(cfg.reward.name)
        self.estimator = estimator(cfg.algo.advantage)
        self.reference, self.values = passes_needed(cfg.algo, self.estimator)
        self.verbatim_names = verbatim_parameter_names(rt.learner.parameter_names())
        self.version = 0

    def step(self, tasks, step: int) -> tuple[dict[str, float], list]:
        """The step's metrics, and its episodes with their credit (for the tables)."""
        from rl.credit import assign_credit, schedule
        from rl.episode import write_episodes
        from rl.metrics import step_metrics

        cfg, rt, timers = self.cfg, self.rt, self.rt.timers
        timers.clear()
        start = time.monotonic()
        episodes = rt.episodes(self.env, tasks, samples_per_task=cfg.rollout.samples_per_task,
                               revisions=cfg.episode.revisions_per_attempt, temperature=cfg.rollout.temperature,
                               weight_version=self.version)
        t0 = time.monotonic()
        passes = rt.learner.passes(episodes, self.reference, self.values)
        timers["passes"] = time.monotonic() - t0
        episodes = assign_credit(cfg, step, episodes, self.reward_fn, self.estimator, passes.get("reference"), passes.get("values"))

        t0 = time.monotonic()
        learner_metrics = rt.learner.train_step(episodes)
        timers["training"] = time.monotonic() - t0
        t0 = time.monotonic()
        weights = rt.learner.publish(rt.weight_transport, rt.publish_dir)
        rt.rollout.push(weights)
        self.version = weights.version
        held = rt.rollout.verify_held(self.verbatim_names, rt.learner.checksum(self.verbatim_names), self.version)
        timers["push"] = time.monotonic() - t0
        if self.rollouts_dir is not None:
            write_episodes(self.rollouts_dir / f"step-{self.version:06d}.jsonl", episodes)

        for e in episodes:
            if e.credit.reward_error is not None:   # reward.on_error=skip: say which sample, then go on
                replies = " | ".join(t.text[:200].replace("\n", "\\n") for t in e.turns)
                print(f"warning: step {step}: episode {e.index} of task {e.task.task_id!r} left out: {e.credit.reward_error}; "
                      f"replies: {replies}", file=sys.stderr)
        metrics = step_metrics(episodes, cfg.episode.max_turns)
        metrics["reward/score_stage"] = schedule(cfg, step).reward.score_stage if cfg.reward.name == "score" else 0
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items() if k not in ("seconds", "tokens")})
        metrics.update({f"time/{k}": v for k, v in timers.items()})
        metrics["time/step"] = time.monotonic() - start
        metrics["weight_version"] = self.version
        # how many versions behind the learner the sampling policy was (0 in the synchronous loop)
        metrics["rollout/version_lag"] = sum(self.version - 1 - e.weight_version for e in episodes) / len(episodes)
        metrics["weights/checksum"] = weights.checksum
        metrics["weights/held_by_workers"] = held
        return metrics, episodes


if __name__ == "__main__":
    main()
