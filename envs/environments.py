"""Environments: the turn logic of a self-correction episode, batched.

An environment opens an episode for a task (the first user message, and optionally first
attempts it writes itself), judges the replies of a turn (extracts each program and runs it with
the task's public and hidden tests: all of a turn's programs in one sandbox batch), and says what
to show before the next turn, or that the episode is done. The rollout loop (`rl/episode.py`)
owns only the policy's side: sampling, tokens, context room. A new kind of feedback (a linter, a
critic model, another test protocol) is a new environment, not an edit to the loop.

    env = make_environment("self_correction", episode_cfg, sandbox_cfg, executor, tasks, seed)
    openings = env.open(tasks, attempts)          # one Opening per task
    results = env.step([Reply(task, turn, text), ...])   # one StepResult per reply

Built-ins (registered in ENVIRONMENTS; a plug-in is 'module:Class' or 'file.py:Class', a
subclass of `Environment` constructed with the same arguments):
  self_correction  after each turn, `episode.feedback`: SCoRe's generic note (instruction) or
                   RLEF's failing public tests (execution)
  repair           the same, but for a share `episode.seeded_first_turns` of the tasks the first
                   attempts are verified faulty programs (the repair curriculum, SCoRe's MBPP-R),
                   and for a share `episode.seeded_correct_turns` their rewritten reference
                   solutions (verified to pass: to be kept): the policy writes only the revisions
  seeded           every task carries its own first attempt (the held-out repair benchmark)
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from envs.chat import INSTRUCTION_FEEDBACK, execution_feedback, extract_code, first_user_message
from envs.execution import ExecutionRequest, Executor, TestResult, Verdict
from envs.registry import Registry
from envs.tasks import Task

if TYPE_CHECKING:  # config sections are passed in; envs does not depend on rl at run time
    from rl.config import EpisodeConfig, SandboxConfig


@dataclass(frozen=True)
class Verdicts:
    """What one turn's program achieved: per-test results of the public and hidden tests (empty
    when the reply held no program) and how many tests each set has."""

    code: str | None
    public: tuple[TestResult, ...] = ()
    hidden: tuple[TestResult, ...] = ()
    public_total: int = 0
    hidden_total: int = 0

    @property
    def has_code(self) -> bool:
        return self.code is not None

    @property
    def public_passed(self) -> int:
        return sum(r.verdict is Verdict.PASS for r in self.public)

    @property
    def hidden_passed(self) -> int:
        return sum(r.verdict is Verdict.PASS for r in self.hidden)

    @property
    def correct(self) -> bool:
        """Passes every test, hidden and public: the accuracy criterion of every report."""
        return self.has_code and self.hidden_passed == self.hidden_total and self.public_passed == self.public_total

    @property
    def hidden_fraction(self) -> float:
        return self.hidden_passed / self.hidden_total if self.hidden_total else 0.0

    @property
    def sandbox_failures(self) -> int:
        """Tests the sandbox machinery could not judge (Verdict.SANDBOX): counted per step."""
        return sum(r.verdict is Verdict.SANDBOX for r in self.public + self.hidden)


@dataclass(frozen=True)
class Opening:
    """How an episode of a task begins: the first user message, and the first attempts the
    environment writes itself (one reply text per attempt), or None when the policy samples them."""

    message: str
    first_replies: list[str] | None = None


@dataclass(frozen=True)
class Reply:
    """The policy's (or a seeded) reply at turn `turn` (0-based) of an episode of `task`."""

    task: Task
    turn: int
    text: str


@dataclass(frozen=True)
class StepResult:
    verdicts: Verdicts
    feedback: str | None    # what to show before the next turn; None: the episode is done


class Environment:
    """Self-correction with feedback after every turn (the `self_correction` environment).

    Subclasses change one thing by overriding one method: `feedback` (what is shown), `open`
    (how episodes start), `done` (when they end), `judge` (how replies are scored). One that
    keeps state across batches (an RNG, a curriculum) returns it from `state_dict` and takes it
    back in `load_state_dict`, so that a resumed run continues exactly (docs/checkpoints.md)."""

    def __init__(self, episode: "EpisodeConfig", sandbox: "SandboxConfig", executor: Executor,
                 tasks: Sequence[Task], seed: int = 0):
        self.cfg, self.limits, self.executor = episode, sandbox, executor

    def open(self, tasks: Sequence[Task], attempts: int) -> list[Opening]:
        return [Opening(first_user_message(task)) for task in tasks]

    def step(self, replies: Sequence[Reply]) -> list[StepResult]:
        verdicts = self.judge(replies)
        return [StepResult(v, None if self.done(r, v) else self.feedback(r, v)) for r, v in zip(replies, verdicts)]

    def judge(self, replies: Sequence[Reply]) -> list[Verdicts]:
        """Every program of the batch in one executor call; public and hidden tests together."""
        codes = [extract_code(r.text) for r in replies]
        runnable = [i for i, code in enumerate(codes) if code is not None]
        requests = [ExecutionRequest(codes[i], replies[i].task.public_tests + replies[i].task.hidden_tests,
                                     replies[i].task.entry_point, replies[i].task.setup_code,
                                     self.limits.time_limit_s, self.limits.memory_mb) for i in runnable]
        results = dict(zip(runnable, self.executor.run(requests))) if requests else {}
        out = []
        for i, (reply, code) in enumerate(zip(replies, codes)):
            task = reply.task
            tests = results[i].tests if i in results else ()
            n = len(task.public_tests) if i in results else 0
            out.append(Verdicts(code, tests[:n], tests[n:], len(task.public_tests), len(task.hidden_tests)))
        return out

    def done(self, reply: Reply, verdicts: Verdicts) -> bool:
        if reply.turn + 1 >= self.cfg.max_turns:
            return True
        return self.cfg.stop_on_public_pass and verdicts.public_total > 0 and verdicts.public_passed == verdicts.public_total

    def feedback(self, reply: Reply, verdicts: Verdicts) -> str:
        if self.cfg.feedback == "instruction":
            return INSTRUCTION_FEEDBACK
        return execution_feedback(verdicts.public if verdicts.has_code else None, reply.task,
                                  self.cfg.max_feedback_chars, self.cfg.max_failures_shown)

    def state_dict(self) -> dict:
        """What the environment needs to continue exactly where it is (picklable); none here."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")


class Repair(Environment):
    """Self-correction whose first attempts are, for a share of the tasks, faulty programs the
    environment wrote (verified to fail in the sandbox when the environment starts) and, for
    another share, the task's reference solution rewritten (verified to pass): a curriculum of
    fixing when wrong and keeping when right. The other tasks start from samples."""

    def __init__(self, episode: "EpisodeConfig", sandbox: "SandboxConfig", executor: Executor,
                 tasks: Sequence[Task], seed: int = 0):
        from envs.repair import FaultyPrograms, load_correct_programs, load_faulty_programs

        super().__init__(episode, sandbox, executor, tasks, seed)
        limits = dict(time_limit_s=sandbox.time_limit_s, memory_mb=sandbox.memory_mb)
        self.faulty = (load_faulty_programs(tasks, episode.first_turns, executor, seed=seed, **limits)
                       if episode.seeded_first_turns else FaultyPrograms({}))
        if episode.seeded_first_turns and not self.faulty.programs:
            raise ValueError(f"episode.first_turns: no faulty program found for any of {len(tasks)} tasks from {episode.first_turns!r}")
        self.correct = load_correct_programs(tasks, executor, **limits) if episode.seeded_correct_turns else {}
        if episode.seeded_correct_turns and not self.correct:
            raise ValueError(f"episode.seeded_correct_turns: none of the {len(tasks)} tasks has a reference solution "
                             "that passes its tests once rewritten")
        self.rng = random.Random(seed + 1)

    def open(self, tasks: Sequence[Task], attempts: int) -> list[Opening]:
        from envs.repair import as_reply

        openings = []
        for task, opening in zip(tasks, super().open(tasks, attempts)):
            faulty, correct = task.task_id in self.faulty, task.task_id in self.correct
            # One draw per task that could be seeded (none for the others: a run without correct
            # seeds draws exactly as before they existed); below the faulty share, a faulty
            # program, then the correct share, then the model's own first attempts.
            u = self.rng.random() if faulty or correct else 1.0
            if faulty and u < self.cfg.seeded_first_turns:
                opening = Opening(opening.message, [as_reply(p) for p in self.faulty.draw(task.task_id, attempts)])
            elif correct and self.cfg.seeded_first_turns <= u < self.cfg.seeded_first_turns + self.cfg.seeded_correct_turns:
                opening = Opening(opening.message, [as_reply(self.correct[task.task_id])] * attempts)
            openings.append(opening)
        return openings

    def state_dict(self) -> dict:
        """Which tasks get seeded and which faulty programs they draw: both RNGs."""
        return {"seeding": self.rng.getstate(), "faulty": self.faulty.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["seeding"])
        self.faulty.rng.setstate(state["faulty"])


class SeededAttempts(Environment):
    """Every episode starts from the first attempt its task carries (`task.metadata
    ["first_attempt"]`): the held-out repair benchmark (envs/repair.py:load_benchmark), where
    each task is one seeded attempt, faulty or correct, and the policy writes only revisions."""

    def open(self, tasks: Sequence[Task], attempts: int) -> list[Opening]:
        from envs.repair import as_reply

        missing = [t.task_id for t in tasks if "first_attempt" not in t.metadata]
        if missing:
            raise ValueError(f"environment 'seeded': tasks without a first attempt: {missing[:5]}")
        return [Opening(o.message, [as_reply(t.metadata["first_attempt"])] * attempts)
                for t, o in zip(tasks, super().open(tasks, attempts))]


ENVIRONMENTS: Registry[type[Environment]] = Registry("environment", "selfcorrect.environments")
ENVIRONMENTS.register("self_correction")(Environment)
ENVIRONMENTS.register("repair")(Repair)
ENVIRONMENTS.register("seeded")(SeededAttempts)


def environment_class(name: str) -> type[Environment]:
    """The environment registered as `name`, or a plug-in class; anything else is an error."""
    from envs.registry import RegistryError

    cls = ENVIRONMENTS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise RegistryError(f"environment {name!r} is {cls!r}, not a subclass of envs.environments.Environment")
    return cls


def make_environment(name: str, episode: "EpisodeConfig", sandbox: "SandboxConfig", executor: Executor,
                     tasks: Sequence[Task], seed: int = 0) -> Environment:
    return environment_class(name)(episode, sandbox, executor, tasks, seed)
