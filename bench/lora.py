"""What LoRA buys the learner: seconds per step and peak resident memory of a learner that trains
every weight against one that trains low-rank adapters (`learner.lora_rank`), on the same batch.

    python bench/lora.py [--rank 16] [--rounds 2] [--steps 3] [--model smollm2-135m-instruct]

Each measurement is its own process (peak RSS is per process), the two modes alternated round by
round so that both see the same machine; the ratio of each round is printed. Batch: the default
job's shape (bench/learner_step.py: 16 two-turn episodes of 510 tokens, all carrying signal),
KL weight 0.01 (so the full learner loads its reference copy and the LoRA one runs the policy
without adapters instead), fp32, AdamW, micro-batch 4, one rank.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(rank: int, steps: int, model: str) -> dict:
    """One learner (full when rank is 0), a warm-up step, then `steps` timed ones."""
    import torch

    from bench.learner_step import batch
    from rl.advantages import estimator
    from rl.config import load_config
    from rl.learner import Learner, learner_options, shards
    from rl.models import resolve_model_path

    cfg = load_config(None, [f"model.path={model}", f"learner.lora_rank={rank}"])
    learner = Learner(resolve_model_path(model), **learner_options(cfg, estimator(cfg.algo.advantage)), master_port=29879)
    shard = shards(batch(random.Random(0), 0), 1, 1, cfg.algo.micro_batch_size, True, False)[0]
    learner.train_step(shard)
    seconds = []
    for _ in range(steps):
        start = time.monotonic()
        learner.train_step(shard)
        seconds.append(time.monotonic() - start)
    params = list(learner.engine.module.parameters())
    return {"seconds": statistics.median(seconds), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "trainable": sum(p.numel() for p in params if p.requires_grad), "parameters": sum(p.numel() for p in params),
            "reference_copy": learner.reference is not None, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)   # one measurement, as JSON on the last line
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.steps, args.model)))
        return
    results: dict[str, list[dict]] = {"full": [], "lora": []}
    for r in range(args.rounds):
        for mode in (("full", "lora") if r % 2 == 0 else ("lora", "full")):
            out = subprocess.run([sys.executable, __file__, "--child", str(args.rank if mode == "lora" else 0),
                                  "--steps", str(args.steps), "--model", args.model],
                                 capture_output=True, text=True, check=True, cwd=REPO)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        full, lora = results["full"][-1], results["lora"][-1]
        print(f"round {r + 1}: full {full['seconds']:.1f} s/step, {full['peak_rss_gb']:.2f} GB; "
              f"LoRA r={args.rank} {lora['seconds']:.1f} s/step, {lora['peak_rss_gb']:.2f} GB; "
              f"LoRA / full: time {lora['seconds'] / full['seconds']:.2f}, memory {lora['peak_rss_gb'] / full['peak_rss_gb']:.2f}",
              flush=True)
    full, lora = results["full"][0], results["lora"][0]
    time_ratios = [b["seconds"] / a["seconds"] for a, b in zip(results["full"], results["lora"])]
    memory_ratios = [b["peak_rss_gb"] / a["peak_rss_gb"] for a, b in zip(results["full"], results["lora"])]
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')}, torch threads {full['torch_threads']}: "
          f"trainable parameters full {full['trainable'] / 1e6:.1f} M, LoRA r={args.rank} {lora['trainable'] / 1e6:.2f} M; "
          f"reference copy loaded: full {full['reference_copy']}, LoRA {lora['reference_copy']}; "
          f"LoRA / full per round: time {', '.join(f'{x:.2f}' for x in time_ratios)}, "
          f"peak memory {', '.join(f'{x:.2f}' for x in memory_ratios)}")


if __name__ == "__main__":
    main()
