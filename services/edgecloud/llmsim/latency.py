"""The simulator's latency model; no HTTP here.

``LatencyModel`` samples the paper's eq. (3) terms, TTFT and per-token TPOT, with bounded seeded
jitter and a load slowdown. It runs on the clocks of ``edgecloud.core.clock``.
"""

from __future__ import annotations

import random

from edgecloud.llmsim.profiles import LatencyProfile


class LatencyModel:
    """Samples TTFT and TPOT from a profile; every draw comes from the ``rng`` passed in.

    duration = mean * (1 + u), u ~ Uniform(-jitter, +jitter): bounded and unbiased. A token's TPOT
    is further multiplied by ``1 + slowdown_per_seq * (running - 1)``, ``running`` being the
    number of sequences decoding when it is scheduled (1 alone: no slowdown).
    """

    def __init__(self, profile: LatencyProfile):
        self.profile = profile

    def _jittered(self, mean: float, rng: random.Random) -> float:
        jitter = self.profile.jitter
        if jitter == 0 or mean == 0:
            return mean
        return mean * (1.0 + rng.uniform(-jitter, jitter))

    def ttft(self, rng: random.Random) -> float:
        return self._jittered(self.profile.ttft, rng)

    def slowdown(self, running: int) -> float:
        return 1.0 + self.profile.slowdown_per_seq * max(running - 1, 0)

    def tpot(self, rng: random.Random, running: int = 1) -> float:
        return self._jittered(self.profile.tpot, rng) * self.slowdown(running)
