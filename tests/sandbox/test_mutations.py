"""The mutation engine: deterministic, single-point, valid Python, scoped to one function."""
import ast
import difflib

import pytest

from envs.mutations import mutants, mutate

SOURCE = '''import math

def helper(x):
    return x + 1

def clamp_sum(xs, limit):
    """Sum of the positive values, capped at `limit`."""
    total = 0
    for i in range(len(xs)):
        if xs[i] > 0 and total < limit:
            total += xs[i] * 2 // 2
    return min(total, limit)
'''


def test_every_mutant_parses_and_differs_in_one_place():
    found = mutants(SOURCE, function="clamp_sum")
    original = ast.unparse(ast.parse(SOURCE))
    assert len(found) == len({m.source for m in found}) > 10
    for m in found:
        assert m.source != original
        ast.parse(m.source)
        hunks = difflib.SequenceMatcher(None, original.splitlines(), m.source.splitlines()).get_opcodes()
        assert sum(tag != "equal" for tag, *_ in hunks) == 1, m.description


def test_operators_cover_the_usual_bugs():
    by_operator = {}
    for m in mutants(SOURCE, function="clamp_sum"):
        by_operator.setdefault(m.operator, []).append(m.description)
    assert set(by_operator) == {"compare", "off_by_one", "arithmetic", "boolean", "negate", "wrong_return", "delete"}
    assert "`>` -> `<=`" in by_operator["compare"]
    assert "range bound len(xs) -> len(xs) - 1" in by_operator["off_by_one"]


def test_scoped_to_the_function():
    helper_line = "return x + 1"
    assert all(helper_line in m.source for m in mutants(SOURCE, function="clamp_sum"))
    assert any(helper_line not in m.source for m in mutants(SOURCE))
    with pytest.raises(ValueError):
        mutants(SOURCE, function="missing")


def test_deterministic_by_seed():
    assert mutate(SOURCE, seed=3, limit=4) == mutate(SOURCE, seed=3, limit=4)
    assert mutate(SOURCE, seed=3, limit=4) != mutate(SOURCE, seed=4, limit=4)
    assert len(mutate(SOURCE, seed=0)) == len(mutants(SOURCE))
