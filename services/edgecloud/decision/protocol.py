"""Wire models of the decision service (``/v1/decisions``, ``/v1/experiences``, ``/v1/pool``, ``/v1/prompt``).

Inputs are closed sets and numbers only: a service type from ``ServiceType``, token counts, delays.
Unknown fields are refused (a typo must not pass silently), and delays must be finite and non-negative.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgecloud.decision.experience import Evaluation, Experience
from edgecloud.decision.keywords import Action, ServiceType
from edgecloud.decision.policies.base import DecisionSource, live_policy_names
from edgecloud.decision.replay import ReplayOutcome

CELL_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
POLICY_PATTERN = r"^[a-z0-9_]{1,32}$"
MAX_TOKENS = 1_000_000


class WarmUp(StrEnum):
    """Where the start-up warm-up of the decision LLM stands (``GET /health``, ``llm_warm_up``)."""

    WARMING = "warming"  # not finished: decisions meanwhile may fall back to the rule
    READY = "ready"  # the LLM scored the task description once
    CANNOT_SCORE = "cannot_score"  # the endpoint answers but cannot score: decisions use the fallback
    GAVE_UP = "gave_up"  # the LLM never answered within the warm-up window


class DecisionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _live_policies(schema: dict[str, Any]) -> None:
    """The document lists the policies this service runs (read when the document is made)."""
    schema["enum"] = live_policy_names()


class TaskFields(DecisionModel):
    service_type: ServiceType = Field(description="x, eq. 8: the request's service type.")
    estimated_tokens: int = Field(ge=1, le=MAX_TOKENS, description="x, eq. 8: estimated output tokens.")
    cell: str = Field("cell-0", pattern=CELL_PATTERN, description="Base station whose pool is used.")
    policy: str = Field(
        "icl", pattern=POLICY_PATTERN, json_schema_extra=_live_policies, description="Policy name (see GET /health)."
    )


def _prompted_policies(schema: dict[str, Any]) -> None:
    schema["enum"] = live_policy_names(prompted_only=True)


class PromptQuery(TaskFields):
    """``GET /v1/prompt``: x, and a policy that decides from a prompt."""

    policy: str = Field(
        "icl", pattern=POLICY_PATTERN, json_schema_extra=_prompted_policies, description="An ICL policy's name."
    )


class DecisionRequest(TaskFields):
    user: str | None = Field(None, max_length=256, description="Who asks; never enters the prompt.")


class DecisionResponse(DecisionModel):
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
    decision: Action = Field(description="The action that was taken (alpha of eq. 1).")
    # Strict numbers and booleans: ``false`` is no delay and ``"true"`` no outcome.
    transmission_s: float = Field(
        ge=0, le=86_400, allow_inf_nan=False, strict=True, description="Measured t_tran (eq. 1)."
    )
    generation_s: float = Field(
        ge=0, le=86_400, allow_inf_nan=False, strict=True, description="Measured t_gen (eq. 3)."
    )
    quality_met: bool = Field(strict=True, description="Whether the serving model met the required quality (4e).")
    source: DecisionSource | None = Field(None, description="Where the decision came from, for the audit log.")
    request_id: str | None = Field(None, max_length=128)


class ExperienceResponse(DecisionModel):
    reward: float
    evaluation: Evaluation
    outcome: ReplayOutcome
    pool_changed: bool
    pool_version: int
    buffered: bool


class ExampleView(DecisionModel):
    service_type: ServiceType
    token_bin: str
    decision: Action
    reward: float
    evaluation: Evaluation
    transmission_s: float
    generation_s: float
    created_at: float

    @classmethod
    def of(cls, experience: Experience) -> ExampleView:
        return cls(
            service_type=experience.state.service_type,
            token_bin=experience.state.token_bin,
            decision=experience.action,
            reward=experience.reward,
            evaluation=experience.evaluation,
            transmission_s=experience.transmission_s,
            generation_s=experience.generation_s,
            created_at=experience.created_at,
        )


class PoolResponse(DecisionModel):
    cell: str
    policy: str
    version: int
    examples: list[ExampleView]


class PromptResponse(DecisionModel):
    prompt: str
    candidates: list[str]
    content_free_prompt: str | None = Field(description="The calibration prompt, when the policy calibrates.")
    examples_shown: int
    pool_version: int
    service_type: ServiceType
    token_bin: str
