"""Terms added to turn rewards after the reward function: pure functions over lists."""
from __future__ import annotations

from typing import Sequence


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment for a reply of `length` tokens with a budget of
    `max_length`: 0 up to max_length - buffer, then falling linearly to -1 at max_length
    (a reply cut off by the budget gets -1). buffer 0 disables it."""
    if buffer <= 0 or length <= max_length - buffer:
        return 0.0
    return max(-1.0, (max_length - buffer - length) / buffer)


def with_kl_penalty(turn_rewards: Sequence[float], turn_kl: Sequence[float], coefs: Sequence[float]) -> list[float]:
    """r_t - beta_t * KL_t: the KL to the reference as a per-turn reward penalty (RLEF, CoCoS)."""
    return [r - c * k for r, c, k in zip(turn_rewards, coefs, turn_kl)]
