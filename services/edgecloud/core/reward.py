"""The reward of eq. 10 and the objective of eq. 4 it is built on.

r = T_target - t_total - r_penalty, with t_total = t_tran + alpha * t_cloud + (1 - alpha) * t_edge
(eq. 4; the paper prints eq. 10's t_total with minus signs, a slip: the objective it names is eq. 4's
sum). Only the side that served the request is measured, so t_total = t_tran + t_gen of that side.
r_penalty is a configured positive value when the quality constraint (4e) is violated, else 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardParams:
    target_delay_s: float = 30.0
    """T_target. Ours: about the cloud's generation time for the paper's 1,000-token average
    (0.42 s + 1000/32 s = 31.7 s), so most rewards are positive; only differences matter."""
    quality_penalty: float = 60.0
    """r_penalty. Ours: larger than any delay difference between edge and cloud at the paper's settings,
    so a decision that misses the quality requirement never beats one that meets it."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_delay_s) and self.target_delay_s > 0):
            raise ValueError("target_delay_s must be a positive number")
        if not (math.isfinite(self.quality_penalty) and self.quality_penalty > 0):
            raise ValueError("quality_penalty must be a positive number (the paper: 'a preset positive value')")


def total_delay(transmission_s: float, generation_s: float) -> float:
    """t_total of eq. 4 for one request: t_tran (eq. 1, backhaul included) + t_gen of the serving side."""
    for name, value in (("transmission_s", transmission_s), ("generation_s", generation_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number of seconds, got {value}")
    return transmission_s + generation_s


def reward(params: RewardParams, transmission_s: float, generation_s: float, quality_met: bool) -> float:
    """Eq. 10: r = T_target - t_total - r_penalty."""
    penalty = 0.0 if quality_met else params.quality_penalty
    return params.target_delay_s - total_delay(transmission_s, generation_s) - penalty
