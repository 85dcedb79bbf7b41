"""A correct program that is not its task's reference verbatim: the reference solution with
docstrings and comments dropped and local variables renamed (an AST round trip). The repair
benchmark's correct rows (bench/build_repair_benchmark.py) and the repair curriculum's correct
first attempts (envs/environments.py, `episode.seeded_correct_turns`) are written this way: a model
asked to keep a right program should not be looking at text it may have memorised."""
from __future__ import annotations

import ast
import builtins

_RENAMES = {
    "i": "idx", "j": "jdx", "k": "kdx", "n": "num", "m": "size", "x": "val", "y": "other", "c": "ch",
    "s": "text", "l": "items", "d": "table", "a": "first", "b": "second", "res": "out", "result": "out",
    "ans": "out", "ret": "out", "count": "counter", "total": "acc", "lst": "seq", "arr": "seq",
}


def rewrite(source: str, entry_point: str, setup_code: str = "") -> str:
    """The program with docstrings dropped and the entry point's local variables renamed.

    Only names bound inside the entry point (assignments, loop and comprehension targets, nested
    functions and their parameters, `except ... as`) are renamed, every occurrence within it to
    one fresh name, so the program means the same: not its parameters (tests may pass them by
    keyword), nor names that are also module-level, builtins, keyword arguments, imports or match
    captures. Comments disappear with the AST round trip. A program that this leaves the same up
    to formatting (a one-line function without locals or docstring) gets its parameters renamed
    instead; whoever uses the result runs it in the sandbox to confirm the tests still pass
    (bench/build_repair_benchmark.py:build, envs/repair.py:load_correct_programs).
    """
    original = ast.dump(ast.parse(source))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.body and _is_docstring(node.body[0]):
                node.body = node.body[1:] or [ast.Pass()]
    function = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == entry_point), None)
    if function is not None:
        mapping = _local_renames(tree, function, setup_code)
        if not mapping and ast.dump(tree) == original:
            mapping = _local_renames(tree, function, setup_code, parameters=True)
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id in mapping:
                node.id = mapping[node.id]
            elif isinstance(node, ast.arg) and node.arg in mapping:
                node.arg = mapping[node.arg]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not function and node.name in mapping:
                node.name = mapping[node.name]
            elif isinstance(node, ast.ExceptHandler) and node.name in mapping:
                node.name = mapping[node.name]
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def _local_renames(tree: ast.Module, function: ast.FunctionDef, setup_code: str,
                   parameters: bool = False) -> dict[str, str]:
    """Old name -> fresh name for the entry point's locals (its parameters only, with `parameters`)."""
    params = {a.arg for a in _arguments(function.args)}
    bound, fixed = (set(params), set()) if parameters else (set(), set())
    if parameters:
        params = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node is not function:
            bound.update(a.arg for a in _arguments(node.args))
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            fixed.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            fixed.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.keyword) and node.arg:
            fixed.add(node.arg)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            fixed.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            fixed.add(node.rest)
        elif isinstance(node, ast.ClassDef):
            fixed.add(node.name)
    module_level = _module_names(tree) | (_module_names(ast.parse(setup_code)) if setup_code.strip() else set())
    renamable = sorted(bound - params - fixed - module_level - set(dir(builtins)))
    taken = _identifiers(tree) | set(dir(builtins)) | module_level
    mapping = {}
    for name in renamable:
        new = _RENAMES.get(name, f"{name}_")
        base, suffix = new, 2
        while new in taken:
            new, suffix = f"{base}{suffix}", suffix + 1
        taken.add(new)
        mapping[name] = new
    return mapping


def _arguments(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
            *([args.kwarg] if args.kwarg else [])]


def _module_names(tree: ast.Module) -> set[str]:
    names = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        else:
            names.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names


def _identifiers(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name", "attr", "asname"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                found.add(value)
    return found


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
