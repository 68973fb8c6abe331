"""The simulator's HTTP shell: an app factory with thin OpenAI-compatible routes, and ``main()``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from edgecloud.core.errors import install_error_handlers
from edgecloud.core.headers import SERVICE_TYPE_HEADER
from edgecloud.core.ingress import IngressMiddleware
from edgecloud.core.metrics import metrics_response
from edgecloud.core.openapi import install_openapi
from edgecloud.core.protocol import (
    GENERATION_REQUESTS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
)
from edgecloud.core.server import serve
from edgecloud.core.sse import SSE_MEDIA_TYPE
from edgecloud.llmsim.failures import StreamAborted
from edgecloud.llmsim.serving import SimulatorService
from edgecloud.llmsim.settings import LLMSimSettings


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
    app = FastAPI(title="edgecloud LLM simulator", version="0.1.0")
    registry = CollectorRegistry()
    app.state.settings = settings
    app.state.registry = registry
    app.state.service = SimulatorService.from_settings(settings, registry)
    install_error_handlers(app)
    app.add_middleware(IngressMiddleware, max_body_bytes=settings.max_body_bytes)
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

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        return metrics_response(request.app.state.registry, authorization, settings.metrics_api_key)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        service: SimulatorService = request.app.state.service
        engine = service.engine
        return {"status": "ok", "profile": service.profile.name, "running": engine.running, "waiting": engine.waiting}

    return app


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line flags; each overrides its ``LLMSIM_*`` environment variable."""
    parser = argparse.ArgumentParser(prog="edgecloud-llmsim", description="OpenAI-compatible LLM simulator.")
    parser.add_argument("--host", help="address to listen on (LLMSIM_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (LLMSIM_PORT, default 8002)")
    parser.add_argument("--profile", help="latency profile name (LLMSIM_PROFILE, default gpt-4o-cloud)")
    parser.add_argument("--profiles-file", dest="profiles_file", help="YAML profiles file (LLMSIM_PROFILES_FILE)")
    parser.add_argument("--model", help="served model name (LLMSIM_MODEL, default: the profile name)")
    parser.add_argument("--content", choices=["corpus", "echo"], help="completion text (LLMSIM_CONTENT)")
    parser.add_argument("--seed", type=int, help="seed (LLMSIM_SEED, default 0)")
    parser.add_argument("--log-level", dest="log_level", help="log level (LLMSIM_LOG_LEVEL, default info)")
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = LLMSimSettings(**parse_args(argv))
    except ValidationError as error:
        raise SystemExit(f"edgecloud-llmsim: invalid settings\n{error}") from None
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
