"""A service's hot endpoints, served straight from ASGI: no Starlette routing, middleware stack or Request.

Through FastAPI, each request to the gateway passed eleven ASGI layers (uvicorn's proxy headers, FastAPI's
body limit and telemetry, Starlette's error and exception middleware, ours, the router, the route) and every
chunk of a streamed answer two ``send`` wrappers: about a quarter of the gateway's CPU per request, profiled
with py-spy (BENCHMARKS.md). A ``ServiceApp`` answers the POST paths in its ``hot_routes`` itself, doing for
them what the stack did: the arrival stamp, the body limit and JSON check of ``ingress``, the OpenAI-shaped
errors of ``errors``, the client-disconnect watch of ``streaming``. Every other path goes through FastAPI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from edgecloud.core.errors import MethodNotAllowedError, error_of
from edgecloud.core.ingress import refusal, too_large
from edgecloud.core.sse import SSE_MEDIA_TYPE
from edgecloud.core.streaming import send_events

logger = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class HotRequest:
    """What a hot route gets: the headers (lower-case names, the first value of each), the body, and when the
    request arrived (``time.perf_counter``, before its body was read: TTFT counts from here)."""

    headers: Mapping[str, str]
    body: bytes
    arrived: float


@dataclass
class HotResponse:
    """A whole JSON body, or a stream of server-sent events."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncGenerator[bytes, None] | None = field(default=None, repr=False)
    status: int = HTTPStatus.OK


HotHandler = Callable[[HotRequest], Awaitable[HotResponse]]


class ServiceApp(FastAPI):
    """FastAPI, with ``hot_routes`` (POST path: handler) answered before its middleware stack."""

    def __init__(self, *, max_body_bytes: int, **options: Any):
        super().__init__(**options)
        self.max_body_bytes = max_body_bytes
        self.hot_routes: dict[str, HotHandler] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.hot_routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
        elif scope["method"] != "POST":
            error = MethodNotAllowedError(
                f"{scope['method']} is not allowed here; use POST.", headers={"allow": "POST"}
            )
            await _send_error(send, error)
        else:
            await serve_hot(handler, self.max_body_bytes, scope, receive, send)


async def serve_hot(handler: HotHandler, max_body_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    arrived = time.perf_counter()
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    refused = refusal(headers, scope["method"], max_body_bytes)
    try:
        if refused is not None:
            raise refused
        body = await _read_body(receive, max_body_bytes)
        if body is None:
            logger.info("client disconnected before its request was complete: POST %s", scope["path"])
            return
        response = await handler(HotRequest(headers, body, arrived))
    except Exception as exc:
        await _send_error(send, exc)
        return
    if response.stream is None:
        await _send_whole(send, response.status, response.body or b"", response.headers)
        return
    start = {
        "type": "http.response.start",
        "status": response.status,
        "headers": _raw_headers(response.headers, f"{SSE_MEDIA_TYPE}; charset=utf-8"),
    }
    await send_events(response.stream, start, receive, send)


async def _read_body(receive: Receive, max_body_bytes: int) -> bytes | None:
    """The whole body, refused (413) as soon as it passes ``max_body_bytes``; None if the client left first."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_body_bytes:
            raise too_large(max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_error(send: Send, exc: Exception) -> None:
    status, error, extra_headers = error_of(exc)
    await _send_whole(send, status, error.model_dump_json().encode(), extra_headers or {})


async def _send_whole(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = _raw_headers(headers, JSON_MEDIA_TYPE)
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _raw_headers(headers: Mapping[str, str], content_type: str) -> list[tuple[bytes, bytes]]:
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-type", content_type.encode("latin-1")))
    return raw
