"""Wire models of the decision service's own views (``/v1/pool``, ``/v1/prompt``).

Its decisions and experiences, which the gateway sends too, are in ``core.wire``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgecloud.core.vocabulary import Action, Evaluation, ServiceType
from edgecloud.core.wire import DEFAULT_POLICY, POLICY_PATTERN, TaskFields, WireModel
from edgecloud.decision.experience import Experience
from edgecloud.decision.policies.base import live_policy_names


def _prompted_policies(schema: dict[str, Any]) -> None:
    """The document lists the policies that decide from a prompt (read when the document is made)."""
    schema["enum"] = live_policy_names(prompted_only=True)


class PromptQuery(TaskFields):
    """``GET /v1/prompt``: x, and a policy that decides from a prompt."""

    policy: str = Field(
        DEFAULT_POLICY,
        pattern=POLICY_PATTERN,
        json_schema_extra=_prompted_policies,
        description="An ICL policy's name.",
    )


class ExampleView(WireModel):
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


class PoolResponse(WireModel):
    cell: str
    policy: str
    version: int
    examples: list[ExampleView]


class PromptResponse(WireModel):
    prompt: str
    candidates: list[str]
    content_free_prompt: str | None = Field(description="The calibration prompt, when the policy calibrates.")
    examples_shown: int
    pool_version: int
    service_type: ServiceType
    token_bin: str
