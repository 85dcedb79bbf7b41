"""What `selfcorrect train` and `selfcorrect eval` both check and start before vLLM: the task
split, the model path and the sandbox. Bad input becomes a ConfigError naming the key."""
from __future__ import annotations

from pathlib import Path

from rl.config import Config, ConfigError


def load_split(cfg: Config, split: str, limit: int | None) -> list:
    """The tasks of `split` ("train", "heldout" or "all") of the configured dataset."""
    from envs.datasets import DatasetError, load_tasks

    data = cfg.data
    options = {"path": data.path} if data.dataset == "jsonl" else {}
    try:
        return load_tasks(data.dataset, split, data.heldout_fraction, data.split_seed, limit, **options)
    except DatasetError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None


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


def start_sandbox(cfg: Config):
    """The executor at the configured level; a machine that cannot isolate model code fails
    here, in seconds, before vLLM starts."""
    from envs.sandbox import make_executor

    s = cfg.sandbox
    executor = make_executor(s.level, s.allow_unisolated, s.workers, s.backend)
    print(f"sandbox: {executor.info['level']} isolation, {executor.info['workers']} slots ({s.backend})")
    return executor
