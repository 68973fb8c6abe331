"""The paper's vocabulary, shared by every service: the decision's input x (eq. 8), its output, and what
the pool says of an experience, all as closed sets.

Only values of these sets and numbers ever enter the decision prompt, never user text: a prompt
full of instructions cannot reach the decision LLM because nothing of it is copied (section "Safety"
of docs/decision.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import StrEnum


class ServiceType(StrEnum):
    """The paper's task kinds (section IV-A): regular ones and quality-preferred ones."""

    CHAT = "chat"
    TRANSLATION = "translation"
    SUMMARIZATION = "summarization"
    INFORMATION_EXTRACTION = "information_extraction"
    SCIENCE_REASONING = "science_reasoning"
    MATH = "math"
    CODING = "coding"

    @property
    def quality_preferred(self) -> bool:
        return self in QUALITY_PREFERRED


QUALITY_PREFERRED = frozenset({ServiceType.SCIENCE_REASONING, ServiceType.MATH, ServiceType.CODING})


class Action(StrEnum):
    """The decision alpha of eq. 1: ``local`` (alpha = 0, the edge) or ``offload`` (alpha = 1, the cloud)."""

    LOCAL = "local"
    OFFLOAD = "offload"

    @property
    def alpha(self) -> int:
        return 1 if self is Action.OFFLOAD else 0


# Upper edges (inclusive) of the output-length bins, in tokens. The paper's average output is
# 1,000 tokens (section IV-A); the bins put it in the middle and keep the keyword grid small.
TOKEN_BIN_EDGES: tuple[int, ...] = (128, 512, 1024, 2048)


def token_bin_labels(edges: tuple[int, ...] = TOKEN_BIN_EDGES) -> tuple[str, ...]:
    lows = (1, *(edge + 1 for edge in edges))
    return (*(f"{low}-{high}" for low, high in zip(lows, edges, strict=False)), f">{edges[-1]}")


TOKEN_BINS: tuple[str, ...] = token_bin_labels()


def token_bin(estimated_tokens: int, edges: tuple[int, ...] = TOKEN_BIN_EDGES) -> str:
    """The bin label of an estimated output length (tokens >= 1)."""
    if estimated_tokens < 1:
        raise ValueError(f"estimated output tokens must be at least 1, got {estimated_tokens}")
    return token_bin_labels(edges)[bisect.bisect_left(edges, estimated_tokens)]


@dataclass(frozen=True)
class TaskState:
    """x of eq. 8: {service type, estimated output token size}; its values are the example's keywords (eq. 9)."""

    service_type: ServiceType
    token_bin: str

    def __post_init__(self) -> None:
        if self.token_bin not in TOKEN_BINS:
            raise ValueError(f"unknown token bin {self.token_bin!r}; bins are {list(TOKEN_BINS)}")

    @classmethod
    def of(cls, service_type: ServiceType | str, estimated_tokens: int) -> TaskState:
        return cls(ServiceType(service_type), token_bin(estimated_tokens))

    @property
    def key(self) -> str:
        """The keyword combination as one string, e.g. ``chat|513-1024`` (a pool key)."""
        return f"{self.service_type.value}|{self.token_bin}"

    @classmethod
    def from_key(cls, key: str) -> TaskState:
        service_type, _, bin_label = key.partition("|")
        return cls(ServiceType(service_type), bin_label)


def keyword_grid() -> list[TaskState]:
    """Every x: each service type with each token bin."""
    return [TaskState(service_type, label) for service_type in ServiceType for label in TOKEN_BINS]


def rule_action(state: TaskState) -> Action:
    """The last-resort rule: quality-preferred service types need the cloud's quality, others stay local."""
    return Action.OFFLOAD if state.service_type.quality_preferred else Action.LOCAL


class Evaluation(StrEnum):
    """An experience's evaluation (eq. 9, step 3 of section III-A): Good ones may serve as examples."""

    GOOD = "good"
    BAD = "bad"


class ReplayOutcome(StrEnum):
    """What prioritized replay (section III-B, ``decision.replay``) did with an experience."""

    ADDED = "added"
    REPLACED = "replaced"
    KEPT_EXISTING = "kept_existing"
    REJECTED_BAD = "rejected_bad"

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation.GOOD if self.changes_pool else Evaluation.BAD

    @property
    def changes_pool(self) -> bool:
        return self in (ReplayOutcome.ADDED, ReplayOutcome.REPLACED)


class DecisionSource(StrEnum):
    """Where the decision service's answer came from."""

    LLM = "llm"  # the decision LLM scored the candidates (eq. 5-7)
    EXPLORE = "explore"  # epsilon-greedy exploration (section III-B)
    CACHE = "cache"  # the same x under the same pool version was scored before
    FALLBACK = "fallback"  # the LLM did not answer in time: the pool's good example, else the rule
    BASELINE = "baseline"  # a baseline policy (always-edge, DQN, ...) that scores nothing
