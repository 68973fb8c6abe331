"""One try of a request on one backend, and the one place where its end is recorded.

An attempt ends once, whichever exit it takes: an error status, a refused connection, no first
token in time, a body or stream that broke, the answer relayed, the client gone. ``_close`` is that
end: it frees the in-flight slot and records the outcome and the tokens spent, and for a success the
quality outcome (constraint 4e), the output length and the experience. ``run`` closes every attempt
that does not leave it as a stream; a stream's attempt closes when the stream is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgecloud.core.errors import RelayedError, ServiceError, UpstreamTimeoutError, UpstreamUnavailableError
from edgecloud.core.headers import (
    BACKEND_MODEL_HEADER,
    DECISION_LATENCY_MS_HEADER,
    DECISION_SOURCE_HEADER,
    ESTIMATED_TOKENS_HEADER,
    GATEWAY_OVERHEAD_MS_HEADER,
    QUALITY_MET_HEADER,
    QUALITY_REQUIREMENT_HEADER,
    REQUEST_ID_HEADER,
    RETRIED_FROM_HEADER,
    ROUTE_HEADER,
    SERVICE_TYPE_HEADER,
)
from edgecloud.gateway.decisions import ACTION_OF_ROUTE, CLIENT_CHOICE
from edgecloud.gateway.experiences import ServedRequest
from edgecloud.gateway.relay import Outcome, StreamRelay, read_completion
from edgecloud.gateway.routing import Backend
from edgecloud.gateway.timing import RequestTiming

if TYPE_CHECKING:
    from edgecloud.gateway.service import Endpoint, GatewayService, GenerationRequest, Plan

# Statuses of a backend after which the other side may still serve the request.
RETRYABLE_RELAYED_STATUSES = frozenset({429})


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


class _Failed(Exception):
    """An attempt ended before its first token: the outcome to record, and what its caller gets."""

    def __init__(self, outcome: Outcome, error: ServiceError | PreTokenFailure):
        self.outcome = outcome
        self.error = error


class Attempt:
    """One try of one request on one backend; ``run`` it once."""

    def __init__(self, gateway: GatewayService, plan: Plan, backend: Backend, timing: RequestTiming):
        self.gateway = gateway
        self.plan = plan
        self.backend = backend
        self.timing = timing
        # Constraint 4e depends on the model, the type and the requirement alone: judged once, for
        # the header and the experience.
        self.quality_met = gateway.quality.meets(backend.model, plan.service_type, plan.requirement)

    async def run(self, endpoint: Endpoint, request: GenerationRequest) -> Relay:
        """Serve ``request`` on the backend; a failure before the first token raises ``PreTokenFailure``."""
        self.gateway.metrics.in_flight.labels(self.backend.route.value).inc()
        self.timing.mark_upstream_sent()
        try:
            relay = await self._serve(endpoint, request)
        except _Failed as failed:
            self._close(failed.outcome)
            raise failed.error from None
        except BaseException:
            self._close(Outcome.CLIENT_DISCONNECT)  # cancelled: the client left (or the gateway stops)
            raise
        if relay.stream is None:
            self._close(Outcome.SUCCESS)
        return relay

    async def _serve(self, endpoint: Endpoint, request: GenerationRequest) -> Relay:
        backend = self.backend
        first_token_by = asyncio.get_running_loop().time() + self.gateway.settings.first_token_timeout_s
        try:
            async with asyncio.timeout_at(first_token_by if request.stream else None):
                response = await self.gateway.upstream.post(
                    backend,
                    endpoint.value,
                    request.to_upstream_payload(backend.model),
                    self.plan.request_id,
                    self.plan.service_type.value,
                )
        except TimeoutError:
            raise self._no_first_token() from None
        except ServiceError as error:
            if isinstance(error, UpstreamUnavailableError | UpstreamTimeoutError):
                self._mark_down()
            final = isinstance(error, RelayedError) and error.status not in RETRYABLE_RELAYED_STATUSES
            raise _Failed(Outcome.UPSTREAM_ERROR, error if final else PreTokenFailure(error)) from None
        self._mark_up()
        if not request.stream:
            completion = await read_completion(response, self.timing)
            if completion.outcome is not Outcome.SUCCESS:
                closed = f"The {backend.route} backend ({backend.model}) closed the connection."
                raise _Failed(completion.outcome, PreTokenFailure(UpstreamUnavailableError(closed)))
            return Relay(headers=self._headers(), body=completion.body)
        stream = StreamRelay(response, self.timing, request.include_usage)
        try:
            async with asyncio.timeout_at(first_token_by):
                head = await stream.until_first_token()
        except TimeoutError:
            await stream.events.aclose()
            raise self._no_first_token() from None
        if self.timing.first_token is None and stream.outcome is not Outcome.SUCCESS:
            as_is = Relay(headers=self._headers(), stream=_replay(head))
            failed = f"The {backend.route} backend ({backend.model}) failed before its first token."
            raise _Failed(stream.outcome, PreTokenFailure(UpstreamUnavailableError(failed), as_is))
        events = self._relayed(head, stream)
        await anext(events)
        return Relay(headers=self._headers(), stream=events)

    async def _relayed(self, head: list[bytes], stream: StreamRelay) -> AsyncGenerator[bytes, None]:
        """The answer as the client gets it; however the stream ends, its ``finally`` closes the attempt.

        The first, empty item is taken at once (``_serve``) so that the generator is inside its ``try``:
        an async generator closed before it started skips its ``finally``, and a client that left before
        the first read would leave the attempt open.
        """
        try:
            yield b""
            if head:
                yield b"".join(head)  # here together: one write to the client
            async for chunk in stream.events:
                yield chunk
        finally:
            await stream.events.aclose()
            self._close(stream.outcome)

    def _no_first_token(self) -> _Failed:
        """The first-token deadline passed: the attempt ends and the backend counts as failed."""
        self._mark_down()
        return _Failed(
            Outcome.UPSTREAM_ERROR,
            PreTokenFailure(
                UpstreamTimeoutError(
                    f"The {self.backend.route} backend ({self.backend.model}) sent no token within "
                    f"{self.gateway.settings.first_token_timeout_s:g} s."
                )
            ),
        )

    def _close(self, outcome: Outcome) -> None:
        gateway, plan, backend, timing = self.gateway, self.plan, self.backend, self.timing
        route, service_type = backend.route.value, plan.service_type.value
        gateway.metrics.in_flight.labels(route).dec()
        gateway.metrics.record(route, backend.model, service_type, timing, outcome)
        if plan.client.tokens_per_minute is not None:
            gateway.in_background(gateway.limiter.spend(plan.client, timing.prompt_tokens + timing.output_tokens))
        if outcome is not Outcome.SUCCESS:
            return
        gateway.metrics.quality.labels(route, service_type, str(self.quality_met).lower()).inc()
        actual = timing.output_tokens
        if actual:
            gateway.metrics.length_error.labels(plan.estimate_source).observe(
                abs(plan.estimated_tokens - actual) / actual
            )
            gateway.in_background(gateway.lengths.observe(plan.service_type, actual))
        gateway.experiences.served(
            ServedRequest(
                request_id=plan.request_id,
                service_type=plan.service_type,
                estimated_tokens=plan.estimated_tokens,
                action=ACTION_OF_ROUTE[backend.route],
                source=plan.decision.source if plan.retried_from is None else "retry",
                generation_s=timing.e2e,
                quality_met=self.quality_met,
                route=route,
                model=backend.model,
                client_choice=plan.decision.source == CLIENT_CHOICE
                or plan.requirement < gateway.quality.default_requirement(plan.service_type),
            ),
            over_the_air=plan.over_the_air,
        )

    def _mark_down(self) -> None:
        self.gateway.health.failed(self.backend.route)
        self.gateway.metrics.backend_down.labels(self.backend.route.value).set(1)

    def _mark_up(self) -> None:
        self.gateway.health.succeeded(self.backend.route)
        self.gateway.metrics.backend_down.labels(self.backend.route.value).set(0)

    def _headers(self) -> dict[str, str]:
        plan = self.plan
        headers = {
            ROUTE_HEADER: self.backend.route.value,
            BACKEND_MODEL_HEADER: self.backend.model,
            GATEWAY_OVERHEAD_MS_HEADER: f"{self.timing.overhead * 1000:.3f}",
            REQUEST_ID_HEADER: plan.request_id,
            SERVICE_TYPE_HEADER: plan.service_type.value,
            ESTIMATED_TOKENS_HEADER: str(plan.estimated_tokens),
            DECISION_SOURCE_HEADER: plan.decision.source,
            DECISION_LATENCY_MS_HEADER: f"{plan.decision.latency_s * 1000:.3f}",
            QUALITY_REQUIREMENT_HEADER: f"{plan.requirement:g}",
            QUALITY_MET_HEADER: str(self.quality_met).lower(),
        }
        if plan.retried_from is not None:
            headers[RETRIED_FROM_HEADER] = plan.retried_from.value
        return headers


async def _replay(events: list[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event
