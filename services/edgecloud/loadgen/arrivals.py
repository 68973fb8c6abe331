"""When each request is sent in an open-loop run: pure, seeded functions of time; no HTTP here.

Gaps between requests follow a gamma distribution with shape B (the burstiness) and mean 1/R, as in
``vllm bench serve --burstiness``: B = 1 is exponential (a Poisson process), B < 1 burstier, B > 1
more regular; the coefficient of variation of the gaps is 1/sqrt(B). The first request goes at t = 0,
as in vLLM's benchmark.

Ramp-up over T seconds makes the intensity rise linearly, lambda(t) = R * min(1, t / T). It is
produced by a time change of the un-ramped process: with s_k its k-th send time, the ramped send
time t_k solves Lambda(t_k) = R * s_k, Lambda being the integral of lambda, which gives

    t_k = sqrt(2 * T * s_k)   if s_k <= T / 2
    t_k = s_k + T / 2          otherwise.

For Poisson arrivals this is exactly the non-homogeneous Poisson process of intensity lambda(t);
after the ramp the process runs at rate R, T/2 seconds behind the un-ramped one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator


def unit_gaps(burstiness: float, rng: random.Random) -> Iterator[float]:
    """Endless gaps with mean 1: Gamma(shape=B, scale=1/B). Divided by a rate they become seconds.

    Drawing unit gaps and scaling them keeps the arrivals' shape the same at every rate of a sweep.
    """
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    scale = 1.0 / burstiness
    while True:
        yield rng.gammavariate(burstiness, scale)


def ramped(s: float, ramp_up_s: float) -> float:
    """The ramped send time of the un-ramped send time ``s`` (module docstring)."""
    if ramp_up_s <= 0:
        return s
    if s <= ramp_up_s / 2:
        return math.sqrt(2.0 * ramp_up_s * s)
    return s + ramp_up_s / 2


def send_times(rate: float, burstiness: float, ramp_up_s: float, rng: random.Random) -> Iterator[float]:
    """Endless send times in seconds from the start of a run: 0, then cumulated gamma gaps, ramped."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
    s = 0.0
    yield ramped(s, ramp_up_s)
    for gap in unit_gaps(burstiness, rng):
        s += gap / rate
        yield ramped(s, ramp_up_s)
