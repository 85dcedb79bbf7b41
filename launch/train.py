"""The training driver: tasks -> episodes -> rewards -> trajectories -> advantages -> learner step
-> weight push -> log, repeated; with held-out evaluation before and after.

    selfcorrect train --config configs/default.yaml rollout.temperature=0.8
    python -m launch.train --config configs/default.yaml      (the form `ray job submit -- ...` runs)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

from rewards import REWARDS, compute_turn_rewards
from rewards.shaping import overlong_penalty, with_kl_penalty
from rl.advantages import ADVANTAGES, turn_advantages, uniform_groups
from rl.cluster import timed
from rl.config import Config, ConfigError, describe, load_config
from rl.critic import CRITIC_ESTIMATORS, gae, token_steps, turn_steps, whiten
from rl.episodes import baseline_keys, run_episodes, turn_scores
from rl.metrics import self_correction_report
from rl.rollout import SamplingSpec
from rl.trajectory import to_trajectory
from rl.vllm_ext import verbatim_parameter_names


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
    """Runs the whole job; returns {'run_dir', 'before', 'after'} (the evaluation reports)."""
    import ray
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from envs.episode import ChatFormat
    from launch.inputs import load_split, resolve_model, start_sandbox
    from rl.cluster import LearnerGroup, RolloutGroup, init_ray
    from rl.tracking import Tracker

    # Everything that can fail on user input fails here, before Ray or vLLM start.
    train_tasks = load_split(cfg, "train", cfg.data.limit or None)
    eval_tasks = load_split(cfg, "heldout", cfg.eval.max_tasks or cfg.data.limit or None)
    if not train_tasks:
        raise ConfigError(f"data.dataset: {cfg.data.dataset!r} has no training tasks")
    model_path = resolve_model(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chat = ChatFormat(tokenizer)

    run_dir = Path(cfg.run.output_dir) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    publish_dir = str(Path(cfg.weight_sync.directory) / run_dir.name)
    started_ray = not ray.is_initialized()
    if started_ray:
        init_ray(cfg)
    tracker = executor = None
    try:
        executor = start_sandbox(cfg)
        faulty = repair_curriculum(cfg, train_tasks, executor) if cfg.episode.seeded_first_turns > 0 else None
        learner = LearnerGroup(cfg, model_path)
        rollout = RolloutGroup(cfg, model_path)
        if set(rollout.node_ids()) != {learner.node_id()}:
            raise ConfigError("weight_sync: the shared-memory weight transport needs every rollout worker on the learner's node")
        metadata = {"isolation": executor.isolation, "sandbox": executor.info, "model_path": model_path,
                    "train_tasks": len(train_tasks), "eval_tasks": len(eval_tasks),
                    "initial_weights_checksum": learner.checksum()}
        (run_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
        tracker = Tracker(cfg, run_dir, metadata)
        loop = Loop(cfg, rollout, learner, executor, chat, tokenizer, publish_dir, faulty,
                    run_dir / "rollouts" if cfg.run.save_rollouts else None)
        reports = {}
        if cfg.eval.before and eval_tasks:
            reports["before"] = loop.evaluate(eval_tasks)
            tracker.log(0, {f"eval/{k}": v for k, v in reports["before"].items()})
        sampler = TaskSampler(train_tasks, cfg.run.seed)
        with tqdm(range(1, cfg.run.steps + 1), desc="train", unit="step", file=sys.stdout) as bar:
            for step in bar:
                metrics = loop.step(sampler.next(cfg.rollout.tasks_per_step), step)
                tracker.log(step, metrics)
                bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc_t1=f"{metrics.get('train/acc_t1', float('nan')):.2f}",
                                kl=f"{metrics['learner/kl']:.4f}")
                if cfg.run.save_every and step % cfg.run.save_every == 0:
                    learner.save(str(run_dir / "checkpoints" / f"step-{step:06d}"), model_path)
        if cfg.eval.after and eval_tasks:
            reports["after"] = loop.evaluate(eval_tasks)
            tracker.log(cfg.run.steps, {f"eval/{k}": v for k, v in reports["after"].items()})
        if cfg.run.save_final:
            learner.save(str(run_dir / "final"), model_path)
        if reports:
            (run_dir / "eval.json").write_text(json.dumps(reports, indent=2))
            table = format_table(reports, cfg.episode.max_turns, len(eval_tasks))
            tracker.summary({f"eval_{name}/{k}": v for name, r in reports.items() for k, v in r.items()})
            print(table)
        print(f"run directory: {run_dir}")
        return {"run_dir": str(run_dir), **reports}
    finally:
        if tracker is not None:
            tracker.close()
        if executor is not None:
            executor.close()
        shutil.rmtree(publish_dir, ignore_errors=True)
        if started_ray:
            ray.shutdown()


def repair_curriculum(cfg: Config, train_tasks, executor):
    """The verified faulty first attempts episode.seeded_first_turns draws from."""
    from envs.datasets import DatasetError
    from envs.repair import load_faulty_programs

    try:
        faulty = load_faulty_programs(train_tasks, cfg.episode.first_turns, executor,
                                      time_limit_s=cfg.sandbox.time_limit_s, memory_mb=cfg.sandbox.memory_mb, seed=cfg.run.seed)
    except DatasetError as exc:
        raise ConfigError(str(exc)) from None
    if not faulty.programs:
        raise ConfigError(f"episode.first_turns: no faulty program found for any training task from {cfg.episode.first_turns!r}")
    print(f"repair curriculum: faulty first attempts for {len(faulty.programs)} of {len(train_tasks)} training tasks")
    return faulty


class TaskSampler:
    """Seeded passes over the training tasks in shuffled order."""

    def __init__(self, tasks, seed: int):
        self.tasks, self.rng, self.queue = list(tasks), random.Random(seed), []

    def next(self, k: int):
        batch = []
        while len(batch) < k:
            if not self.queue:
                self.queue = self.rng.sample(self.tasks, len(self.tasks))
            batch.append(self.queue.pop())
        return batch


class Loop:
    """One training step and one evaluation pass, over already-started components."""

    def __init__(self, cfg: Config, rollout, learner, executor, chat, tokenizer, publish_dir: str, faulty=None,
                 rollouts_dir: Path | None = None):
        self.cfg, self.learner, self.rollout, self.publish_dir = cfg, learner, rollout, publish_dir
        self.chat, self.tokenizer = chat, tokenizer
        self.reward_fn = REWARDS.get(cfg.reward.name)
        self.estimator = None if cfg.algo.advantage in CRITIC_ESTIMATORS else ADVANTAGES.get(cfg.algo.advantage)
        self.timers: dict[str, float] = {}
        self.generate = timed(rollout.generate, self.timers, "generation")
        self.executor = _TimedExecutor(executor, self.timers)
        self.version = 0
        self.rollouts_dir = rollouts_dir
        self.faulty, self.seeding_rng = faulty, random.Random(cfg.run.seed + 1)
        self.verbatim_names = verbatim_parameter_names(learner.parameter_names())

    def _episodes(self, tasks, samples_per_task: int, temperature: float, first_turns=None, episode_cfg=None):
        r = self.cfg.rollout
        spec = SamplingSpec(1, temperature, r.top_p if temperature > 0 else 1.0, r.max_new_tokens)
        return run_episodes(tasks, samples_per_task, self.generate, self.executor, self.chat, self.tokenizer,
                            episode_cfg or self.cfg.episode, self.cfg.sandbox, spec, self.version, self.cfg.model.max_model_len, first_turns)

    def _first_turns(self, tasks) -> dict[int, list[str]]:
        """Which tasks of this batch start from faulty programs (repair curriculum), and which."""
        if self.faulty is None:
            return {}
        attempts = self.cfg.rollout.samples_per_task // self.cfg.episode.revisions_per_attempt
        return {i: self.faulty.draw(t.task_id, attempts) for i, t in enumerate(tasks)
                if t.task_id in self.faulty and self.seeding_rng.random() < self.cfg.episode.seeded_first_turns}

    def step(self, tasks, step: int) -> dict[str, float]:
        cfg = self.cfg
        self.timers.clear()
        start = time.monotonic()
        episodes = self._episodes(tasks, cfg.rollout.samples_per_task, cfg.rollout.temperature, self._first_turns(tasks))
        scores = [turn_scores(e) for e in episodes]
        rewards, trajectories = assign_credit(cfg, step, episodes, scores, self.reward_fn, self.estimator, self.learner)

        t0 = time.monotonic()
        learner_metrics = self.learner.train_step(trajectories)
        self.timers["training"] = time.monotonic() - t0
        t0 = time.monotonic()
        path, checksum, self.version = self.learner.publish(self.publish_dir)
        self.rollout.push(path, self.version, checksum)
        held = self.rollout.verify_held(self.verbatim_names, self.learner.checksum(self.verbatim_names), self.version)
        self.timers["push"] = time.monotonic() - t0
        if self.rollouts_dir is not None:
            write_rollouts(self.rollouts_dir / f"step-{self.version:06d}.jsonl", episodes, trajectories)

        sampled = [[s.correct for s in ep] for ep, e in zip(scores, episodes) if not e.turns[0].seeded]
        metrics = {f"train/{k}": v for k, v in self_correction_report(sampled, cfg.episode.max_turns).items()} if sampled else {}
        seeded = [[s.correct for s in ep] for ep, e in zip(scores, episodes) if e.turns[0].seeded]
        metrics["repair/seeded_fraction"] = len(seeded) / len(episodes)
        if seeded:
            metrics["repair/fixed"] = sum(c[-1] for c in seeded) / len(seeded)
        for t in range(cfg.episode.max_turns):
            at_t = [r[t] for r in rewards if len(r) > t]
            if at_t:
                metrics[f"reward/turn{t + 1}"] = sum(at_t) / len(at_t)
        metrics["reward/mean"] = sum(sum(r) for r in rewards) / len(rewards)
        metrics["reward/score_stage"] = schedule(cfg, step)[0].score_stage if cfg.reward.name == "score" else 0
        metrics["episode/filtered_fraction"] = sum(not t.trained for t in trajectories) / len(trajectories)
        metrics["episode/turns"] = sum(len(e.turns) for e in episodes) / len(episodes)
        metrics["episode/no_code_fraction"] = sum(t.code is None for e in episodes for t in e.turns) / sum(len(e.turns) for e in episodes)
        metrics["tokens/policy"] = sum(sum(t.loss_mask) for t in trajectories)
        metrics["tokens/total"] = sum(len(t.token_ids) for t in trajectories)
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items() if k not in ("seconds", "tokens")})
        metrics.update({f"time/{k}": v for k, v in self.timers.items()})
        metrics["time/step"] = time.monotonic() - start
        metrics["weight_version"] = self.version
        metrics["weights/checksum"] = checksum
        metrics["weights/held_by_workers"] = held
        return metrics

    def evaluate(self, tasks) -> dict[str, float]:
        """One episode per task; the per-turn report of rl/metrics.py (flat name -> float): acc_t1..,
        delta, delta_i2c, delta_c2i, episodes, t{t}_t{t+1}_{c2c,c2i,i2c,i2i} transition counts."""
        from rl.metrics import per_turn_report

        # One independent episode per task: revisions per attempt shape training batches only.
        single = dataclasses.replace(self.cfg.episode, revisions_per_attempt=1)
        episodes = self._episodes(tasks, 1, self.cfg.eval.temperature, episode_cfg=single)
        correct = [[s.correct for s in turn_scores(e)] for e in episodes]
        return per_turn_report(correct, self.cfg.episode.max_turns)


def assign_credit(cfg: Config, step: int, episodes, scores, reward_fn, estimator, learner):
    """Episodes -> (task rewards per turn, trajectories with advantages and KL weights).

    `learner` answers turn_kl(trajectories) (each turn's KL to the reference, asked only when the
    KL goes in the reward) and values(trajectories) (the critic's value at every position, asked
    only by the critic estimators); `estimator` is a group estimator, or None for those."""
    reward_cfg, first_turn_kl, gamma = schedule(cfg, step)
    rewards = [compute_turn_rewards(reward_fn, cfg.reward.name, s, e.task, reward_cfg) for e, s in zip(episodes, scores)]
    if cfg.reward.overlong_buffer:
        rewards = [[r if turn.seeded else r + cfg.reward.overlong_penalty * overlong_penalty(len(turn.response_ids), cfg.rollout.max_new_tokens, cfg.reward.overlong_buffer)
                    for r, turn in zip(rs, e.turns)] for rs, e in zip(rewards, episodes)]
    keys = [baseline_keys(e, cfg.episode.revisions_per_attempt) for e in episodes]
    trajectories = [to_trajectory(e, r, e.task.task_id) for e, r in zip(episodes, rewards)]
    # Decided on the task rewards: a KL penalty in the reward would make every group differ.
    uniform = uniform_groups(rewards, [k[0] for k in keys]) if cfg.algo.filter_uniform_groups else set()
    coefs = [[first_turn_kl if t == 0 else cfg.algo.kl_coef for t in range(len(r))] for r in rewards]
    trained_rewards = rewards
    if cfg.algo.kl_in_reward:
        trained_rewards = [with_kl_penalty(r, k, c) for r, k, c in zip(rewards, learner.turn_kl(trajectories), coefs)]
        coefs = [[0.0] * len(c) for c in coefs]
    for traj, r, c, k in zip(trajectories, trained_rewards, coefs, keys):
        traj.turn_rewards, traj.turn_kl_coefs, traj.trained = r, c, k[0] not in uniform
    if estimator is None:
        critic_advantages(trajectories, learner.values(trajectories), cfg.algo.advantage, gamma, cfg.algo.lam)
    else:
        for traj, adv in zip(trajectories, turn_advantages(trained_rewards, keys, estimator, gamma)):
            traj.turn_advantages = adv
    return rewards, trajectories


def critic_advantages(trajectories, values: list[list[float]], estimator: str, gamma: float, lam: float) -> None:
    """GAE over tokens or turns from the critic's values; advantages whitened over the batch."""
    steps_of = token_steps if estimator == "gae" else turn_steps
    per_traj = []
    for traj, v in zip(trajectories, values):
        where, positions, step_rewards, discounts = steps_of(traj.turn_ids, traj.turn_rewards, gamma)
        old = [v[p] for p in positions]
        adv, returns = gae(step_rewards, old, discounts, lam)
        traj.value_positions, traj.value_targets, traj.old_values = positions, returns, old
        per_traj.append((where, adv))
    for traj, (where, adv) in zip(trajectories, zip([w for w, _ in per_traj], whiten([a for _, a in per_traj]))):
        if estimator == "gae":
            tokens = [0.0] * len(traj.token_ids)
            for k, a in zip(where, adv):
                tokens[k] = a
            traj.per_token_advantages = tokens
            traj.turn_advantages = [0.0] * traj.num_turns
        else:
            traj.turn_advantages = [0.0] * traj.num_turns
            for t, a in zip(where, adv):
                traj.turn_advantages[t] = a


def schedule(cfg: Config, step: int):
    """(reward config, first-turn KL weight, gamma) in force at `step`. SCoRe trains stage I up
    to reward.score_switch_step: only the last turn is rewarded and every turn's return is
    that reward (gamma 1: the objective is r(y2) - beta2 KL on turn 1); then stage II: every
    turn its own reward plus the bonus, algo.gamma (0 in the recipe), beta1 everywhere."""
    if cfg.reward.name != "score":
        return cfg.reward, cfg.algo.kl_coef_first_turn, cfg.algo.gamma
    stage = cfg.reward.score_stage
    if cfg.reward.score_switch_step:
        stage = 1 if step <= cfg.reward.score_switch_step else 2
    if stage == 1:
        return dataclasses.replace(cfg.reward, score_stage=1), cfg.algo.kl_coef_first_turn, 1.0
    return dataclasses.replace(cfg.reward, score_stage=2), cfg.algo.kl_coef, cfg.algo.gamma


class _TimedExecutor:
    """The executor, with the seconds spent in `run` accumulating in timers['execution']."""

    def __init__(self, executor, timers: dict):
        self.isolation, self.info = executor.isolation, executor.info
        self.run = timed(executor.run, timers, "execution")
        self.close = executor.close


def write_rollouts(path: Path, episodes, trajectories) -> None:
    """One JSON line per episode: the exact tokens trained on, next to the turns they came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for e, t in zip(episodes, trajectories):
            f.write(json.dumps({
                "task_id": t.task_id, "group": t.group, "weight_version": t.weight_version,
                "token_ids": t.token_ids, "loss_mask": t.loss_mask, "turn_ids": t.turn_ids,
                "rollout_logprobs": t.rollout_logprobs, "turn_rewards": t.turn_rewards,
                "turn_advantages": t.turn_advantages, "feedback": e.feedback,
                "turns": [{"prompt_ids": turn.prompt_ids, "response_ids": turn.response_ids, "text": turn.text,
                           "code": turn.code, "finish_reason": turn.finish_reason, "seeded": turn.seeded,
                           "public_passed": turn.public.num_passed if turn.public else 0,
                           "hidden_passed": turn.hidden.num_passed if turn.hidden else 0}
                          for turn in e.turns],
            }) + "\n")


def format_table(reports: dict[str, dict], num_turns: int, num_tasks: int) -> str:
    cols = [f"acc_t{t + 1}" for t in range(num_turns)] + (["delta", "delta_i2c", "delta_c2i"] if num_turns > 1 else [])
    names = {"delta": "Δ", "delta_i2c": "Δi→c", "delta_c2i": "Δc→i"}
    header = "| held-out (" + str(num_tasks) + " tasks) | " + " | ".join(names.get(c, c.replace("acc_t", "Acc@t")) for c in cols) + " |"
    rows = [header, "|" + "---|" * (len(cols) + 1)]
    for name, report in reports.items():
        rows.append(f"| {name} | " + " | ".join(f"{100 * report[c]:+.1f}" if c.startswith("delta") else f"{100 * report[c]:.1f}" for c in cols) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
