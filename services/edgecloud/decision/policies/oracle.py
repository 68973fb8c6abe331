"""The ``oracle`` reference: knows the true outcome of both actions and takes the better one.

Only experiments can run it: they simulate both sides and pass ``DecisionContext(outcome_of=...)``.
Its choice is the best feasible action (quality constraint 4e met) with the least delay; if neither
action is feasible, the one with the higher eq.-10 reward (the lesser delay, as both pay the penalty).
Feasibility comes first even where a small penalty would let an infeasible action score higher. On a
tie the task stays local (no backhaul, no cloud cost). Its scores are the rewards of both actions.
"""

from __future__ import annotations

import random
from typing import Self

from edgecloud.core.reward import RewardParams, reward
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.decision.policies.base import Decision, DecisionContext, Policy, register


class MissingOutcomeError(ValueError):
    """A policy that needs the true outcomes was asked to decide without them (a live request)."""


def outcome_reward(params: RewardParams, t_total_s: float, quality_met: bool) -> float:
    """Eq. 10 for an outcome whose delay is already t_total (eq. 4's sum of transmission and generation)."""
    return reward(params, transmission_s=0.0, generation_s=t_total_s, quality_met=quality_met)


@register
class OraclePolicy(Policy):
    name = "oracle"

    def __init__(self, reward_params: RewardParams | None = None):
        self.reward_params = reward_params or RewardParams()

    @classmethod
    def from_service(cls, *, rng: random.Random, reward_params: RewardParams) -> Self:
        return cls(reward_params)

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        if context.outcome_of is None:
            raise MissingOutcomeError(
                "the oracle needs DecisionContext.outcome_of (the true outcome of each action); "
                "only experiments that simulate both sides can provide it"
            )
        outcomes = {action: context.outcome_of(action) for action in Action}
        rewards = {action: outcome_reward(self.reward_params, *outcome) for action, outcome in outcomes.items()}
        feasible = [action for action, (_, quality_met) in outcomes.items() if quality_met]
        # Action's order puts LOCAL first, and max keeps the first of equals: ties stay local.
        best = max(feasible or list(Action), key=lambda action: rewards[action])
        return Decision(best, DecisionSource.BASELINE, scores={action.value: rewards[action] for action in Action})
