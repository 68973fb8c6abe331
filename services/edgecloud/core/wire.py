"""Wire models between the services: the decision service's decisions and experiences, the air interface's
reports to the gateway, and the decision service's health; and the Redis keys of a pool that the gateway reads
(its version and scorer, to know when a remembered decision still holds).

The sender and the receiver use these same classes: the gateway builds a ``DecisionRequest`` and reads a
``DecisionResponse``, the decision service takes the one and answers the other. Inputs are closed sets and
numbers only (a service type from ``ServiceType``, token counts, delays): no user text crosses. Unknown
fields are refused (a typo must not pass silently), and delays must be finite and non-negative.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from edgecloud.core.headers import MAX_REQUEST_ID_LENGTH
from edgecloud.core.vocabulary import Action, DecisionSource, Evaluation, ReplayOutcome, ServiceType

CELL_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
POLICY_PATTERN = r"^[a-z0-9_]{1,32}$"
MAX_TOKENS = 1_000_000
DEFAULT_CELL = "cell-0"
"""The base station of a single-cell deployment (the local testbed's)."""
CLIENT_CHOICES_CELL_SUFFIX = ".client-choices"
"""The pool a client's own choices feed, apart from the shared one (docs/security.md): the cell's name with this
suffix."""
LONGEST_CELL = 64 - len(CLIENT_CHOICES_CELL_SUFFIX)
"""The longest name a cell may be configured with: its client-choices pool must be a cell name too."""
DEFAULT_POLICY = "icl"
"""The shipped in-context-learning policy (docs/decision.md)."""
LONGEST_DELAY_S = 86_400
"""Largest measured delay accepted, a day: anything longer is a broken clock, not a measurement."""
MAX_EXPERIENCE_BATCH = 100
"""Most experiences in one ``POST /v1/experiences/batch``: the largest such batch (about 50 KB) fits the decision
service's default body limit, and at the testbed's rates 100 is more than a gateway gathers between two posts."""
MAX_REMEMBERED_REPORT = 1_000_000
"""Most remembered decisions one decision request may report (a bound on a counter, not a real limit)."""
EXPERIENCE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def pool_prefix(cell: str, policy: str) -> str:
    """Where one pool (per cell and policy) keeps its keys in the decision service's Redis."""
    return f"edgecloud:pool:{cell}:{policy}"


def pool_version_key(cell: str, policy: str) -> str:
    """The pool's version: a counter the decision service increments exactly when the pool's examples change."""
    return f"{pool_prefix(cell, policy)}:version"


def pool_scorer_key(cell: str, policy: str) -> str:
    """The fingerprint of the scorer (decision LLM's model, ICL method) that answers for the pool, as the decision
    service last announced it; together with the version it says whether a remembered decision still holds."""
    return f"{pool_prefix(cell, policy)}:scorer"


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarmUp(StrEnum):
    """Where the start-up warm-up of the decision LLM stands (``GET /health``, ``llm_warm_up``)."""

    WARMING = "warming"  # not finished: decisions meanwhile may fall back to the rule
    READY = "ready"  # the LLM scored the task description once
    CANNOT_SCORE = "cannot_score"  # the endpoint answers but cannot score: decisions use the fallback
    GAVE_UP = "gave_up"  # the LLM never answered within the warm-up window


class TaskFields(WireModel):
    service_type: ServiceType = Field(description="x, eq. 8: the request's service type.")
    estimated_tokens: int = Field(ge=1, le=MAX_TOKENS, description="x, eq. 8: estimated output tokens.")
    cell: str = Field(DEFAULT_CELL, pattern=CELL_PATTERN, description="Base station whose pool is used.")
    policy: str = Field(DEFAULT_POLICY, pattern=POLICY_PATTERN, description="Policy name (see GET /health).")


class DecisionRequest(TaskFields):
    """``POST /v1/decisions``: x, for the pool of ``cell`` and ``policy``."""

    user: str | None = Field(None, max_length=256, description="Who asks; never enters the prompt.")
    # For a caller that remembers decisions (the gateway, docs/decision.md "The gateway's memory"):
    explore_draw: float | None = Field(
        None,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="The caller's uniform draw for this decision's exploration (it remembers the answer, and the "
        "draw fell below the epsilon of the policy's last answer): an epsilon-greedy policy explores iff it is "
        "below its epsilon now, instead of drawing its own. Other policies ignore it.",
    )
    remembered: int = Field(
        0,
        ge=0,
        le=MAX_REMEMBERED_REPORT,
        description="Decisions the caller answered from its memory since its last request: steps of the "
        "exploration schedule (and of the metrics) the service did not see.",
    )


class DecisionResponse(WireModel):
    decision: Action
    source: DecisionSource
    scores: dict[str, float]
    pool_version: int | None
    scoring_path: str | None
    latency_ms: float
    service_type: ServiceType
    token_bin: str
    policy: str
    cell: str
    # For a caller that remembers decisions (docs/decision.md "The gateway's memory"):
    epsilon: float | None = Field(
        None, description="The probability with which this policy's next decision explores; None if it does not."
    )
    valid_for_version: bool = Field(
        False,
        description="True when this answer holds for x until the pool version or the scorer changes (an LLM-scored "
        "or cached answer of a policy whose prompt depends on the pool's version alone, or a fallback while its LLM "
        "cannot score, for valid_for_s): it may be remembered.",
    )
    valid_for_s: float | None = Field(
        None,
        ge=0,
        description="For an answer that may be remembered for a while only (a fallback while the LLM cannot score, "
        "until the service tries it again): how long. None: until the pool version or the scorer changes.",
    )
    scorer: str | None = Field(
        None, description="The fingerprint of the scorer that answered (the pool's scorer key holds the current one)."
    )


class ExperienceRequest(TaskFields):
    """``POST /v1/experiences``: what was decided for x and what it measured (the reward is computed from it)."""

    decision: Action = Field(description="The action that was taken (alpha of eq. 1).")
    # Strict numbers and booleans: ``false`` is no delay and ``"true"`` no outcome.
    transmission_s: float = Field(
        ge=0, le=LONGEST_DELAY_S, allow_inf_nan=False, strict=True, description="Measured t_tran (eq. 1)."
    )
    generation_s: float = Field(
        ge=0, le=LONGEST_DELAY_S, allow_inf_nan=False, strict=True, description="Measured t_gen (eq. 3)."
    )
    quality_met: bool = Field(strict=True, description="Whether the serving model met the required quality (4e).")
    source: DecisionSource | None = Field(None, description="Where the decision came from, for the audit log.")
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID_LENGTH)
    experience_id: str | None = Field(
        None,
        pattern=EXPERIENCE_ID_PATTERN,
        description="The sender's unique id of this experience: one already recorded (a re-sent post whose reply "
        "was lost) is not recorded again, and is answered with its first result and duplicate: true.",
    )


class ExperienceResponse(WireModel):
    reward: float
    evaluation: Evaluation
    outcome: ReplayOutcome
    pool_changed: bool
    pool_version: int
    buffered: bool
    duplicate: bool = False


class ExperienceBatch(WireModel):
    """``POST /v1/experiences/batch``: experiences recorded in this order, each as by ``POST /v1/experiences``.

    All or nothing on validation: one invalid experience (or an unknown policy) refuses the whole batch with a 400
    before any is recorded. A batch that fails part-way (a 5xx) is sent again as it was; the experiences it had
    recorded are recognised by ``experience_id`` and not counted twice.
    """

    experiences: list[ExperienceRequest] = Field(min_length=1, max_length=MAX_EXPERIENCE_BATCH)


class ExperienceBatchResponse(WireModel):
    results: list[ExperienceResponse] = Field(description="One per experience, in the batch's order.")


class AirReport(WireModel):
    """``POST /v1/air-reports`` (air interface to gateway): what the air measured of one request, joined with
    the gateway's measurement by id."""

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)
    transmission_s: float = Field(
        ge=0,
        le=LONGEST_DELAY_S,
        allow_inf_nan=False,
        strict=True,
        description="t_tran of eq. 1 as measured over the air.",
    )
