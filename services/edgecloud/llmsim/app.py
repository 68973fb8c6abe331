"""The simulator's HTTP shell: an app factory with thin OpenAI-compatible routes, and ``main()``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from edgecloud.core.headers import SERVICE_TYPE_HEADER
from edgecloud.core.openapi import install_openapi
from edgecloud.core.protocol import (
    GENERATION_REQUESTS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
)
from edgecloud.core.server import CommandLine, serve, service_app
from edgecloud.core.sse import SSE_MEDIA_TYPE
from edgecloud.llmsim.failures import StreamAborted
from edgecloud.llmsim.serving import SimulatorService
from edgecloud.llmsim.settings import LLMSimSettings

COMMAND_LINE = CommandLine(
    LLMSimSettings,
    "edgecloud-llmsim",
    "OpenAI-compatible LLM simulator",
    flags=("profile", "profiles_file", "model", "content", "seed"),
)


class _AbortableStream(StreamingResponse):
    """A stream the body may cut with ``StreamAborted``: the connection then closes mid-response.

    Returning without the final empty body makes uvicorn close the connection, so the client sees
    a truncated chunked body (uvicorn logs one line, "ASGI callable returned without completing").
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(StreamAborted):
            await super().__call__(scope, receive, send)


def _respond(result: Any) -> Response:
    if hasattr(result, "__aiter__"):
        return _AbortableStream(result, media_type=SSE_MEDIA_TYPE, headers={"Cache-Control": "no-cache"})
    return JSONResponse(result.model_dump())


def create_app(settings: LLMSimSettings) -> FastAPI:
    service = SimulatorService.from_settings(settings, CollectorRegistry())

    def health_fields() -> dict[str, Any]:
        return {"profile": service.profile.name, "running": service.engine.running, "waiting": service.engine.waiting}

    app = service_app("edgecloud LLM simulator", service, settings, health_fields)
    install_openapi(app, streams=frozenset(GENERATION_REQUESTS))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        service: SimulatorService = request.app.state.service
        return _respond(await service.chat(body, request.headers.get(SERVICE_TYPE_HEADER)))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        service: SimulatorService = request.app.state.service
        return _respond(await service.completion(body, request.headers.get(SERVICE_TYPE_HEADER)))

    @app.get("/v1/models")
    async def models(request: Request) -> ModelList:
        service: SimulatorService = request.app.state.service
        return service.models()

    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = COMMAND_LINE.settings(argv)
    serve(create_app, settings)


if __name__ == "__main__":
    main()
