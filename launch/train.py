"""The training driver, orchestration only: task -> episode -> record -> advantages -> loss ->
weights, repeated, with a held-out evaluation before and after. Each stage lives in its own
module (docs/design.md); this file only calls them in order and logs.

    selfcorrect train --config configs/default.yaml rollout.temperature=0.8
    python -m launch.train --config configs/default.yaml      (the form `ray job submit -- ...` runs)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
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
    # A scheduler's SIGTERM (preemption, `ray job stop`) stops the run as Ctrl-C does: with a checkpoint.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        train(cfg)
    except ConfigError as exc:  # input the checks above could only see once it was loaded
        print(f"selfcorrect: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def train(cfg: Config) -> dict:
    """Runs the whole job; returns {'run_dir', 'before', 'after', 'comparison'} (the evaluation
    reports, and the paired after − before differences when both ran)."""
    from launch import checkpoint
    from launch.runtime import Runtime, held_out_tasks, load_split, resolve_model
    from rl.report import accuracy_table, comparison_label, comparison_table, repair_table
    from rl.tracking import Tracker

    # Everything that can fail on user input fails here, before Ray or vLLM start.
    train_tasks = load_split(cfg, "train", cfg.data.limit)
    eval_tasks, eval_environment = held_out_tasks(cfg, "heldout", cfg.eval.max_tasks or (None if cfg.eval.benchmark else cfg.data.limit))
    if not train_tasks:
        raise ConfigError(f"data.dataset: {cfg.data.dataset!r} has no training tasks")
    model_path = resolve_model(cfg)
    resume = checkpoint.find(cfg)
    resumed = None
    if resume is not None:
        resumed, manifest = checkpoint.load(resume)
        fatal, noted = checkpoint.differences(resumed.config, cfg.to_dict())
        if fatal:
            raise ConfigError(f"run.resume: {resume} was written with other values of {', '.join(fatal)}: "
                              "its learner state cannot continue under this configuration")
        if noted:
            print(f"warning: resuming with other values of {', '.join(noted)} than the checkpoint's: "
                  "the run continues, but not as the first one would have", file=sys.stderr)
        run_dir = resume.parent.parent
        print(f"resuming {run_dir} after step {manifest['step']} (checkpoint {resume.name})")
    else:
        if cfg.run.resume == "auto":
            print(f"run.resume=auto: no checkpoint of run {cfg.run.name!r} under {cfg.run.output_dir}: a new run")
        run_dir = Path(cfg.run.output_dir).absolute() / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if not Path(cfg.run.output_dir).is_absolute() and (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        print(f"warning: run.output_dir={cfg.run.output_dir!r} is relative to the working directory, which under "
              "`ray job submit` is a temporary copy of --working-dir: pass an absolute path to keep the run", file=sys.stderr)
    print(f"run directory: {run_dir}")
    with Runtime(cfg, model_path, learner=True, run_name=run_dir.name, log_dir=str(run_dir / "logs")) as rt:
        train_env = rt.environment(cfg.episode.environment, train_tasks)
        eval_env = rt.environment(eval_environment, eval_tasks) if eval_tasks else None
        if resumed is None:
            metadata = {"isolation": rt.executor.isolation, "sandbox": rt.executor.info, "model_path": model_path,
                        "train_tasks": len(train_tasks), "eval_tasks": len(eval_tasks),
                        "environment": cfg.episode.environment, "initial_weights_checksum": rt.learner.checksum(),
                        "ray": rt.ray_info, "weight_transport": rt.weight_transport,
                        "placement": {"learner": rt.learner.nodes, "rollout": rt.rollout.nodes}}
        else:
            metadata = json.loads((run_dir / "metadata.json").read_text())
            metadata.setdefault("resumed", []).append({"after_step": resumed.step, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                       "weight_transport": rt.weight_transport})
        (run_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
        with Tracker(cfg, run_dir, metadata, resumed) as tracker:
            reports = run_loop(cfg, rt, tracker, train_env, eval_env, train_tasks, eval_tasks, run_dir, model_path,
                               resumed and (resumed, resume))
    if reports:
        rows = {name: r for name, r in reports.items() if name in ("before", "after")}
        held_out = f"benchmark {cfg.eval.benchmark} ({len(eval_tasks)} rows)" if cfg.eval.benchmark else f"held-out ({len(eval_tasks)} tasks)"
        print(accuracy_table(rows, cfg.episode.max_turns, held_out))
        if cfg.eval.benchmark:
            print()
            print(repair_table(rows))
    if "comparison" in reports:
        print()
        print(comparison_table(reports["comparison"]))
        for name, c in reports["comparison"].items():
            print(f"{comparison_label(name)}: {c['summary']}")
    print(f"run directory: {run_dir}")
    return {"run_dir": str(run_dir), **reports}


def run_loop(cfg: Config, rt, tracker, train_env, eval_env, train_tasks, eval_tasks, run_dir: Path, model_path: str,
             resumed=None) -> dict:
    """Evaluation before, the training steps, evaluation after, checkpoints; returns the reports.
    resumed: (DriverState, checkpoint folder) to continue from."""
    from tqdm import tqdm

    from envs.tasks import TaskSampler
    from launch import checkpoint
    from launch.runtime import evaluate
    from rl.metrics import benchmark_rows, correctness, paired_comparisons
    from rl.report import episode_tables

    def held_out(version: int, when: str):
        # in chunks, for a progress line per chunk: 64 tasks keep the engine's batch full (at the
        # default KV cache it holds about 30 sequences of this length at once)
        return evaluate(rt, eval_env, eval_tasks, samples=1, temperature=cfg.eval.temperature, ks=[1],
                        weight_version=version, chunk_tasks=64, progress=lambda line: print(f"[eval {when}] {line}", flush=True))

    loop = Loop(cfg, rt, train_env, run_dir / "rollouts" if cfg.run.save_rollouts else None)
    sampler = TaskSampler(train_tasks, cfg.run.seed)
    reports, episodes = {}, {}
    if resumed is not None:
        state, folder = resumed
        loop.restore(folder)
        sampler.load_state_dict(state.sampler)
        train_env.load_state_dict(state.environment)
        checkpoint.restore_rngs(state.rngs)
        if state.before is not None:
            episodes["before"], reports["before"] = state.before
    elif cfg.eval.before and eval_env:
        episodes["before"], reports["before"] = held_out(0, "before")
        tracker.log(0, {f"eval/{k}": v for k, v in reports["before"].items()})

    def state_after(step: int, draws: tuple) -> checkpoint.DriverState:
        """draws: the sampler's, environment's and RNGs' state before the next step's rollout."""
        before = (episodes["before"], reports["before"]) if "before" in episodes else None
        return checkpoint.DriverState(step, loop.version, *draws, cfg.to_dict(), tracker.run_id, before)

    first = (resumed[0].step if resumed else 0) + 1
    loop.last_step_end = time.monotonic()   # the first step's time starts here, after the evaluation before
    rollouts = (RolloutsAhead if cfg.algo.max_staleness else RolloutsInStep)(loop, sampler, train_env, first, cfg.run.steps)
    done = state_after(first - 1, rollouts.draws_before(first))   # the state after the last completed step
    saved = done.step if resumed else None
    try:
        with tqdm(range(first, cfg.run.steps + 1), initial=first - 1, total=cfg.run.steps,
                  desc="train", unit="step", file=sys.stdout) as bar:
            for step in bar:
                episodes_of_step, rollout_timers = rollouts.next(step)
                with _deferred_interrupt(loop):   # from here on the step completes, is logged, can be saved
                    metrics = loop.learn(episodes_of_step, step, rollout_timers)
                    rollouts.trained(step)
                    tracker.log(step, metrics, episode_tables(episodes_of_step, cfg.episode.max_turns, cfg.wandb.sample_episodes), {
                        "hist/episode_reward": [sum(e.credit.rewards) for e in episodes_of_step],
                        "hist/reply_tokens": [len(t.response_ids) for e in episodes_of_step for t in e.turns if not t.seeded]})
                    bar.set_postfix(progress_postfix(metrics))
                    done = state_after(step, rollouts.draws_before(step + 1))
                    if cfg.run.checkpoint_every is not None and step % cfg.run.checkpoint_every == 0:
                        checkpoint.save(run_dir, done, rt.learner, cfg.run.keep_checkpoints)
                        saved = step
                if loop.interrupted:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if loop.updating:   # a second Ctrl-C inside the update: the learner's state is not a step's
            print(f"\naborted inside step {done.step + 1}'s update: no checkpoint of it written", file=sys.stderr)
        elif done.step > 0 and saved != done.step:
            path = checkpoint.save(run_dir, done, rt.learner, cfg.run.keep_checkpoints)
            print(f"\ninterrupted: checkpoint after step {done.step} in {path}; continue with run.resume={run_dir}", file=sys.stderr)
        elif saved is not None:
            print(f"\ninterrupted: the checkpoint after step {saved} is current; continue with run.resume={run_dir}", file=sys.stderr)
        raise
    finally:
        rollouts.close()   # the generation thread of the asynchronous loop, if any, is done or stops
    if cfg.eval.after and eval_env:
        episodes["after"], reports["after"] = held_out(loop.version, "after")
        tracker.log(cfg.run.steps, {f"eval/{k}": v for k, v in reports["after"].items()})
    if len(episodes) == 2:   # the same tasks before and after: the paired difference and its noise
        reports["comparison"] = paired_comparisons(*(correctness(episodes[when]) for when in ("before", "after")),
                                                    cfg.episode.max_turns, benchmark_rows(episodes["before"]) if cfg.eval.benchmark else None)
        if cfg.eval.benchmark:   # the first attempts are the benchmark's own, the same before and after
            del reports["comparison"]["acc_t1"]
        tracker.log(cfg.run.steps, {f"eval/change_{name}_{k}": c[k] for name, c in reports["comparison"].items()
                                    for k in ("difference", "low", "high", "p_value")})
    if cfg.run.save_final:
        rt.learner.save(str(run_dir / "final"), model_path)
    if reports:
        (run_dir / "eval.json").write_text(json.dumps(reports, indent=2))
        tracker.summary({f"eval_{name}/{k}": v for name in ("before", "after") if name in reports for k, v in reports[name].items()})
    return reports


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows of a step: the mean reward, the first attempts' accuracy and the
    KL where the step has them (no first attempt of the policy's own, or no KL term: not shown)."""
    shown = {"reward": ("reward/mean", "{:.3f}"), "acc_t1": ("train/acc_t1", "{:.2f}"),
             "kl": ("learner/kl" if "learner/kl" in metrics else "kl/reward_mean", "{:.4f}")}
    return {name: fmt.format(metrics[key]) for name, (key, fmt) in shown.items()
            if key in metrics and math.isfinite(metrics[key])}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _deferred_interrupt(loop: "Loop"):
    """Ctrl-C (or SIGTERM) inside the block does not interrupt it: the learner's update, the weight
    push and the step's log are never left half done. It sets loop.interrupted, and the run stops
    after the block, with a checkpoint of the state after the step. A second one aborts at once
    (loop.updating tells the handler that no checkpoint can be written)."""
    if threading.current_thread() is not threading.main_thread():   # signals only reach the main thread
        yield
        return

    def defer(signum, frame):
        if loop.interrupted:
            raise KeyboardInterrupt
        loop.interrupted = True
        print("\nstopping after this step's update and weight push (again to abort without a checkpoint)", file=sys.stderr)

    previous = {s: signal.signal(s, defer) for s in (signal.SIGINT, signal.SIGTERM)}
    loop.updating = True
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    loop.updating = False


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
        self.updating = False      # inside a step's update, push and log (see _deferred_interrupt)
        self.interrupted = False   # a Ctrl-C arrived there: stop after this step
        self.last_step_end = time.monotonic()

    def restore(self, checkpoint: Path) -> None:
        """The learner continues from a checkpoint; the rollout workers get its weights."""
        self.version = self.rt.learner.load_checkpoint(str(checkpoint / "learner"))
        self.push()

    def push(self) -> tuple[str, list[str]]:
        """Publish the learner's weights to every rollout worker and check they hold them:
        (checksum, what each worker holds)."""
        rt = self.rt
        weights = rt.learner.publish(rt.weight_transport, rt.publish_dir)
        rt.rollout.push(weights)
        self.version = weights.version
        return weights.checksum, rt.rollout.verify_held(self.verbatim_names, rt.learner.checksum(self.verbatim_names), self.version)

    def rollout(self, tasks, step: int) -> list:
        """The step's episodes, with their credit. Changes nothing a checkpoint holds but the
        environment's and sampler's RNGs (run_loop keeps their state as of the step before), so
        an interrupt here abandons the step."""
        from rl.credit import assign_credit
        from rl.rollout import derive_seed

        cfg, rt = self.cfg, self.rt
        timers = rt.timers   # this thread's: the generation thread's in the asynchronous loop
        timers.clear()
        episodes = rt.episodes(self.env, tasks, samples_per_task=cfg.rollout.samples_per_task,
                               revisions=cfg.episode.revisions_per_attempt, temperature=cfg.rollout.temperature,
                               weight_version=self.version, seed=derive_seed(cfg.run.seed, "train", step))
        t0 = time.monotonic()
        passes = rt.learner.passes(episodes, self.reference, self.values)
        timers["passes"] = time.monotonic() - t0
        return assign_credit(cfg, step, episodes, self.reward_fn, self.estimator, passes.get("reference"), passes.get("values"))

    def learn(self, episodes: list, step: int, rollout_timers: dict[str, float]) -> dict[str, float]:
        """The learner's update on the episodes and the weight push; the step's metrics.
        Episodes sampled more than algo.max_staleness versions ago are dropped and counted."""
        from rl.credit import schedule
        from rl.episode import write_episodes
        from rl.metrics import step_metrics

        cfg, rt, timers = self.cfg, self.rt, dict(rollout_timers)
        kept, lags = fresh_episodes(episodes, self.version, cfg.algo.max_staleness)
        staleness = {"async/dropped_episodes": len(episodes) - len(kept), "async/max_lag": max(lags, default=0)}
        if not kept:   # nothing fresh enough: no update, no push
            return {**staleness, "weight_version": self.version, "time/step": self._step_time()}
        kept_lags = [lag for lag in lags if lag <= cfg.algo.max_staleness]
        episodes = kept
        t0 = time.monotonic()
        learner_metrics = rt.learner.train_step(episodes)
        timers["training"] = time.monotonic() - t0
        t0 = time.monotonic()
        checksum, held = self.push()
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
        metrics.update(staleness)
        metrics["time/step"] = self._step_time()
        metrics["weight_version"] = self.version
        # how many versions behind the learner the sampling policy was (0 in the synchronous loop)
        metrics["rollout/version_lag"] = sum(kept_lags) / len(kept_lags)
        metrics["faults/rollout_workers_replaced"] = rt.rollout.replacements   # over the run so far
        metrics["faults/sandbox_actors_replaced"] = rt.executor.replacements
        metrics["weights/checksum"] = checksum
        metrics["weights/held_by_workers"] = held
        return metrics

    def _step_time(self) -> float:
        """Seconds since the last step ended (overlapped phases count once)."""
        now = time.monotonic()
        elapsed, self.last_step_end = now - self.last_step_end, now
        return elapsed


def fresh_episodes(episodes: list, version: int, bound: int) -> tuple[list, list[int]]:
    """The episodes sampled at most `bound` weight versions before `version` (the learner's, before
    its update), and every episode's lag."""
    lags = [version - e.weight_version for e in episodes]
    return [e for e, lag in zip(episodes, lags) if lag <= bound], lags


class RolloutsInStep:
    """The synchronous loop (algo.max_staleness = 0): each step's batch is generated when the step
    asks for it, with the weights of the step before."""

    def __init__(self, loop: Loop, sampler, env, first: int, last: int):
        self.loop, self.sampler, self.env = loop, sampler, env

    def next(self, step: int) -> tuple[list, dict[str, float]]:
        """The step's episodes and the seconds their rollout spent, by stage."""
        episodes = self.loop.rollout(self.sampler.next(self.loop.cfg.rollout.tasks_per_step), step)
        return episodes, dict(self.loop.rt.timers)

    def draws_before(self, step: int) -> tuple:
        """What a checkpoint keeps of the task sampler, the environment and the RNGs, as they are
        before step `step`'s rollout (here: now)."""
        from launch.checkpoint import capture_rngs

        return self.sampler.state_dict(), self.env.state_dict(), capture_rngs()

    def trained(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class RolloutsAhead(RolloutsInStep):
    """The asynchronous loop (algo.max_staleness = k >= 1): one thread generates the batches of
    the coming steps, in order, while the learner trains on the current one.

    The bound holds by construction: batch s starts only once step s-1-k is trained and its
    weights are pushed, so it is sampled with weights at least version s-1-k and trained at
    version s-1: at most k behind. (A push that lands while a batch is being generated is taken
    by its later turns; the episode keeps the older version it started with, so its lag is never
    under-counted.) Loop.learn still checks every episode and drops any older than k.
    """

    def __init__(self, loop: Loop, sampler, env, first: int, last: int):
        super().__init__(loop, sampler, env, first, last)
        self.last, self.k = last, loop.cfg.algo.max_staleness
        self.trained_step = first - 1
        self.ready: dict[int, tuple] = {}      # step -> (episodes, timers), or an exception
        self.draws: dict[int, tuple] = {}      # step -> draws_before(step), taken as its rollout started
        self.stopping = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._generate, args=(first,), name="rollouts-ahead", daemon=True)
        self.thread.start()

    def _generate(self, step: int) -> None:
        try:
            while step <= self.last:
                with self.cond:
                    self.cond.wait_for(lambda: self.stopping or step - 1 - self.trained_step <= self.k)
                    if self.stopping:
                        return
                    self.draws[step] = super().draws_before(step)
                batch = super().next(step)
                with self.cond:
                    self.ready[step] = batch
                    self.cond.notify_all()
                step += 1
        except BaseException as exc:   # handed to the step that waits for the batch
            with self.cond:
                self.ready[step] = exc
                self.cond.notify_all()

    def next(self, step: int) -> tuple[list, dict[str, float]]:
        waited = time.monotonic()
        with self.cond:
            self.cond.wait_for(lambda: step in self.ready)
            batch = self.ready.pop(step)
        if isinstance(batch, BaseException):
            raise batch
        episodes, timers = batch
        return episodes, {**timers, "waiting_for_rollout": time.monotonic() - waited}

    def draws_before(self, step: int) -> tuple:
        if step > self.last:   # after the last step: nothing more is drawn
            self.thread.join()
            return super().draws_before(step)
        with self.cond:
            self.cond.wait_for(lambda: step in self.draws or step in self.ready)
            if step not in self.draws:   # the generation thread failed before drawing
                return super().draws_before(step)
            return self.draws.pop(step)

    def trained(self, step: int) -> None:
        with self.cond:
            self.trained_step = step
            self.cond.notify_all()

    def close(self) -> None:
        """Stop generating (a batch under way finishes, or fails once Ray is shut down)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


if __name__ == "__main__":
    main()
