"""The ``random`` baseline: offload with probability ``p_offload`` (1/2 by default), from a seeded generator."""

from __future__ import annotations

import math
import random
from typing import Self

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.decision.policies.base import Decision, DecisionContext, Policy, register


@register
class RandomPolicy(Policy):
    name = "random"

    def __init__(self, rng: random.Random, p_offload: float = 0.5):
        if not (math.isfinite(p_offload) and 0.0 <= p_offload <= 1.0):
            raise ValueError(f"p_offload must be a probability in [0, 1], got {p_offload}")
        self._rng = rng
        self.p_offload = p_offload

    @classmethod
    def from_service(cls, *, rng: random.Random, reward_params: RewardParams) -> Self:
        return cls(rng)

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        action = Action.OFFLOAD if self._rng.random() < self.p_offload else Action.LOCAL
        return Decision(action, DecisionSource.BASELINE)
