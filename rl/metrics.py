"""Self-correction metrics over per-episode, per-turn correctness (pure functions).

An episode that stopped early keeps its last program for the remaining turns, so Acc@t always
describes the program a user would have after t turns.
"""
from __future__ import annotations

from typing import Sequence


def pad_turns(correct: Sequence[Sequence[bool]], num_turns: int) -> list[list[bool]]:
    return [list(c) + [c[-1]] * (num_turns - len(c)) for c in correct]


def accuracy_at(correct: Sequence[Sequence[bool]], num_turns: int) -> list[float]:
    """Acc@t for t = 1..num_turns."""
    padded = pad_turns(correct, num_turns)
    return [sum(c[t] for c in padded) / len(padded) for t in range(num_turns)] if padded else [0.0] * num_turns


def transitions(correct: Sequence[Sequence[bool]], num_turns: int, first: int = 0, last: int | None = None) -> dict:
    """Δ, Δi→c and Δc→i between turn `first` and turn `last` (0-based; default: the last turn)."""
    padded = pad_turns(correct, num_turns)
    last = num_turns - 1 if last is None else last
    n = max(len(padded), 1)
    i2c = sum((not c[first]) and c[last] for c in padded) / n
    c2i = sum(c[first] and not c[last] for c in padded) / n
    return {"delta": i2c - c2i, "delta_i2c": i2c, "delta_c2i": c2i}


def self_correction_report(correct: Sequence[Sequence[bool]], num_turns: int) -> dict[str, float]:
    """Acc@t1..Acc@tT plus the first-to-last-turn transitions, as flat metric names."""
    report = {f"acc_t{t + 1}": a for t, a in enumerate(accuracy_at(correct, num_turns))}
    if num_turns > 1:
        report.update(transitions(correct, num_turns))
    return report
