"""One small interface for every offloading policy, and the name -> class registry.

Each policy (ICL, latest-experience ICL, DQN, always-edge, oracle, ...) is a class with one abstract
method, ``choose``; ``learn`` lets policies that train online (DQN) see each experience. Like
RouteLLM's ``Router`` and ``ROUTER_CLS``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.decision.experience import Experience

# What the true outcome of an action would be for this request: (t_total in seconds, quality met).
# Only experiments know it (they simulate both sides); the oracle reference needs it.
OutcomeOf = Callable[[Action], tuple[float, bool]]


@dataclass(frozen=True)
class DecisionContext:
    """What a policy may know besides x. Live requests have no ``outcome_of``."""

    outcome_of: OutcomeOf | None = None
    explore_draw: float | None = None
    """A uniform draw for this decision's exploration made by the caller (a gateway that remembers the policy's
    answer): an epsilon-greedy policy uses it instead of its own; the others ignore it."""


@dataclass(frozen=True)
class Decision:
    action: Action
    source: DecisionSource
    scores: dict[str, float] = field(default_factory=dict)
    """Candidate scores (log-probabilities for the LLM, Q-values for the DQN), by action name."""
    pool_version: int | None = None
    scoring_path: str | None = None
    """For LLM decisions: prompt_logprobs, top_logprobs or constrained (see ``scoring.py``)."""
    valid_for_s: float | None = None
    """For a fallback given while the LLM cannot score: how much longer it holds for x under its pool version
    (until the scorer tries the LLM again). None for every other decision."""


class Policy(ABC):
    name: ClassVar[str]
    uses_prompt: ClassVar[bool] = False  # decides from a meta-prompt (GET /v1/prompt shows it)

    remembered_by_version: ClassVar[bool] = False
    """Its LLM-scored and cached answers hold for x until the pool version or the scorer changes, and its fallbacks
    while the LLM cannot score for their ``valid_for_s`` too, so a caller may remember them
    (``DecisionResponse.valid_for_version``)."""

    @abstractmethod
    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        """The action for x = ``state``."""

    def epsilon(self) -> float | None:
        """The probability with which the next decision explores; None if the policy is not epsilon-greedy."""
        return None

    def scorer(self) -> str | None:
        """The fingerprint of what scores its answers (``remembered_by_version`` policies), else None."""
        return None

    def skip(self, steps: int) -> None:
        """Count ``steps`` decisions a caller answered from its memory (steps of an exploration schedule)."""
        return None

    async def learn(self, experience: Experience) -> None:
        """See the outcome of a decision; policies that learn from the pool alone ignore it."""
        return None

    @classmethod
    def from_service(cls, *, rng: random.Random, reward_params: RewardParams) -> Self:
        """Build the policy from what the decision service has; policies needing more are built there."""
        raise TypeError(f"policy {cls.name!r} cannot be built from the service's seed and reward parameters")


POLICY_REGISTRY: dict[str, type[Policy]] = {}
# Policies that need what only an experiment knows (the true outcome of both actions).
EXPERIMENT_ONLY = frozenset({"oracle"})


def live_policy_names(prompted_only: bool = False) -> list[str]:
    """The policies a running decision service serves (``prompted_only``: those that decide from a prompt)."""
    return sorted(
        name
        for name, policy in POLICY_REGISTRY.items()
        if name not in EXPERIMENT_ONLY and (policy.uses_prompt or not prompted_only)
    )


def register(policy: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy selectable by its ``name`` in config and on the command line."""
    POLICY_REGISTRY[policy.name] = policy
    return policy
