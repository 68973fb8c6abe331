"""ASGI middleware every front service uses: stamp the arrival time, refuse oversized bodies early."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from edgecloud.core.errors import PayloadTooLargeError, error_response


class IngressMiddleware:
    """Stamps each request's arrival time (TTFT counts from here) and refuses oversized bodies."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrived"] = time.perf_counter()
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.max_body_bytes:
                error = PayloadTooLargeError(f"The request body is larger than {self.max_body_bytes} bytes.")
                await error_response(error.status, error.to_response())(scope, receive, send)
                return
        await self.app(scope, receive, send)
