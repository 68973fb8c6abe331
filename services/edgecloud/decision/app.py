"""The decision service's HTTP shell over ``DecisionService``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request

from edgecloud.core.auth import require_service_key
from edgecloud.core.openapi import install_openapi
from edgecloud.core.redis_guard import redis_client
from edgecloud.core.server import CommandLine, serve, service_app
from edgecloud.core.wire import (
    CELL_PATTERN,
    DEFAULT_CELL,
    DEFAULT_POLICY,
    POLICY_PATTERN,
    DecisionRequest,
    DecisionResponse,
    ExperienceBatch,
    ExperienceBatchResponse,
    ExperienceRequest,
    ExperienceResponse,
)
from edgecloud.decision.metrics import DecisionMetrics
from edgecloud.decision.policies.base import live_policy_names
from edgecloud.decision.pool import ExperiencePool
from edgecloud.decision.protocol import PoolResponse, PromptQuery, PromptResponse
from edgecloud.decision.redis_pool import RedisExperiencePool
from edgecloud.decision.resilient_pool import ResilientExperiencePool
from edgecloud.decision.scoring import Scorer, make_scorer
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings

Cell = Annotated[str, Query(pattern=CELL_PATTERN)]
PolicyName = Annotated[str, Query(pattern=POLICY_PATTERN, json_schema_extra={"enum": live_policy_names()})]
COMMAND_LINE = CommandLine(DecisionSettings, "edgecloud-decision", "Offloading decisions by in-context learning")


def create_app(settings: DecisionSettings, pool: ExperiencePool | None = None, scorer: Scorer | None = None) -> FastAPI:
    """Build the app; ``pool`` and ``scorer`` default to Redis and the configured LLM (tests may pass others)."""
    # The gateway's Redis policy (core.redis_guard): short timeouts, one immediate retry; while Redis is down
    # the resilient pool answers from memory at once.
    client = redis_client(settings.redis_url, settings.redis_timeout_s)
    pool = pool or ResilientExperiencePool(
        RedisExperiencePool(client),
        buffer_size=settings.experience_buffer,
        timeout_s=settings.redis_timeout_s,
        retry_interval_s=settings.redis_retry_interval_s,
        spool_path=settings.experience_spool,
    )
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    scorer = scorer or make_scorer(
        settings.scoring,
        settings.llm_url,
        settings.llm_model,
        api_key,
        settings.llm_request_timeout_s,
        retry_after_s=settings.scoring_retry_s,
    )
    metrics = DecisionMetrics()
    if isinstance(pool, ResilientExperiencePool):
        metrics.buffered.set_function(lambda: pool.buffered_count)
    service = DecisionService(settings, pool, scorer, metrics, redis_client=client)

    def health_fields() -> dict[str, Any]:
        return {"policies": service.policy_names(), "llm_warm_up": service.warm_up_state}

    app = service_app("edgecloud decision service", service, settings, health_fields)
    install_openapi(app, property_enums={"policy": live_policy_names})

    def service_key(authorization: Annotated[str | None, Header()] = None) -> None:
        require_service_key(authorization, settings.service_api_key, "decision service key", open_when_unset=True)

    def admin_key(authorization: Annotated[str | None, Header()] = None) -> None:
        require_service_key(authorization, settings.admin_api_key, "admin key (DECISION_ADMIN_API_KEY)", False)

    @app.post("/v1/decisions", dependencies=[Depends(service_key)])
    async def decide(body: DecisionRequest, request: Request) -> DecisionResponse:
        return await request.app.state.service.decide(body)

    @app.post("/v1/experiences", dependencies=[Depends(service_key)])
    async def record(body: ExperienceRequest, request: Request) -> ExperienceResponse:
        return await request.app.state.service.record(body)

    @app.post("/v1/experiences/batch", dependencies=[Depends(service_key)])
    async def record_batch(body: ExperienceBatch, request: Request) -> ExperienceBatchResponse:
        """Experiences in order, as many posts to /v1/experiences would record them; all refused if one is bad."""
        return await request.app.state.service.record_batch(body)

    @app.get("/v1/pool", dependencies=[Depends(service_key)])
    async def pool_view(
        request: Request, cell: Cell = DEFAULT_CELL, policy: PolicyName = DEFAULT_POLICY
    ) -> PoolResponse:
        return await request.app.state.service.pool_view(cell, policy)

    @app.delete("/v1/pool", dependencies=[Depends(admin_key)])
    async def clear_pool(
        request: Request, cell: Cell = DEFAULT_CELL, policy: PolicyName = DEFAULT_POLICY
    ) -> dict[str, Any]:
        version = await request.app.state.service.clear(cell, policy)
        return {"cell": cell, "policy": policy, "version": version}

    @app.get("/v1/prompt", dependencies=[Depends(service_key)])
    async def prompt(request: Request, task: Annotated[PromptQuery, Query()]) -> PromptResponse:
        return await request.app.state.service.prompt(task)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = COMMAND_LINE.settings(argv)
    serve(create_app, settings)
