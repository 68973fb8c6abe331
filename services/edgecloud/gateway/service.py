"""The gateway as a plain library: classify, estimate, decide, forward, relay, measure, learn.

For each request: the service type comes from the client (header or ``metadata``) or the MiniLM
classifier; the output length from ``max_tokens`` or what this type's answers were; the route from
the client, or for ``edgecloud-auto`` from the decision service (in-context learning, paper
Sec. III). The chosen backend gets the request; if it fails before the first token, the other side
gets one retry. The answer is relayed chunk by chunk and measured, and when it ends the measured
generation time and the quality outcome (constraint 4e) go to the experience writer, which joins
them with the air interface's transmission time and feeds the decision service's pool.

No HTTP framework in here; ``app.py`` maps a ``Relay`` to a FastAPI response.
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from edgecloud.classifier import PromptClassifier, prompt_text
from edgecloud.core.auth import require_service_key
from edgecloud.core.errors import (
    BadRequestError,
    RelayedError,
    ServiceError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from edgecloud.core.headers import (
    BACKEND_MODEL_HEADER,
    DECISION_LATENCY_MS_HEADER,
    DECISION_SOURCE_HEADER,
    ESTIMATED_TOKENS_HEADER,
    GATEWAY_OVERHEAD_MS_HEADER,
    MAX_REQUEST_ID_LENGTH,
    QUALITY_MET_HEADER,
    QUALITY_REQUIREMENT_HEADER,
    REQUEST_ID_HEADER,
    RETRIED_FROM_HEADER,
    ROUTE_HEADER,
    SERVICE_TYPE_HEADER,
)
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from edgecloud.core.vocabulary import ServiceType
from edgecloud.core.wire import AirReport
from edgecloud.gateway.clients import OPEN_CLIENT, ClientKey, ClientKeys
from edgecloud.gateway.decisions import (
    ACTION_OF_ROUTE,
    BACKEND_DOWN,
    CLIENT_CHOICE,
    BackendHealth,
    DecisionClient,
    RouteDecision,
)
from edgecloud.gateway.experiences import ExperienceWriter, ServedRequest
from edgecloud.gateway.lengths import OutputLengthEstimator
from edgecloud.gateway.limits import RateLimiter
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.quality import QualityTable
from edgecloud.gateway.relay import StreamOutcome, UpstreamClient, read_completion, relay_stream
from edgecloud.gateway.routing import Backend, RouteSelector
from edgecloud.gateway.settings import GatewaySettings, Route
from edgecloud.gateway.timing import RequestTiming

# Output-length prior per service type before any answer of that type was seen: the paper's average
# output of 1,000 tokens (Sec. IV-A), for every type.
OUTPUT_TOKENS_PRIOR = 1000
# Statuses of a backend after which the other side may still serve the request.
RETRYABLE_RELAYED_STATUSES = frozenset({429})
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


@dataclass
class Relay:
    """What the HTTP layer sends back: headers, and either a whole body or a stream of SSE events."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncGenerator[bytes, None] | None = field(default=None, repr=False)


class PreTokenFailure(Exception):
    """The backend failed before any token reached the client: the other side may still serve it.

    ``relay`` is what the client gets if nobody retries: for a stream, the events so far, ending with
    the backend's error event (as any broken stream ends); otherwise ``error`` is raised.
    """

    def __init__(self, error: ServiceError, relay: Relay | None = None):
        super().__init__(error.message)
        self.error = error
        self.relay = relay

    def give_up(self) -> Relay:
        if self.relay is None:
            raise self.error
        return self.relay


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
            settings.lengths_redis_url, {service_type: OUTPUT_TOKENS_PRIOR for service_type in ServiceType}
        )
        self.decisions = DecisionClient(settings)
        self.health = BackendHealth(settings.backend_down_s, probe_s=settings.first_token_timeout_s)
        self.experiences = ExperienceWriter(settings, metrics)
        self.clients = ClientKeys(settings.api_keys, settings.client_keys_file, settings.client_defaults())
        self.limiter = RateLimiter(settings.limits_redis_url)
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
        classification = await asyncio.to_thread(self.classifier.classify, text)
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
            return await self._serve(endpoint, request, plan, backend, timing)
        except PreTokenFailure as failure:
            other = self.routes.backends[_other(backend.route)]
            if pinned or not self.settings.retry_other_side or not _fits(request, other):
                return failure.give_up()
            self.metrics.retries.labels(backend.route.value, other.route.value).inc()
            plan.retried_from = backend.route
            timing.restart()
            try:
                return await self._serve(endpoint, request, plan, other, timing)
            except PreTokenFailure as second:
                return second.give_up()

    async def _serve(
        self,
        endpoint: Endpoint,
        request: GenerationRequest,
        plan: Plan,
        backend: Backend,
        timing: RequestTiming,
    ) -> Relay:
        """One attempt on ``backend``: a failure before the first token raises ``PreTokenFailure``."""
        self.metrics.in_flight.labels(backend.route.value).inc()
        timing.mark_upstream_sent()
        first_token_by = asyncio.get_running_loop().time() + self.settings.first_token_timeout_s
        try:
            async with asyncio.timeout_at(first_token_by if request.stream else None):
                response = await self.upstream.post(
                    backend,
                    endpoint.value,
                    request.to_upstream_payload(backend.model),
                    plan.request_id,
                    plan.service_type.value,
                )
        except TimeoutError:
            raise self._no_first_token(plan, backend, timing) from None
        except ServiceError as error:
            self._finish(plan, backend, timing, StreamOutcome.UPSTREAM_ERROR)
            if isinstance(error, UpstreamUnavailableError | UpstreamTimeoutError):
                self._mark_down(backend.route)
            if isinstance(error, RelayedError) and error.status not in RETRYABLE_RELAYED_STATUSES:
                raise
            raise PreTokenFailure(error) from None
        self._mark_up(backend.route)
        if not request.stream:
            try:
                body = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                self._finish(plan, backend, timing, StreamOutcome.UPSTREAM_DISCONNECT)
                raise PreTokenFailure(
                    UpstreamUnavailableError(f"The {backend.route} backend ({backend.model}) closed the connection.")
                ) from None
            finally:
                response.release()
            timing.mark_finished()
            read_completion(body, timing)
            self._finish(plan, backend, timing, StreamOutcome.SUCCESS)
            return Relay(headers=self._headers(plan, backend, timing), body=body)
        outcome: list[str] = []
        events = relay_stream(response, timing, request.include_usage, outcome)
        head: list[bytes] = []
        try:
            async with asyncio.timeout_at(first_token_by):
                async for chunk in events:
                    head.append(chunk)
                    if timing.first_token is not None:
                        break
        except TimeoutError:
            await events.aclose()
            raise self._no_first_token(plan, backend, timing) from None
        if timing.first_token is None and outcome and outcome[0] != StreamOutcome.SUCCESS:
            self._finish(plan, backend, timing, outcome[0])
            as_is = Relay(headers=self._headers(plan, backend, timing), stream=_replay(head))
            failed = f"The {backend.route} backend ({backend.model}) failed before its first token."
            raise PreTokenFailure(UpstreamUnavailableError(failed), as_is)
        stream = self._measured_stream(plan, backend, head, events, timing, outcome)
        return Relay(headers=self._headers(plan, backend, timing), stream=stream)

    async def _measured_stream(
        self,
        plan: Plan,
        backend: Backend,
        head: list[bytes],
        events: AsyncGenerator[bytes, None],
        timing: RequestTiming,
        outcome: list[str],
    ) -> AsyncGenerator[bytes, None]:
        try:
            for chunk in head:
                yield chunk
            async for chunk in events:
                yield chunk
        finally:
            await events.aclose()
            self._finish(plan, backend, timing, outcome[0] if outcome else StreamOutcome.CLIENT_DISCONNECT)

    def _finish(self, plan: Plan, backend: Backend, timing: RequestTiming, outcome: str) -> None:
        route, service_type = backend.route.value, plan.service_type.value
        self.metrics.in_flight.labels(route).dec()
        self.metrics.record(route, backend.model, service_type, timing, outcome)
        if plan.client.tokens_per_minute is not None:
            self._in_background(self.limiter.spend(plan.client, timing.prompt_tokens + timing.output_tokens))
        if outcome != StreamOutcome.SUCCESS:
            return
        quality_met = self.quality.meets(backend.model, plan.service_type, plan.requirement)
        self.metrics.quality.labels(route, service_type, str(quality_met).lower()).inc()
        actual = timing.output_tokens
        if actual:
            self.metrics.length_error.labels(plan.estimate_source).observe(abs(plan.estimated_tokens - actual) / actual)
            self._in_background(self.lengths.observe(plan.service_type, actual))
        self.experiences.served(
            ServedRequest(
                request_id=plan.request_id,
                service_type=plan.service_type,
                estimated_tokens=plan.estimated_tokens,
                action=ACTION_OF_ROUTE[backend.route],
                source=plan.decision.source if plan.retried_from is None else "retry",
                generation_s=timing.e2e,
                quality_met=quality_met,
                route=route,
                model=backend.model,
                client_choice=plan.decision.source == CLIENT_CHOICE
                or plan.requirement < self.quality.default_requirement(plan.service_type),
            ),
            over_the_air=plan.over_the_air,
        )

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _no_first_token(self, plan: Plan, backend: Backend, timing: RequestTiming) -> PreTokenFailure:
        """The first-token deadline passed: the attempt ends and the backend counts as failed."""
        self._finish(plan, backend, timing, StreamOutcome.UPSTREAM_ERROR)
        self._mark_down(backend.route)
        return PreTokenFailure(
            UpstreamTimeoutError(
                f"The {backend.route} backend ({backend.model}) sent no token within "
                f"{self.settings.first_token_timeout_s:g} s."
            )
        )

    def _mark_down(self, route: Route) -> None:
        self.health.failed(route)
        self.metrics.backend_down.labels(route.value).set(1)

    def _mark_up(self, route: Route) -> None:
        self.health.succeeded(route)
        self.metrics.backend_down.labels(route.value).set(0)

    def _headers(self, plan: Plan, backend: Backend, timing: RequestTiming) -> dict[str, str]:
        headers = {
            ROUTE_HEADER: backend.route.value,
            BACKEND_MODEL_HEADER: backend.model,
            GATEWAY_OVERHEAD_MS_HEADER: f"{timing.overhead * 1000:.3f}",
            REQUEST_ID_HEADER: plan.request_id,
            SERVICE_TYPE_HEADER: plan.service_type.value,
            ESTIMATED_TOKENS_HEADER: str(plan.estimated_tokens),
            DECISION_SOURCE_HEADER: plan.decision.source,
            DECISION_LATENCY_MS_HEADER: f"{plan.decision.latency_s * 1000:.3f}",
            QUALITY_REQUIREMENT_HEADER: f"{plan.requirement:g}",
            QUALITY_MET_HEADER: str(self.quality.meets(backend.model, plan.service_type, plan.requirement)).lower(),
        }
        if plan.retried_from is not None:
            headers[RETRIED_FROM_HEADER] = plan.retried_from.value
        return headers


async def _replay(events: list[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event


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
