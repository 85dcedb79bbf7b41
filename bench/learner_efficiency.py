"""What one learner step costs against what the machine can do: seconds, tokens/s, peak memory
and achieved FLOP/s of the learner on the default job's batch, for the learner configurations
that change memory or compute, each in its own process (peak memory is per process), next to
this machine's measured fp32 matrix-multiply rate, measured in the same run between them.

    python bench/learner_efficiency.py [--rounds 1] [--steps 2] [--configs default checkpointing ...]

Batch: bench/learner_step.py's (the default job's shape: 16 two-turn episodes of 510 tokens, 300
of them the policy's), every episode carrying signal. fp32, AdamW, micro-batch 4, one rank, the
default model. Configurations (key=value on the config's defaults):
  default         the config's defaults: KL weight 0.01, so the reference model is loaded
  checkpointing   learner.gradient_checkpointing=true (the same update; layers recomputed in backward)
  no-reference    both KL weights 0 (TRL's beta = 0: the reference is never loaded; a different
                  update), as the default job (configs/default.yaml) trains
  checkpointing-no-reference  both
  lora-checkpointing  rank-16 adapters (learner.lora_rank=16: no gradients or AdamW state for the
                  base weights, the reference is the base with the adapters off) and checkpointing,
                  KL 0.01: the least memory a full-size update path here can take
Each process loads the learner, runs one warm-up step and --steps timed steps.

Useful FLOPs per step (what the update needs, recomputation not counted): the policy's forward
and backward, 6 x (body weights) per real token + causal attention (6 x T^2 x width per layer
and sequence) + 6 x (vocab x width) per position the loss reads (the LM head runs only there);
the reference's forward where it is loaded, a third of that. Padding is not useful work.
Achieved FLOP/s = useful FLOPs / step seconds, against the best of the matmul rates measured
(square 2048 fp32 products and the model's own MLP shape, every torch thread).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "default": [],
    "checkpointing": ["learner.gradient_checkpointing=true"],
    "no-reference": ["algo.kl_coef=0", "algo.kl_coef_first_turn=0"],
    "checkpointing-no-reference": ["learner.gradient_checkpointing=true", "algo.kl_coef=0", "algo.kl_coef_first_turn=0"],
    "lora-checkpointing": ["learner.lora_rank=16", "learner.gradient_checkpointing=true"],
}


def matmul_rate(m: int, k: int, n: int, repeats: int = 10) -> float:
    """Best FLOP/s of an fp32 (m x k) @ (k x n) product over `repeats` timed runs."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b   # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best


def useful_flops(policy, episodes, reference: bool) -> float:
    """The FLOPs the update needs on these episodes (see the module docstring)."""
    cfg = policy.config
    width, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    body = sum(p.numel() for name, p in policy.named_parameters() if p.dim() == 2 and "embed_tokens" not in name and "lm_head" not in name)
    forward = 0.0
    for e in episodes:
        length = len(e.layout.token_ids)
        read = sum(e.layout.loss_mask)
        forward += 2 * body * length + 2 * length * length * width * layers + 2 * vocab * width * read
    return forward * (3 + (1 if reference else 0))


def child(name: str, steps: int, model: str) -> None:
    from bench.learner_step import batch
    from rl.advantages import estimator
    from rl.config import load_config
    from rl.learner import Learner, learner_options, shards
    from rl.models import resolve_model_path

    cfg = load_config(None, [f"model.path={model}", *CONFIGS[name]])
    options = learner_options(cfg, estimator(cfg.algo.advantage))
    learner = Learner(resolve_model_path(model), **options, master_port=29878)
    episodes = batch(random.Random(0), 0, cfg.algo.kl_coef)   # every episode carries signal
    shard = shards(episodes, 1, 1, cfg.algo.micro_batch_size, options["reference"], False)[0]
    learner.train_step(shard)   # warm-up
    seconds = []
    for _ in range(steps):
        seconds.append(learner.train_step(shard)["seconds"])
    print(json.dumps({
        "config": name, "seconds": seconds, "tokens": sum(len(e.layout.token_ids) for e in episodes),
        "flops": useful_flops(learner.policy, episodes, options["reference"]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration and round, after one warm-up step")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.model)

    from transformers import AutoConfig

    from rl.models import resolve_model_path

    shape = AutoConfig.from_pretrained(resolve_model_path(args.model))
    rows, rates = [], []
    for r in range(args.rounds):
        order = args.configs if r % 2 == 0 else list(reversed(args.configs))
        for name in order:
            rates.append(max(matmul_rate(2048, 2048, 2048), matmul_rate(2040, shape.hidden_size, shape.intermediate_size)))
            out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--model", args.model],
                                 cwd=REPO, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"[bench] {name} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["round"] = r + 1
            rows.append(row)
            best = min(row["seconds"])
            print(f"round {r + 1} {name}: {', '.join(f'{s:.1f}' for s in row['seconds'])} s/step, "
                  f"{row['tokens'] / best:.0f} tokens/s, {row['flops'] / best / 1e9:.1f} GFLOP/s useful, "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB (matmul before it: {rates[-1] / 1e9:.1f} GFLOP/s)", flush=True)
    rate = max(rates)
    print(f"\n{platform.node()} {time.strftime('%Y-%m-%d %H:%M')}, torch threads {rows[0]['threads']}; "
          f"matmul rate (best of the run): {rate / 1e9:.1f} GFLOP/s (range {min(rates) / 1e9:.1f}-{rate / 1e9:.1f})\n")
    print("| configuration | round | s/step (best) | tokens/s | useful GFLOP/s | of matmul rate | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        best = min(row["seconds"])
        print(f"| {row['config']} | {row['round']} | {best:.1f} | {row['tokens'] / best:.0f} | {row['flops'] / best / 1e9:.1f} | "
              f"{row['flops'] / best / rate:.0%} | {row['peak_rss_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
