"""The runtime both commands share: the checks on user input, then the pieces that run a job —
the sandbox, Ray, the rollout workers and (for training) the learner — started cheapest first so
that bad input fails in seconds, and stopped in reverse order whatever happens.

    tasks = load_split(cfg, "train", cfg.data.limit)          # ConfigError names the key
    with Runtime(cfg, resolve_model(cfg), learner=True) as rt:
        env = rt.environment(cfg.episode.environment, tasks)
        episodes = rt.episodes(env, tasks, samples_per_task=4, revisions=1, temperature=1.0)
"""
from __future__ import annotations

import contextlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from rl.config import Config, ConfigError


def load_split(cfg: Config, split: str, limit: int | None) -> list:
    """The tasks of `split` ("train", "heldout" or "all") of the configured dataset."""
    from envs.datasets import DatasetError, load_tasks

    data = cfg.data
    options = {"path": data.path, "bad_rows": data.bad_rows} if data.dataset == "jsonl" else {}
    try:
        return load_tasks(data.dataset, split, data.heldout_fraction, data.split_seed, limit, **options)
    except DatasetError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None


def held_out_tasks(cfg: Config, split: str = "heldout", limit: int | None = None) -> tuple[list, str]:
    """What a held-out evaluation runs, and the environment its episodes run in: one task per row
    of eval.benchmark (its first attempt seeded: the `seeded` environment; `limit` keeps a
    deterministic subset of the rows), or else the tasks of `split` of the dataset with
    eval.environment."""
    import random

    from envs.datasets import DatasetError
    from envs.repair import load_benchmark

    if not cfg.eval.benchmark:
        return load_split(cfg, split, limit), cfg.eval.environment
    try:
        tasks = load_benchmark(cfg.eval.benchmark, cfg.data.heldout_fraction, cfg.data.split_seed)
    except DatasetError as exc:
        raise ConfigError(f"eval.benchmark: {exc}") from None
    if limit is not None and limit < len(tasks):
        tasks = sorted(random.Random(0).sample(tasks, limit), key=lambda t: t.task_id)
    return tasks, "seeded"


def resolve_model(cfg: Config) -> str:
    """model.path as a folder or hub id that from_pretrained and vLLM load offline."""
    from rl.models import resolve_model_path

    try:
        path = resolve_model_path(cfg.model.path)
    except FileNotFoundError as exc:
        raise ConfigError(f"model.path: {exc}") from None
    # resolve_model_path passes unknown names on as hub ids; a hub id is "name" or "org/name"
    if not Path(path).exists() and (path.startswith(("/", ".", "~")) or path.count("/") > 1):
        raise ConfigError(f"model.path: {cfg.model.path!r}: no such folder (and not a hub id)")
    return path


class Runtime:
    """Started by `with`: the sandbox (a canary program through the chosen level; with the Ray
    sandbox pool, after Ray), Ray (joined, or a local one on loopback), the rollout workers, the
    learner when `learner=True`. Attributes: executor, rollout, learner, tokenizer, chat,
    publish_dir (the node-local folder for weight files, on every node), weight_transport (how
    weights reach the workers, chosen once they are placed; None without a learner)."""

    def __init__(self, cfg: Config, model_path: str, *, learner: bool, run_name: str = "eval", log_dir: str | None = None):
        """log_dir: where the actors' output goes (rl/logs.py; None: Ray shows it here)."""
        self.cfg, self.model_path, self.with_learner, self.log_dir = cfg, model_path, learner, log_dir
        self.publish_dir = str(Path(cfg.weight_sync.directory) / run_name)
        self._thread = threading.local()   # each thread its own timers: async generation runs beside training
        self.executor = self.rollout = self.learner = self.weight_transport = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Runtime":
        from transformers import AutoTokenizer

        from envs.chat import ChatFormat

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.chat = ChatFormat(self.tokenizer)
            if self.cfg.sandbox.backend == "local":   # seconds, and needs no Ray: before everything else
                self._start_sandbox()
            self._start_ray()
            if self.executor is None:
                self._start_sandbox()
            self._start_workers()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def timers(self) -> dict[str, float]:
        """Seconds spent in generation and execution (and what the loop adds) by this thread."""
        if not hasattr(self._thread, "timers"):
            self._thread.timers = {}
        return self._thread.timers

    def _start_sandbox(self) -> None:
        from envs.sandbox import make_executor

        s = self.cfg.sandbox
        executor = make_executor(s.level, s.allow_unisolated, s.workers or 0, s.backend)
        self._stack.callback(executor.close)
        print(f"sandbox: {executor.info['level']} isolation, {executor.info['workers']} slots ({s.backend})")
        self.executor = _TimedExecutor(executor, lambda: self.timers)

    def _start_ray(self) -> None:
        import ray

        from rl.cluster import cluster_info, init_ray

        if not ray.is_initialized():
            self.ray_info = init_ray(self.cfg)
            self._stack.callback(ray.shutdown)
        else:
            self.ray_info = cluster_info(joined=True)

    def _start_workers(self) -> None:
        from rl.advantages import estimator
        from rl.cluster import LearnerGroup, Placement, RolloutGroup
        from rl.weight_sync import choose_transport

        placement = Placement(self.cfg, learner=self.with_learner)
        self._stack.callback(placement.close)
        # The learner's ranks and the rollout engines start side by side: each start is mostly a
        # process importing and loading on its own (minutes on a GPU node), so the run waits for
        # the slower of the two, not for both in turn. Not where they may share a GPU (a fractional
        # GPU each): vLLM measures the device's memory as it starts, so the learner allocates first.
        shared_gpu = any(0 < x < 1 for x in (self.cfg.learner.num_gpus_per_rank, self.cfg.rollout.num_gpus_per_worker))
        with ThreadPoolExecutor(1) as starting:
            learner = starting.submit(LearnerGroup, self.cfg, self.model_path, estimator(self.cfg.algo.advantage), placement,
                                      self.log_dir) if self.with_learner else None
            if shared_gpu and learner is not None:
                learner.result()
            self.rollout = RolloutGroup(self.cfg, self.model_path, self.publish_dir, placement, self.log_dir)
            self.learner = learner and learner.result()
        if self.learner is not None:
            self._stack.callback(shutil.rmtree, self.publish_dir, ignore_errors=True)
            self.weight_transport = choose_transport(self.cfg.weight_sync.transport, self.learner.node_id(), self.rollout.nodes)
            print(f"weight transport: {self.weight_transport}")
        self.generate = _timed(self.rollout.generate, lambda: self.timers, "generation")

    def environment(self, name: str, tasks: Sequence):
        """The environment `name` over `tasks` (repair verifies its faulty programs here)."""
        from envs.datasets import DatasetError
        from envs.environments import make_environment

        try:
            env = make_environment(name, self.cfg.episode, self.cfg.sandbox, self.executor, tasks, self.cfg.run.seed)
        except (DatasetError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        faulty = getattr(env, "faulty", None)
        if faulty is not None:
            print(f"repair curriculum: faulty first attempts for {len(faulty.programs)} of {len(tasks)} tasks")
        return env

    def episodes(self, env, tasks: Sequence, *, samples_per_task: int, revisions: int, temperature: float,
                 weight_version: int = 0, seed: int | None = None) -> list:
        """seed: the batch's sampling seed (rl/rollout.py:derive_seed); None: vLLM's own RNG."""
        from rl.episode import run_episodes
        from rl.rollout import SamplingSpec

        r = self.cfg.rollout
        spec = SamplingSpec(1, temperature, r.top_p if temperature > 0 else 1.0, r.max_new_tokens, seed)
        return run_episodes(tasks, env, self.generate, self.chat, self.tokenizer, samples_per_task=samples_per_task,
                            revisions=revisions, sampling=spec, weight_version=weight_version,
                            max_model_len=self.cfg.model.max_model_len)


def evaluate(rt: Runtime, env, tasks: Sequence, *, samples: int, temperature: float, ks: Sequence[int],
             chunk_tasks: int | None = None, weight_version: int = 0, progress: Callable[[str], None] | None = None):
    """Independent episodes (one per sample: revisions shape training batches only) on `tasks`,
    in chunks of `chunk_tasks`; returns (episodes, the report of rl/metrics.py:evaluation_metrics)."""
    from rl.metrics import evaluation_metrics
    from rl.rollout import derive_seed

    started, episodes = time.monotonic(), []
    chunk = chunk_tasks or len(tasks)
    for i in range(0, len(tasks), chunk):
        episodes += rt.episodes(env, tasks[i:i + chunk], samples_per_task=samples, revisions=1,
                                temperature=temperature, weight_version=weight_version,
                                seed=derive_seed(rt.cfg.run.seed, "eval", weight_version, i) if temperature > 0 else None)
        if progress is not None:
            done = min(i + chunk, len(tasks))
            acc = sum(e.turns[-1].correct for e in episodes) / len(episodes)
            progress(f"{done}/{len(tasks)} tasks, {len(episodes)} episodes, final-turn accuracy so far "
                     f"{100 * acc:.1f}%, {time.monotonic() - started:.0f} s")
    return episodes, evaluation_metrics(episodes, rt.cfg.episode.max_turns, ks)


class _TimedExecutor:
    """The executor, with the seconds spent in `run` accumulating in timers()['execution']."""

    def __init__(self, executor, timers: Callable[[], dict]):
        self.isolation, self.info = executor.isolation, executor.info
        self.run = _timed(executor.run, timers, "execution")
        self.close = executor.close
        self._executor = executor

    @property
    def replacements(self) -> int:
        """Sandbox actors replaced so far (the Ray pool's; a local executor restarts its own slots)."""
        return getattr(self._executor, "replacements", 0)


def _timed(fn, bucket: Callable[[], dict], key: str):
    """Wrap `fn` so the seconds spent in it accumulate in bucket()[key] (the calling thread's)."""
    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            timers = bucket()
            timers[key] = timers.get(key, 0.0) + time.monotonic() - start
    return wrapper
