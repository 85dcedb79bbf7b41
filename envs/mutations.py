"""A mutation engine: plausible single-point bugs in a correct Python program.

Pure functions of their arguments, deterministic across runs and machines (no hashing of
objects, no global state). Used to check the sandbox's verdicts against the reference harness
and to make faulty first attempts from reference solutions.

    mutants(source, function="f")    every single-point mutant of f, in a fixed order
    mutate(source, seed, limit=3)    `limit` of them chosen by `seed`, as source text

Each mutant changes exactly one place. Operators (the default set):
    compare       flipped or shifted comparison:  <  ->  >= / <=,   ==  ->  !=,   in  ->  not in
    off_by_one    an integer literal or a range() bound moved by one
    arithmetic    a swapped operator:  + <-> -,  * -> +,  // -> /,  % -> //
    boolean       and <-> or
    negate        an if / while / ternary condition negated
    wrong_return  a returned value replaced with None
    delete        a statement of a block replaced with `pass`

Extra operators, only with `extra=True` (the default set and its order are unchanged, so the
repair curriculum's seeded mutants stay the same):
    swap_args     two adjacent positional arguments of a call swapped:  f(a, b) -> f(b, a)
    swap_operands the operands of a non-commutative operator swapped:  a - b -> b - a
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from typing import Iterator

_COMPARE = {
    ast.Lt: (ast.GtE, ast.LtE), ast.LtE: (ast.Gt, ast.Lt), ast.Gt: (ast.LtE, ast.GtE), ast.GtE: (ast.Lt, ast.Gt),
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
}
_ARITHMETIC = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.Add,), ast.FloorDiv: (ast.Div,),
    ast.Div: (ast.FloorDiv,), ast.Mod: (ast.FloorDiv,), ast.Pow: (ast.Mult,),
}
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)
OPERATORS = ("compare", "off_by_one", "arithmetic", "boolean", "negate", "wrong_return", "delete")
EXTRA_OPERATORS = ("swap_args", "swap_operands")
_SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
    ast.FloorDiv: "//", ast.Div: "/", ast.Mod: "%", ast.Pow: "**", ast.And: "and", ast.Or: "or",
}


@dataclass(frozen=True)
class Mutant:
    source: str
    operator: str
    line: int
    description: str


def mutants(source: str, function: str | None = None, extra: bool = False) -> list[Mutant]:
    """Every single-point mutant of `source` (of `function` only, when given), deduplicated.

    A mutant whose text equals the original's (after normalising through the AST) or another
    mutant's is dropped. `extra` adds the EXTRA_OPERATORS' mutants after the default ones.
    Raises SyntaxError if `source` does not parse.
    """
    original = ast.unparse(ast.parse(source))
    seen, found = {original}, []
    count = sum(1 for _ in _sites(ast.parse(source), function, extra))
    for index in range(count):
        tree = ast.parse(source)
        site = next(s for i, s in enumerate(_sites(tree, function, extra)) if i == index)
        operator, line, description = site()
        text = ast.unparse(ast.fix_missing_locations(tree))
        if text not in seen:
            seen.add(text)
            found.append(Mutant(text, operator, line, description))
    return found


def mutate(source: str, seed: int, limit: int | None = None, function: str | None = None,
           extra: bool = False) -> list[str]:
    """Up to `limit` mutants (all when None) in an order fixed by `seed`."""
    chosen = mutants(source, function, extra)
    random.Random(seed).shuffle(chosen)
    return [m.source for m in chosen[:limit]]


def _scope(tree: ast.Module, function: str | None) -> list[ast.AST]:
    if function is None:
        return [tree]
    found = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function]
    if not found:
        raise ValueError(f"no function named {function!r} in the source")
    return found[:1]


def _sites(tree: ast.Module, function: str | None, extra: bool = False) -> Iterator:
    """Callables that each apply one mutation to `tree` in place, in a deterministic order.

    Each returns (operator, line, description). They are generated lazily over a fresh tree,
    so the i-th site always names the same place for the same source.
    """
    for scope in _scope(tree, function):
        for node in ast.walk(scope):
            yield from _node_sites(node)
    if extra:  # after every default site, so the default sites keep their indices
        for scope in _scope(tree, function):
            for node in ast.walk(scope):
                yield from _extra_sites(node)


def _extra_sites(node: ast.AST) -> Iterator:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Call):
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args):
            for i in range(len(node.args) - 1):
                a, b = node.args[i], node.args[i + 1]
                if ast.dump(a) != ast.dump(b):
                    yield _swap(node.args, i, i + 1, "swap_args", line,
                                f"arguments `{ast.unparse(a)}` and `{ast.unparse(b)}` of `{ast.unparse(node.func)}` swapped")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _NON_COMMUTATIVE) and ast.dump(node.left) != ast.dump(node.right):
        yield _swap_operands(node, line, f"`{ast.unparse(node)}` -> operands swapped")


def _node_sites(node: ast.AST) -> Iterator:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in _COMPARE.get(type(op), ()):
                yield _replace_in(node.ops, i, new(), "compare", line, f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[new]}`")
    elif isinstance(node, ast.BinOp):
        for new in _ARITHMETIC.get(type(node.op), ()):
            yield _set(node, "op", new(), "arithmetic", line, f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new]}`")
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield _set(node, "op", new(), "boolean", line, f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new]}`")
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield _set(node, "value", node.value + delta, "off_by_one", line, f"{node.value} -> {node.value + delta}")
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and node.args:
        bound = node.args[-1]
        if not isinstance(bound, ast.Constant):  # constants are already covered above
            for delta, op in ((1, ast.Add), (-1, ast.Sub)):
                shifted = ast.BinOp(bound, op(), ast.Constant(1))
                yield _replace_in(node.args, len(node.args) - 1, shifted, "off_by_one", line,
                                  f"range bound {ast.unparse(bound)} -> {ast.unparse(shifted)}")
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        yield _set(node, "test", ast.UnaryOp(ast.Not(), node.test), "negate", line, f"condition `{ast.unparse(node.test)}` negated")
    if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
        yield _set(node, "value", ast.Constant(None), "wrong_return", line, f"`return {ast.unparse(node.value)}` -> `return None`")
    for field in ("body", "orelse"):
        block = getattr(node, field, None)
        if isinstance(block, list) and len(block) > 1 and not isinstance(node, ast.Module):
            for i, stmt in enumerate(block):
                if not _is_docstring(stmt) and not isinstance(stmt, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
                    yield _replace_in(block, i, ast.Pass(), "delete", stmt.lineno, f"`{ast.unparse(stmt).splitlines()[0]}` deleted")


def _set(node, attr, value, operator, line, description):
    def apply():
        setattr(node, attr, value)
        return operator, line, description
    return apply


def _replace_in(items, index, value, operator, line, description):
    def apply():
        items[index] = value
        return operator, line, description
    return apply


def _swap(items, i, j, operator, line, description):
    def apply():
        items[i], items[j] = items[j], items[i]
        return operator, line, description
    return apply


def _swap_operands(node, line, description):
    def apply():
        node.left, node.right = node.right, node.left
        return "swap_operands", line, description
    return apply


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
