"""Fixed baselines: ``always_edge`` serves every task locally, ``always_cloud`` offloads every task.

They bound the trade-off from both sides: always_edge has the least delay and misses the quality of
quality-preferred tasks, always_cloud meets every quality requirement at the cloud's delay.
"""

from __future__ import annotations

import random
from typing import ClassVar, Self

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.decision.policies.base import Decision, DecisionContext, Policy, register


class AlwaysPolicy(Policy):
    """Answers ``action`` whatever the task."""

    action: ClassVar[Action]

    @classmethod
    def from_service(cls, *, rng: random.Random, reward_params: RewardParams) -> Self:
        return cls()

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        return Decision(self.action, DecisionSource.BASELINE)


@register
class AlwaysEdgePolicy(AlwaysPolicy):
    name = "always_edge"
    action = Action.LOCAL


@register
class AlwaysCloudPolicy(AlwaysPolicy):
    name = "always_cloud"
    action = Action.OFFLOAD
