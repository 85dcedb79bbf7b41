"""An environment plug-in for tests, as a user would write one: the repair environment, with a
linter's note appended to every feedback message."""
from envs.environments import Repair

LINT_OK = "Lint: no line is longer than 79 characters."


class LintedRepair(Repair):
    def feedback(self, reply, verdicts):
        long_lines = sum(len(line) > 79 for line in (verdicts.code or "").splitlines())
        note = LINT_OK if not long_lines else f"Lint: {long_lines} line(s) longer than 79 characters."
        return super().feedback(reply, verdicts) + "\n" + note
