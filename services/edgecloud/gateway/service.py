"""The gateway as a plain library: classify, estimate, decide, forward, relay, measure, learn.

For each request: the service type comes from the client (header or ``metadata``) or the prompt
classifier; the output length from ``max_tokens`` or what this type's answers were; the route from
the client, or for ``edgecloud-auto`` from the decision service (in-context learning, paper
Sec. III). The chosen backend gets the request as an ``Attempt`` (``attempt.py``); if it fails
before the first token, the other side gets one retry. The answer is relayed chunk by chunk and
measured, and when it ends the measured generation time and the quality outcome (constraint 4e) go
to the experience writer, which joins them with the air interface's transmission time and feeds
the decision service's pool.

No HTTP framework in here; ``app.py`` maps a ``Relay`` to a FastAPI response.
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgecloud.classifier import PromptClassifier, prompt_text
from edgecloud.core.auth import require_service_key
from edgecloud.core.errors import BadRequestError, UpstreamUnavailableError
from edgecloud.core.headers import MAX_REQUEST_ID_LENGTH, REQUEST_ID_HEADER, SERVICE_TYPE_HEADER
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from edgecloud.core.vocabulary import ServiceType
from edgecloud.core.wire import AirReport
from edgecloud.gateway.attempt import Attempt, PreTokenFailure, Relay
from edgecloud.gateway.clients import OPEN_CLIENT, ClientKey, ClientKeys
from edgecloud.gateway.decisions import BACKEND_DOWN, CLIENT_CHOICE, BackendHealth, DecisionClient, RouteDecision
from edgecloud.gateway.experiences import ExperienceWriter
from edgecloud.gateway.lengths import OutputLengthEstimator
from edgecloud.gateway.limits import RateLimiter
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.quality import QualityTable
from edgecloud.gateway.relay import UpstreamClient
from edgecloud.gateway.routing import Backend, RouteSelector
from edgecloud.gateway.settings import GatewaySettings, Route
from edgecloud.gateway.timing import RequestTiming

# Output-length prior per service type before any answer of that type was seen: the paper's average
# output of 1,000 tokens (Sec. IV-A), for every type.
OUTPUT_TOKENS_PRIOR = 1000
REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
DEFAULT_ROUTE_SOURCE = "default_route"  # auto request with no decision service configured
GenerationRequest = ChatCompletionRequest | CompletionRequest


class Endpoint(StrEnum):
    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"


@dataclass(frozen=True)
class RequestHints:
    """What the client (or the air interface in front of it) said besides the body."""

    route: str | None = None  # x-route
    request_id: str | None = None  # x-request-id
    service_type: str | None = None  # x-service-type
    quality_requirement: str | None = None  # x-quality-requirement
    over_the_air: bool = False  # x-air-interface: the channel emulator forwarded it


@dataclass
class Plan:
    """What was decided for one request before it left for a backend."""

    request_id: str
    service_type: ServiceType
    requirement: float
    estimated_tokens: int
    estimate_source: str
    decision: RouteDecision
    over_the_air: bool
    client: ClientKey  # who asked: its budget is charged when the answer ends
    retried_from: Route | None = None


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        upstream: UpstreamClient | None = None,
        classifier: PromptClassifier | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.routes = RouteSelector(settings)
        self.upstream = upstream or UpstreamClient(settings)
        self.classifier = classifier
        self.quality = QualityTable.load(settings.quality_file)
        self.lengths = OutputLengthEstimator(
            settings.lengths_redis_url,
            {service_type: OUTPUT_TOKENS_PRIOR for service_type in ServiceType},
            timeout_s=settings.redis_timeout_s,
            retry_interval_s=settings.redis_retry_interval_s,
            batch_size=settings.lengths_batch_size,
            batch_wait_s=settings.lengths_batch_wait_s,
        )
        self.decisions = DecisionClient(settings, metrics)
        self.health = BackendHealth(settings.backend_down_s, probe_s=settings.first_token_timeout_s)
        self.experiences = ExperienceWriter(settings, metrics)
        self.clients = ClientKeys(settings.api_keys, settings.client_keys_file, settings.client_defaults())
        self.limiter = RateLimiter(
            settings.limits_redis_url,
            timeout_s=settings.redis_timeout_s,
            retry_interval_s=settings.redis_retry_interval_s,
        )
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.classifier is None and self.settings.classify_prompts:
            self.classifier = await asyncio.to_thread(PromptClassifier.load)
        await self.upstream.start()
        await self.lengths.start()
        await self.limiter.start()
        await self.decisions.start()
        await self.experiences.start()

    async def close(self) -> None:
        await self.experiences.close()
        await self.decisions.close()
        await self.lengths.close()
        await self.limiter.close()
        await self.upstream.close()

    def models(self) -> ModelList:
        return ModelList(data=self.routes.models())

    def authorize(self, authorization: str | None) -> ClientKey:
        """The client the bearer key belongs to (401 for a wrong one); the open client without keys."""
        return self.clients.authenticate(authorization)

    def air_report(self, report: AirReport, authorization: str | None) -> None:
        """A transmission time from the air interface: its own key, never a client's (docs/security.md)."""
        open_when_unset = not self.clients.required
        require_service_key(authorization, self.settings.air_report_api_key, "air-report key", open_when_unset)
        self.experiences.air_report(report)

    # --- planning ----------------------------------------------------------------------------

    async def _service_type(self, request: GenerationRequest, hints: RequestHints) -> ServiceType:
        """The client's statement (header, then ``metadata``) wins; else the classifier; else chat."""
        for origin, stated in (("header", hints.service_type), ("metadata", request.service_type_hint)):
            if stated:
                try:
                    service_type = ServiceType(stated.strip().lower())
                except ValueError:
                    raise BadRequestError(
                        f"Unknown service type {stated!r}: expected one of {[t.value for t in ServiceType]}.",
                        param=SERVICE_TYPE_HEADER if origin == "header" else "metadata.service_type",
                    ) from None
                self.metrics.classifications.labels(service_type.value, origin).inc()
                return service_type
        if self.classifier is None:
            self.metrics.classifications.labels(ServiceType.CHAT.value, "default").inc()
            return ServiceType.CHAT
        text = prompt_text(request)
        # Inline, not in a worker thread: the call (0.13 ms p50, 0.39 ms p99, docs/classifier.md) costs less than
        # the thread hop (0.19 ms p50, 0.97 ms p99, measured).
        classification = self.classifier.classify(text)
        self.metrics.classifier_latency.observe(classification.latency_s)
        self.metrics.classifications.labels(classification.service_type.value, "classifier").inc()
        return classification.service_type

    async def _plan(self, request: GenerationRequest, hints: RequestHints, client: ClientKey) -> Plan:
        if hints.request_id is not None and not REQUEST_ID_PATTERN.fullmatch(hints.request_id):
            raise BadRequestError(
                f"The x-request-id header must be 1 to {MAX_REQUEST_ID_LENGTH} characters of letters, digits and "
                "'-_.:' (it is echoed back and joins the air interface's measurement).",
                param=REQUEST_ID_HEADER,
            )
        service_type = await self._service_type(request, hints)
        requirement = self.quality.requirement(service_type, hints.quality_requirement)
        limit = request.output_token_limit
        estimate = await self.lengths.estimate(
            service_type, None if limit is None else min(limit, self.settings.max_estimated_tokens)
        )
        decision = await self._route(request.model, hints.route, service_type, estimate.tokens)
        self.metrics.decisions.labels(decision.route.value, decision.source, service_type.value).inc()
        return Plan(
            request_id=hints.request_id or uuid.uuid4().hex,
            service_type=service_type,
            requirement=requirement,
            estimated_tokens=estimate.tokens,
            estimate_source=estimate.source,
            decision=decision,
            over_the_air=hints.over_the_air,
            client=client,
        )

    def _pins_route(self, model: str, route_header: str | None) -> bool:
        """The client chose the backend itself: an x-route header, or a backend's own model name."""
        return bool(route_header) or model != self.routes.auto_model

    async def _route(
        self, model: str, route_header: str | None, service_type: ServiceType, tokens: int
    ) -> RouteDecision:
        if self._pins_route(model, route_header):
            return RouteDecision(self.routes.select(model, route_header).route, CLIENT_CHOICE, 0.0)
        if self.decisions.url:
            decision = await self.decisions.decide(service_type, tokens)
            self.metrics.decision_latency.labels(decision.source).observe(decision.latency_s)
        else:
            decision = RouteDecision(self.routes.default_route, DEFAULT_ROUTE_SOURCE, 0.0)
        other = _other(decision.route)
        if self.health.is_down(decision.route) and not self.health.is_down(other):
            return RouteDecision(other, BACKEND_DOWN, decision.latency_s, decision.pool_version)
        return decision

    # --- serving -----------------------------------------------------------------------------

    async def generate(
        self,
        endpoint: Endpoint,
        request: GenerationRequest,
        hints: RequestHints | None = None,
        arrived: float | None = None,
        client: ClientKey | None = None,
    ) -> Relay:
        """Serve one request of ``client`` (``authorize``'s answer); ``arrived`` is when it reached the gateway
        (``time.perf_counter``)."""
        hints = hints or RequestHints()
        client = client or ClientKey(OPEN_CLIENT)
        client.check(
            pins_route=self._pins_route(request.model, hints.route),
            states_requirement=bool(hints.quality_requirement and hints.quality_requirement.strip()),
            states_type=bool(hints.service_type or request.service_type_hint),
        )
        await self.limiter.admit(client)
        timing = RequestTiming() if arrived is None else RequestTiming(arrived=arrived)
        if not any(_fits(request, backend) for backend in self.routes.backends.values()):
            _check_output_limit(request, max(self.routes.backends.values(), key=lambda b: b.max_model_len))
        plan = await self._plan(request, hints, client)
        backend = self.routes.backends[plan.decision.route]
        _check_output_limit(request, backend)
        pinned = plan.decision.source == CLIENT_CHOICE
        if pinned and self.health.is_down(backend.route):
            retry_after = max(1, math.ceil(self.health.retry_after_s(backend.route)))
            raise UpstreamUnavailableError(
                f"The {backend.route} backend ({backend.model}) failed recently; the gateway does not replace a "
                f"model the request names. Retry in {retry_after} s.",
                code="backend_down",
                headers={"retry-after": str(retry_after)},
            )
        try:
            return await Attempt(self, plan, backend, timing).run(endpoint, request)
        except PreTokenFailure as failure:
            other = self.routes.backends[_other(backend.route)]
            if pinned or not self.settings.retry_other_side or not _fits(request, other):
                return failure.give_up()
            self.metrics.retries.labels(backend.route.value, other.route.value).inc()
            plan.retried_from = backend.route
            timing.restart()
            try:
                return await Attempt(self, plan, other, timing).run(endpoint, request)
            except PreTokenFailure as second:
                return second.give_up()

    def in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` without waiting for it, holding a reference until it ends."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _other(route: Route) -> Route:
    return Route.CLOUD if route is Route.EDGE else Route.EDGE


def _fits(request: GenerationRequest, backend: Backend) -> bool:
    limit = request.output_token_limit
    return limit is None or limit < backend.max_model_len


def _check_output_limit(request: GenerationRequest, backend: Backend) -> None:
    """Refuse an output limit the backend's context cannot hold, before spending a round trip."""
    if not _fits(request, backend):
        raise BadRequestError(
            f"max_tokens={request.output_token_limit} does not fit the context length of {backend.model} "
            f"({backend.max_model_len} tokens, prompt included).",
            param="max_tokens",
            code="context_length_exceeded",
        )
