"""Generation tokens per second of the two rollout backends on the same batch, side by side in one
process, rounds alternated: vLLM (`rollout.backend=vllm`, the CPU build here) against transformers'
`generate` (`rollout.backend=hf`).

    python bench/rollout_backends.py [--prompts 16] [--max-new-tokens 128] [--rounds 3] [--model smollm2-135m-instruct]

Batch: the first `--prompts` starter tasks' first prompts (chat template applied), one sample
each at temperature 1, up to `--max-new-tokens` tokens, each worker on every CPU of the machine.
Prints per round the generated tokens per second of each backend and the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.chat import ChatFormat, first_user_message  # noqa: E402
from envs.datasets import load_tasks  # noqa: E402
from rl.models import resolve_model_path  # noqa: E402
from rl.rollout import HFRolloutWorker, RolloutWorker, SamplingSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    path = resolve_model_path(args.model)
    chat = ChatFormat(AutoTokenizer.from_pretrained(path))
    prompts = [chat.first_prompt_ids(first_user_message(t)) for t in load_tasks("starter", "all", 0.25, 0, None)[:args.prompts]]
    workers = {"vllm": RolloutWorker(path, "float32", 2048, 0, cpu_slot=(0, 1)),
               "hf": HFRolloutWorker(path, "float32", 2048, 0, cpu_slot=(0, 1))}
    spec = SamplingSpec(1, 1.0, 1.0, args.max_new_tokens, seed=0)
    for worker in workers.values():   # warm-up
        worker.generate(prompts[:2], spec)
    rates: dict[str, list[float]] = {name: [] for name in workers}
    for r in range(args.rounds):
        for name in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
            start = time.monotonic()
            samples = workers[name].generate(prompts, spec)
            rates[name].append(sum(len(s.token_ids) for (s,) in samples) / (time.monotonic() - start))
        print(f"round {r + 1}: vllm {rates['vllm'][-1]:.0f} tok/s, hf {rates['hf'][-1]:.0f} tok/s, "
              f"vllm / hf {rates['vllm'][-1] / rates['hf'][-1]:.2f}", flush=True)
    ratios = [a / b for a, b in zip(rates["vllm"], rates["hf"])]
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')} {os.cpu_count()} CPUs, {args.prompts} prompts x "
          f"{args.max_new_tokens} tokens: vllm / hf per round {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
