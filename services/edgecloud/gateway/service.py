"""The gateway as a plain library: choose a backend, forward the request, relay and measure.

No HTTP framework in here; ``app.py`` maps a ``Relay`` to a FastAPI response.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp

from edgecloud.core.errors import AuthenticationError, BadRequestError, ServiceError
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.relay import StreamOutcome, UpstreamClient, read_completion, relay_stream
from edgecloud.gateway.routing import Backend, RouteSelector
from edgecloud.gateway.settings import GatewaySettings
from edgecloud.gateway.timing import RequestTiming


class Endpoint(StrEnum):
    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"


@dataclass
class Relay:
    """What the HTTP layer sends back: headers, and either a whole body or a stream of SSE events."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncGenerator[bytes, None] | None = field(default=None, repr=False)


class GatewayService:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, upstream: UpstreamClient | None = None):
        self.settings = settings
        self.metrics = metrics
        self.routes = RouteSelector(settings)
        self.upstream = upstream or UpstreamClient(settings)

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    def models(self) -> ModelList:
        return ModelList(data=self.routes.models())

    def authorize(self, authorization: str | None) -> None:
        """Check the client's bearer key when keys are configured; compare in constant time."""
        if not self.settings.api_keys:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and any(
            hmac.compare_digest(presented.encode(), key.get_secret_value().encode()) for key in self.settings.api_keys
        ):
            return
        raise AuthenticationError("Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.")

    async def generate(
        self,
        endpoint: Endpoint,
        request: ChatCompletionRequest | CompletionRequest,
        route_header: str | None = None,
        request_id: str | None = None,
        arrived: float | None = None,
    ) -> Relay:
        """Serve one request; ``arrived`` is when it reached the gateway (``time.perf_counter``)."""
        timing = RequestTiming() if arrived is None else RequestTiming(arrived=arrived)
        backend = self.routes.select(request.model, route_header)
        _check_output_limit(request, backend)
        request_id = request_id or uuid.uuid4().hex
        labels = (backend.route.value, backend.model)
        payload = request.to_upstream_payload(backend.model)
        self.metrics.in_flight.labels(*labels).inc()
        timing.mark_upstream_sent()
        try:
            response = await self.upstream.post(backend, endpoint.value, payload, request_id)
        except ServiceError:
            self._finish(backend, timing, StreamOutcome.UPSTREAM_ERROR)
            raise
        headers = self._headers(backend, timing, request_id)
        if not request.stream:
            body = await response.read()
            response.release()
            timing.mark_finished()
            read_completion(body, timing)
            self._finish(backend, timing, StreamOutcome.SUCCESS)
            return Relay(headers=headers, body=body)
        return Relay(headers=headers, stream=self._measured_stream(backend, response, timing, request.include_usage))

    async def _measured_stream(
        self, backend: Backend, response: aiohttp.ClientResponse, timing: RequestTiming, wants_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        outcome: list[str] = []
        try:
            async for event in relay_stream(response, timing, wants_usage, outcome):
                yield event
        finally:
            self._finish(backend, timing, outcome[0] if outcome else StreamOutcome.CLIENT_DISCONNECT)

    def _finish(self, backend: Backend, timing: RequestTiming, outcome: str) -> None:
        self.metrics.in_flight.labels(backend.route.value, backend.model).dec()
        self.metrics.record(backend.route.value, backend.model, timing, outcome)

    @staticmethod
    def _headers(backend: Backend, timing: RequestTiming, request_id: str) -> dict[str, str]:
        return {
            "x-route": backend.route.value,
            "x-backend-model": backend.model,
            "x-gateway-overhead-ms": f"{timing.overhead * 1000:.3f}",
            "x-request-id": request_id,
        }


def _check_output_limit(request: ChatCompletionRequest | CompletionRequest, backend: Backend) -> None:
    """Refuse an output limit the backend's context cannot hold, before spending a round trip."""
    limit = request.output_token_limit
    if limit is not None and limit >= backend.max_model_len:
        raise BadRequestError(
            f"max_tokens={limit} does not fit the context length of {backend.model} "
            f"({backend.max_model_len} tokens, prompt included).",
            param="max_tokens",
            code="context_length_exceeded",
        )
