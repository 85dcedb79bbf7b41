"""Seconds per GRPO step, end to end, of this project against TRL's GRPOTrainer at identical
settings, back to back on this machine.

    python bench/trl_grpo.py [--steps 6] [--rounds 1] [key=value ...]

Settings (issue 12): the default model (SmolLM2-135M-Instruct, fp32), the starter set's training
split, 2 prompts x 4 samples per step (batch 8), at most 128 new tokens, temperature 1, KL weight
0.04 (k3, in the loss), lr 1e-6, one turn, reward 1 when the program passes every test (public
and hidden, run in this project's sandbox on both sides), else 0. The same chat-templated prompt
(`envs.chat.first_user_message`, the model's own template) on both sides.

  this project   `launch.train --config configs/grpo.yaml` with the settings above: vLLM rollouts,
                 the sandbox, the DeepSpeed learner, the checksummed weight push, a step as
                 metrics.jsonl times it (time/step). Its shortcuts are all ones that cannot change
                 the update (a reference pass only where a KL weight is set, log-softmax only at
                 the loss's positions, length-sorted micro-batches); the one that changes it,
                 algo.filter_uniform_groups, is off in the preset, so the project's defaults and
                 "every shortcut that changes the update turned off" are the same run here.
  TRL            GRPOTrainer (TRL 1.16, its own virtual environment: --trl-venv, created on first
                 use from the wheels pip can reach, with this environment's torch and
                 transformers versions), Hugging Face generate, no vLLM, a step timed between
                 consecutive on_step_end callbacks.

Both run as their own processes, alternating which goes first round by round; per run the
median of steps 2.. (step 1 pays for start-up and first-touch) and the start-up to the first
step. The ratio printed is this project's median step over TRL's (issue 12's target: <= 0.5).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRL_VERSION = "1.16.0"
SETTINGS = ["data.dataset=starter", "rollout.tasks_per_step=2", "rollout.samples_per_task=4", "rollout.max_new_tokens=128",
            "rollout.temperature=1.0", "algo.kl_coef=0.04", "algo.kl_coef_first_turn=0.04", "algo.lr=1e-6",
            "episode.max_turns=1", "reward.name=binary", "eval.before=false", "eval.after=false",
            "run.save_final=false", "wandb.mode=disabled"]


# ---------------------------------------------------------------------------------------------
# TRL's side: runs in the TRL environment (`--trl-side SPEC.json`); imports only the standard
# library, this repository's envs package (the tasks, the prompt, the sandbox) and TRL's stack.

def trl_side(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(REPO))
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from envs.chat import extract_code, first_user_message
    from envs.datasets import load_tasks
    from envs.execution import ExecutionRequest, Verdict
    from envs.sandbox import make_executor

    tasks = load_tasks("starter", "train", spec["heldout_fraction"], spec["split_seed"])
    by_id = {t.task_id: t for t in tasks}
    executor = make_executor(spec["sandbox_level"])
    rows = [{"prompt": [{"role": "user", "content": first_user_message(t)}], "task_id": t.task_id} for t in tasks]

    def passes_every_test(prompts, completions, task_id, **_):
        codes = [extract_code(c[0]["content"]) for c in completions]
        runnable = [i for i, code in enumerate(codes) if code is not None]
        requests = []
        for i in runnable:
            t = by_id[task_id[i]]
            requests.append(ExecutionRequest(codes[i], t.public_tests + t.hidden_tests, t.entry_point, t.setup_code,
                                             spec["time_limit_s"], spec["memory_mb"]))
        results = dict(zip(runnable, executor.run(requests))) if requests else {}
        return [float(i in results and all(r.verdict is Verdict.PASS for r in results[i].tests)) for i in range(len(codes))]

    step_ends = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            step_ends.append(time.monotonic())

        def on_step_end(self, args, state, control, **kw):
            step_ends.append(time.monotonic())

    config = GRPOConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], per_device_train_batch_size=8, num_generations=4,
        gradient_accumulation_steps=1, num_iterations=1, max_completion_length=128, temperature=1.0, beta=0.04,
        learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, use_cpu=True, bf16=False, fp16=False,
        logging_steps=1, report_to="none", save_strategy="no", seed=spec["seed"], use_vllm=False,
        model_init_kwargs={"dtype": torch.float32})
    started = time.monotonic()
    trainer = GRPOTrainer(model=spec["model_path"], reward_funcs=passes_every_test, args=config,
                          train_dataset=Dataset.from_list(rows), callbacks=[Clock()])
    trainer.train()
    executor.close()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    Path(spec["result"]).write_text(json.dumps({
        "startup": step_ends[0] - started, "steps": [b - a for a, b in zip(step_ends, step_ends[1:])],
        "rewards": rewards, "torch_threads": torch.get_num_threads()}))


# ---------------------------------------------------------------------------------------------
# the driver: this project's environment

def ensure_trl_venv(venv: Path) -> Path:
    """TRL and its stack in their own environment, at this environment's torch and transformers."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.call([str(python), "-c", f"import trl; assert trl.__version__ == '{TRL_VERSION}'"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
        return python
    import accelerate
    import torch
    import transformers

    print(f"[trl] creating {venv} (trl {TRL_VERSION}, torch {torch.__version__}, transformers {transformers.__version__})", flush=True)
    subprocess.run([shutil.which("python3.11") or "python3", "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [f"torch=={torch.__version__.split('+')[0]}"], check=True)   # the CPU wheel, first
    subprocess.run(pip + [f"transformers=={transformers.__version__}", f"accelerate=={accelerate.__version__}",
                          f"trl=={TRL_VERSION}"], check=True)
    return python


def _run(command: list[str], log: Path, env: dict[str, str]) -> None:
    """One side's run as its own process; a failure stops the bench with the end of its output."""
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"exit status {code}: {' '.join(command)}\n{log.read_text()[-4000:]}")


def run_ours(steps: int, seed: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "launch.train", "--config", str(REPO / "configs" / "grpo.yaml"), *SETTINGS,
                   f"run.steps={steps}", f"run.seed={seed}", f"run.output_dir={out}", *overrides]
        started = time.monotonic()
        _run(command, Path(out) / "ours.log", {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"})
        total = time.monotonic() - started
        (run_dir,) = [p for p in Path(out).iterdir() if p.is_dir()]   # beside it: ours.log
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rows = [r for r in rows if "weight_version" in r]
    steps_s = [r["time/step"] for r in rows]
    return {"steps": steps_s, "startup": total - sum(steps_s), "rewards": [r["reward/mean"] for r in rows],
            "stages": {k: statistics.median(r[k] for r in rows[1:]) for k in ("time/generation", "time/execution", "time/training", "time/push")}}


def run_trl(python: Path, steps: int, seed: int) -> dict:
    from rl.config import load_config
    from rl.models import resolve_model_path

    cfg = load_config(REPO / "configs" / "grpo.yaml", SETTINGS)
    with tempfile.TemporaryDirectory() as out:
        spec = {"model_path": resolve_model_path(cfg.model.path), "heldout_fraction": cfg.data.heldout_fraction,
                "split_seed": cfg.data.split_seed, "sandbox_level": cfg.sandbox.level, "time_limit_s": cfg.sandbox.time_limit_s,
                "memory_mb": cfg.sandbox.memory_mb, "steps": steps, "seed": seed, "output_dir": out,
                "result": f"{out}/result.json"}
        Path(out, "spec.json").write_text(json.dumps(spec))
        _run([str(python), __file__, "--trl-side", f"{out}/spec.json"], Path(out) / "trl.log", dict(os.environ))
        return json.loads(Path(spec["result"]).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the median is of steps 2..)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, alternating which goes first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-venv", default=str(Path.home() / ".cache" / "selfcorrect" / "trl-venv"))
    parser.add_argument("--trl-side", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value for this project's run only")
    args = parser.parse_args()
    if args.trl_side:
        return trl_side(args.trl_side)
    sys.path.insert(0, str(REPO))
    python = ensure_trl_venv(Path(args.trl_venv))
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.steps} steps per run", flush=True)
    ratios = []
    for r in range(args.rounds):
        order = ["ours", "trl"] if r % 2 == 0 else ["trl", "ours"]
        results = {}
        for who in order:
            results[who] = run_ours(args.steps, args.seed + r, args.overrides) if who == "ours" else run_trl(python, args.steps, args.seed + r)
            m = results[who]
            stages = "  ".join(f"{k.split('/')[1]} {v:.1f}" for k, v in m.get("stages", {}).items())
            print(f"round {r + 1}, {who}: median step {statistics.median(m['steps'][1:]):.1f} s (steps "
                  f"{' '.join(f'{s:.0f}' for s in m['steps'])}; start-up {m['startup']:.0f} s; mean reward per step "
                  f"{' '.join(f'{x:.2f}' for x in m['rewards'])}){'  ' + stages if stages else ''}", flush=True)
        ratios.append(statistics.median(results["ours"]["steps"][1:]) / statistics.median(results["trl"]["steps"][1:]))
        print(f"round {r + 1}: this project's step / TRL's = {ratios[-1]:.2f}", flush=True)
    if len(ratios) > 1:
        print(f"ratio over {len(ratios)} rounds: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
