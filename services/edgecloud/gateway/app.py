"""The gateway's HTTP shell: an OpenAI-compatible front over ``GatewayService``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from edgecloud.core.headers import (
    AIR_INTERFACE_HEADER,
    QUALITY_REQUIREMENT_HEADER,
    REQUEST_ID_HEADER,
    ROUTE_HEADER,
    SERVICE_TYPE_HEADER,
)
from edgecloud.core.hot_routes import HotHandler, HotRequest, HotResponse, ServiceApp
from edgecloud.core.openapi import install_openapi
from edgecloud.core.protocol import GENERATION_REQUESTS, ChatCompletionRequest, CompletionRequest, ModelList
from edgecloud.core.server import CommandLine, serve, service_app
from edgecloud.core.wire import AirReport
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.service import Endpoint, GatewayService, Relay, RequestHints
from edgecloud.gateway.settings import GatewaySettings

GenerationRequestModel = type[ChatCompletionRequest] | type[CompletionRequest]
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
COMMAND_LINE = CommandLine(GatewaySettings, "edgecloud-gateway", "OpenAI-compatible edge-cloud gateway")


def _to_response(relay: Relay) -> HotResponse:
    if relay.stream is not None:
        return HotResponse({**STREAM_HEADERS, **relay.headers}, stream=relay.stream)
    return HotResponse(relay.headers, body=relay.body)


def _parse(body: bytes, model: GenerationRequestModel) -> ChatCompletionRequest | CompletionRequest:
    """Validate the body straight from bytes (pydantic's JSON parser), errors as FastAPI's own."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _hints(headers: Mapping[str, str]) -> RequestHints:
    return RequestHints(
        route=headers.get(ROUTE_HEADER),
        request_id=headers.get(REQUEST_ID_HEADER),
        service_type=headers.get(SERVICE_TYPE_HEADER),
        quality_requirement=headers.get(QUALITY_REQUIREMENT_HEADER),
        over_the_air=AIR_INTERFACE_HEADER in headers,
    )


def create_app(settings: GatewaySettings) -> ServiceApp:
    service = GatewayService(settings, GatewayMetrics())
    app = service_app("edgecloud gateway", service, settings)

    def generation(endpoint: Endpoint, model: GenerationRequestModel) -> HotHandler:
        async def generate(request: HotRequest) -> HotResponse:
            client = service.authorize(request.headers.get("authorization"))
            parsed = _parse(request.body, model)
            hints = _hints(request.headers)
            return _to_response(await service.generate(endpoint, parsed, hints, arrived=request.arrived, client=client))

        return generate

    # The two endpoints that carry the traffic are hot routes (core.hot_routes): no FastAPI routing or middleware
    # stack, which cost about a quarter of the gateway's CPU per request (BENCHMARKS.md). Their schemas are in
    # the OpenAPI document through ``install_openapi``.
    app.hot_routes["/v1/chat/completions"] = generation(Endpoint.CHAT, ChatCompletionRequest)
    app.hot_routes["/v1/completions"] = generation(Endpoint.COMPLETIONS, CompletionRequest)

    @app.post("/v1/air-reports", status_code=204)
    async def air_report(raw: Request, report: AirReport) -> Response:
        """The air interface's measured transmission time of a request, joined to its experience by id."""
        raw.app.state.service.air_report(report, raw.headers.get("authorization"))
        return Response(status_code=204)

    @app.get("/v1/models")
    async def models(raw: Request, authorization: Annotated[str | None, Header()] = None) -> ModelList:
        raw.app.state.service.authorize(authorization)
        return raw.app.state.service.models()

    install_openapi(app, GENERATION_REQUESTS, streams=frozenset(GENERATION_REQUESTS))
    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = COMMAND_LINE.settings(argv)
    serve(create_app, settings)
