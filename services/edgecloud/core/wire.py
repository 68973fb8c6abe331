"""Wire models between the services: the decision service's decisions and experiences, the air interface's
reports to the gateway, and the decision service's health.

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


class ExperienceResponse(WireModel):
    reward: float
    evaluation: Evaluation
    outcome: ReplayOutcome
    pool_changed: bool
    pool_version: int
    buffered: bool


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
