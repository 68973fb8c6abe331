"""ASGI middleware every service uses: stamp the arrival time, bound the body, check what it is.

The body limit holds however the body comes: a ``content-length`` above it is refused before a byte is
read, and a chunked body (no length) is counted while it streams in and cut off at the limit, so no
request can make a service hold more than ``max_body_bytes``. Every body a service takes is JSON, so a
body of another declared type (a browser form, ``text/plain``: requests a page can send without a CORS
preflight) is refused before it is read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgecloud.core.errors import PayloadTooLargeError, ServiceError, UnsupportedMediaTypeError, error_response

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``charset``) aside."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def too_large(max_body_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than {max_body_bytes} bytes.")


def refusal(headers: Mapping[str, str], method: str, max_body_bytes: int) -> ServiceError | None:
    """Why a request is refused before its body is read (413: declared too long, 415: not JSON), if it is;
    ``headers`` by lower-case name."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        return too_large(max_body_bytes)
    has_body = (length is not None and length != "0") or "transfer-encoding" in headers
    if method in METHODS_WITH_BODY and has_body and not is_json(headers.get("content-type")):
        return UnsupportedMediaTypeError("The request body must be JSON: send 'Content-Type: application/json'.")
    return None


class IngressMiddleware:
    """Stamps each request's arrival time (TTFT counts from here), bounds and type-checks its body."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrived"] = time.perf_counter()
        refused = refusal(Headers(scope=scope), scope["method"], self.max_body_bytes)
        if refused is not None:
            await error_response(refused.status, refused.to_response())(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive), send)

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that raises 413 as soon as the body read so far passes the limit."""
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException, which FastAPI's body parsing lets through (it makes any other error a 400).
                    raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large(self.max_body_bytes).message)
            return message

        return bounded_receive
