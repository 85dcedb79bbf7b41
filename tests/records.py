"""Episode records built by hand for tests of rewards, credit assignment and the learner."""
from envs.environments import Verdicts
from envs.execution import TestResult, Verdict
from rl.episode import Turn


def verdicts(hidden_passed: int, hidden_total: int, public_passed: int = 0, public_total: int = 0, code: str | None = "code") -> Verdicts:
    """A program passing the first `passed` of each set of tests (no program: no results)."""
    def results(passed, total):
        return () if code is None else tuple(TestResult(Verdict.PASS if i < passed else Verdict.FAIL) for i in range(total))
    return Verdicts(code, results(public_passed, public_total), results(hidden_passed, hidden_total), public_total, hidden_total)


def turn(hidden_passed: int, hidden_total: int, public_passed: int = 0, public_total: int = 0, *, code: str | None = "code",
         text: str = "x", prompt=(1, 2), response_len: int = 3, logprob: float = -0.1) -> Turn:
    return Turn(list(prompt), [5] * response_len, [logprob] * response_len, "stop", text,
                verdicts(hidden_passed, hidden_total, public_passed, public_total, code))


def train_step(learner, batch, mini_batches: int = 1) -> dict:
    """One rank's update on a whole batch, as the learner group hands it (rl/learner.py:shards)."""
    from rl.learner import shards

    (shard,) = shards(batch, mini_batches, 1, learner.algo.micro_batch_size, learner.reference is not None, learner.critic)
    return learner.train_step(shard)
