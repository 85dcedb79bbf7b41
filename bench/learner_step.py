"""Seconds per learner step with the episodes that carry no signal left out before the forward
pass, against the same step on the masked batch (every episode run, the silent ones with a zero
loss mask, as before the skip), side by side in one process, rounds alternated.

    python bench/learner_step.py [--silent-groups 2] [--rounds 3] [--model smollm2-135m-instruct]

Batch: the default job's shape, 4 tasks x 4 samples of two-turn episodes of 510 tokens (150
prompt, 150 reply, 60 feedback, 150 reply); `--silent-groups` of the 4 groups got the same
reward for every sample and are filtered (algo.filter_uniform_groups; also what a group with no
advantage and no KL weight costs). fp32, AdamW, micro-batch 4, one rank. Prints seconds per
step of each mode, the ratio per round, and the loss of both (they must agree).
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.environments import Verdicts  # noqa: E402
from envs.tasks import Task, TestCase  # noqa: E402
from rl.advantages import estimator  # noqa: E402
from rl.config import load_config  # noqa: E402
from rl.episode import Credit, Episode, Turn  # noqa: E402
from rl.learner import Learner, MiniBatchPart, learner_options, shards  # noqa: E402
from rl.models import resolve_model_path  # noqa: E402

TASK = Task("t", "p", "f", (TestCase("call", "f(0)", "0"),), (TestCase("call", "f(1)", "1"),))


def batch(rng: random.Random, silent_groups: int, kl_coef: float = 0.01) -> list[Episode]:
    episodes = []
    for i in range(16):
        turns = [Turn([rng.randrange(100, 40000) for _ in range(p)], [rng.randrange(100, 40000) for _ in range(150)],
                      [-1.0] * 150, "stop", "x", Verdicts("x")) for p in (150, 60)]
        trained = i // 4 >= silent_groups
        credit = Credit((0.0, 0.0), (0.0, 0.0), (rng.uniform(-1, 1), rng.uniform(-1, 1)), (kl_coef, kl_coef), (), trained)
        episodes.append(Episode(TASK, i % 4, i % 4, 0, turns, credit))
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silent-groups", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    cfg = load_config(None, [f"model.path={args.model}"])
    learner = Learner(resolve_model_path(args.model), **learner_options(cfg, estimator(cfg.algo.advantage)), master_port=29877)
    episodes = batch(random.Random(0), args.silent_groups)
    trained = [e for e in episodes if e.credit.trained]
    modes = {
        "skip": shards(episodes, 1, 1, cfg.algo.micro_batch_size, True, False)[0],
        "masked": [MiniBatchPart([episodes[i:i + cfg.algo.micro_batch_size] for i in range(0, len(episodes), cfg.algo.micro_batch_size)],
                                 float(len(trained)), float(sum(sum(e.layout.loss_mask) for e in trained)), 0.0)],
    }
    learner.train_step(modes["skip"])   # warm-up
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    losses: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else reversed(list(modes))):
            start = time.monotonic()
            sums = learner.train_step(modes[mode])
            seconds[mode].append(time.monotonic() - start)
            losses[mode].append(sums["loss"])
        print(f"round {r + 1}: skip {seconds['skip'][-1]:.1f} s, masked {seconds['masked'][-1]:.1f} s, "
              f"skip / masked {seconds['skip'][-1] / seconds['masked'][-1]:.2f}", flush=True)
    ratios = [a / b for a, b in zip(seconds["skip"], seconds["masked"])]
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')} torch threads {torch.get_num_threads()}, "
          f"{args.silent_groups} of 4 groups silent: skip {min(seconds['skip']):.1f} s (best), masked "
          f"{min(seconds['masked']):.1f} s (best); skip / masked per round: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
    print(f"losses (must agree; the weights move between steps): skip {losses['skip']}, masked {losses['masked']}")


if __name__ == "__main__":
    main()
