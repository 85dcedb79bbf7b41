"""Seconds per training step of the synchronous loop against the asynchronous one
(algo.max_staleness = 1), with the stage breakdown, both sharing the machine's cores and with the
phases on disjoint cores (generation bound to core 0, the learner to one thread).

    python bench/async_step.py [--steps 4] [--rounds 1] [key=value ...]

Each run is the default job (configs/default.yaml, no held-out evaluation) as its own process;
the modes alternate round by round. Per run it prints the median over steps 2.. (step 1 has
nothing to overlap) of time/step, time/generation, time/training and, for the asynchronous
loop, time/waiting_for_rollout, and the ratio async step / max(generation, training): the
issue's target is <= 1.2 with disjoint cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "sync, shared cores": ([], {}),
    "async, shared cores": (["algo.max_staleness=1"], {}),
    # vLLM's compute threads on core 0, the learner's one torch thread takes the other core
    "sync, disjoint cores": (["learner.torch_threads=1"], {"VLLM_CPU_OMP_THREADS_BIND": "0"}),
    "async, disjoint cores": (["algo.max_staleness=1", "learner.torch_threads=1"], {"VLLM_CPU_OMP_THREADS_BIND": "0"}),
}
KEYS = ("time/step", "time/generation", "time/execution", "time/passes", "time/training", "time/push", "time/waiting_for_rollout")


def run(mode: str, steps: int, overrides: list[str]) -> dict[str, float]:
    extra, env = MODES[mode]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "launch.train", "--config", str(REPO / "configs" / "default.yaml"),
                   f"run.steps={steps}", f"run.output_dir={out}", "eval.before=false", "eval.after=false",
                   "run.save_final=false", "wandb.mode=disabled", *extra, *overrides]
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, **env})
        (run_dir,) = Path(out).iterdir()
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rows = [r for r in rows if "weight_version" in r][1:]
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, default job, {args.steps} steps per run")
    for r in range(args.rounds):
        order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
        results = {mode: run(mode, args.steps, args.overrides) for mode in order}
        for mode in MODES:
            m = results[mode]
            bound = max(m["time/generation"] + m["time/execution"] + m["time/passes"], m["time/training"] + m["time/push"])
            print(f"round {r + 1}, {mode}: step {m['time/step']:.1f} s (generation {m['time/generation']:.1f}, execution "
                  f"{m['time/execution']:.1f}, passes {m['time/passes']:.1f}, training {m['time/training']:.1f}, push "
                  f"{m['time/push']:.1f}, waiting {m['time/waiting_for_rollout']:.1f}); step / max(rollout, training) "
                  f"{m['time/step'] / bound:.2f}", flush=True)
        for cores in ("shared", "disjoint"):
            print(f"round {r + 1}, {cores} cores: async / sync step time "
                  f"{results[f'async, {cores} cores']['time/step'] / results[f'sync, {cores} cores']['time/step']:.2f}")


if __name__ == "__main__":
    main()
