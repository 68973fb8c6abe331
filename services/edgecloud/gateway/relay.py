"""HTTP to the backends and the chunk-by-chunk relay of their answers, with timing.

The upstream client is ``upstream_http``'s lean one (httptools' parser under an asyncio protocol), which keeps
the per-chunk cost of relaying small. Each upstream read is forwarded as soon as it arrives; nothing is
buffered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from edgecloud.core.auth import bearer_headers
from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.core.errors import (
    RelayedError,
    ServiceError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_body,
)
from edgecloud.core.headers import SERVICE_TYPE_HEADER
from edgecloud.core.sse import DONE_EVENT, SSEEventSplitter, carries_token, carries_usage
from edgecloud.gateway.routing import Backend
from edgecloud.gateway.settings import GatewaySettings
from edgecloud.gateway.timing import RequestTiming
from edgecloud.gateway.upstream_http import HTTPPool, UpstreamHTTPError, UpstreamResponse

logger = logging.getLogger(__name__)

# After a stream's [DONE], how long the end of its body may take and how much of it is read: a backend sends the
# chunked encoding's last chunk with [DONE] or right after it; one whose body does not end so loses the connection.
END_OF_BODY_WAIT_S = 1.0
END_OF_BODY_READ_BYTES = 1024
# Statuses a backend may return that are the client's doing, passed on unchanged.
RELAYED_CLIENT_STATUSES = frozenset({400, 404, 413, 422, 429})


class UpstreamClient:
    """Pooled connections to the backends; start it inside the event loop that uses it."""

    def __init__(self, settings: GatewaySettings):
        self._settings = settings
        self._pool: HTTPPool | None = None

    async def start(self) -> None:
        settings = self._settings
        self._pool = HTTPPool(
            max_connections=settings.max_upstream_connections,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            idle_timeout_s=IDLE_CLIENT_CONNECTION_S,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def post(
        self, backend: Backend, path: str, payload: dict[str, Any], request_id: str, service_type: str
    ) -> UpstreamResponse:
        """POST ``payload`` to the backend; return the open response if it is a 200, else raise."""
        if self._pool is None:
            raise UpstreamUnavailableError("The gateway's upstream client is not started.")
        headers = {
            "Content-Type": "application/json",
            "X-Request-Id": request_id,
            SERVICE_TYPE_HEADER: service_type,
            **bearer_headers(backend.api_key),
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        try:
            response = await self._pool.post(backend.base_url, path, head, json.dumps(payload).encode())
        except TimeoutError:
            raise UpstreamTimeoutError(f"The {backend.route} backend did not answer in time.") from None
        except UpstreamHTTPError as exc:
            raise UpstreamUnavailableError(f"The {backend.route} backend is unreachable: {exc}.") from None
        if response.status != HTTPStatus.OK:
            body = await _read_quietly(response)
            raise error_from_upstream(backend, response.status, body)
        return response


async def _read_quietly(response: UpstreamResponse) -> bytes:
    try:
        return await response.read()
    except (TimeoutError, UpstreamHTTPError):
        return b""
    finally:
        response.release()


def error_from_upstream(backend: Backend, status: int, body: bytes) -> ServiceError:
    """Map a backend's error answer to ours: client errors pass through, the rest become 502/503."""
    message, error_type, param, code = _parse_error(body)
    if status in RELAYED_CLIENT_STATUSES:
        return RelayedError(status, message or HTTPStatus(status).phrase, error_type, param=param, code=code)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        return UpstreamUnavailableError(f"The {backend.route} backend is unavailable: {message or 'no detail'}.")
    if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return UpstreamError(f"The {backend.route} backend refused the gateway's credentials ({status}).")
    return UpstreamError(f"The {backend.route} backend failed with status {status}: {message or 'no detail'}.")


def _parse_error(body: bytes) -> tuple[str, str, str | None, str | None]:
    """Read an OpenAI-shaped error, or vLLM's older flat one (``{"object": "error", "message": ...}``)."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode(errors="replace").strip(), "invalid_request_error", None, None
    detail = parsed.get("error", parsed) if isinstance(parsed, dict) else {}
    if not isinstance(detail, dict):
        return str(detail), "invalid_request_error", None, None
    code = detail.get("code")
    return (
        str(detail.get("message", "")),
        str(detail.get("type") or "invalid_request_error"),
        detail.get("param"),
        None if code is None else str(code),
    )


def _record_usage(timing: RequestTiming, usage: dict[str, Any] | None) -> None:
    if usage:
        timing.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        timing.completion_tokens = int(usage.get("completion_tokens") or 0)


class Outcome(StrEnum):
    """How an attempt on a backend ended; the values are the requests metric's ``outcome`` label."""

    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_DISCONNECT = "upstream_disconnect"
    CLIENT_DISCONNECT = "client_disconnect"


@dataclass(frozen=True)
class Completion:
    """A non-streamed answer as read from the backend, and how the read ended."""

    outcome: Outcome
    body: bytes = b""


async def read_completion(response: UpstreamResponse, timing: RequestTiming) -> Completion:
    """Read a non-streamed answer whole and take its token counts."""
    try:
        body = await response.read()
    except (TimeoutError, UpstreamHTTPError):
        return Completion(Outcome.UPSTREAM_DISCONNECT)
    finally:
        response.release()
    timing.mark_finished()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        _record_usage(timing, parsed.get("usage"))
    return Completion(Outcome.SUCCESS, body)


class StreamRelay:
    """Forwards a backend's SSE events as they arrive, a network read at a time.

    Whatever one read from the backend holds (one event, or several when the backend wrote them
    together) goes to the client in one write, so the per-token cost stays small. Usage is always
    requested upstream (to count tokens exactly); the usage-only chunk is dropped when the client
    did not ask for it. ``outcome`` is how the stream ended: the backend's ``[DONE]``, its error
    event, or its connection gone first; a stream closed before any of these was left by the client.
    """

    def __init__(self, response: UpstreamResponse, timing: RequestTiming, client_wants_usage: bool):
        self.timing = timing
        self.outcome = Outcome.CLIENT_DISCONNECT
        self.events = self._relay(response, StreamState(timing, client_wants_usage))

    async def until_first_token(self) -> list[bytes]:
        """The events up to the first token, or all of them if the stream ends without one."""
        head: list[bytes] = []
        async for chunk in self.events:
            head.append(chunk)
            if self.timing.first_token is not None:
                break
        return head

    async def _relay(self, response: UpstreamResponse, state: StreamState) -> AsyncGenerator[bytes, None]:
        splitter = SSEEventSplitter()
        reusable = False
        try:
            async for block in response:
                forward = state.take(splitter.feed(block))
                if state.done:
                    # The answer is whole once [DONE] goes to the client: a client that leaves then (the openai
                    # client closes at [DONE]) did not abandon it, while the end of the body is still awaited.
                    self.outcome = Outcome.SUCCESS
                    self.timing.mark_finished()
                if forward:
                    yield forward
                if state.ended:
                    break
            reusable = state.done and await _body_ended(response)
        except (TimeoutError, UpstreamHTTPError) as exc:
            logger.warning("upstream stream broke: %s", type(exc).__name__)
        finally:
            # A connection whose body was read to its end goes back to the pool. Closing it at [DONE] cost a backend
            # that writes the body's last chunk after [DONE] a new connection (a TCP handshake on both sides) for
            # every streamed answer; on loopback the simulator's last chunk came with [DONE], so no change measured.
            if reusable:
                response.release()
            else:
                response.close()
            if not state.done:
                self.timing.mark_finished()
        if state.upstream_error:
            self.outcome = Outcome.UPSTREAM_ERROR
        elif not state.done:
            self.outcome = Outcome.UPSTREAM_DISCONNECT
            body = error_body("The backend closed the stream before it was complete.", "upstream_error")
            yield b"data: " + body.model_dump_json().encode() + b"\n\n"
        else:
            self.outcome = Outcome.SUCCESS


async def _body_ended(response: UpstreamResponse) -> bool:
    """After ``[DONE]``: read what is left of the body (the chunked encoding's last chunk, sent with it or just
    after; a connection whose body ended goes back to the pool); False if it does not end within
    ``END_OF_BODY_WAIT_S`` and ``END_OF_BODY_READ_BYTES``."""
    if response.at_eof:
        return True
    left = END_OF_BODY_READ_BYTES
    try:
        async with asyncio.timeout(END_OF_BODY_WAIT_S):
            while not response.at_eof:
                left -= len(await anext(response))
                if left < 0:
                    return False
    except (TimeoutError, UpstreamHTTPError, StopAsyncIteration):
        return response.at_eof
    return True


class StreamState:
    """Classifies the events of one stream: tokens, usage, the end, an error from the backend."""

    def __init__(self, timing: RequestTiming, client_wants_usage: bool):
        self.timing = timing
        self.client_wants_usage = client_wants_usage
        self.done = False
        self.upstream_error = False

    @property
    def ended(self) -> bool:
        return self.done or self.upstream_error

    def take(self, events: list[bytes]) -> bytes:
        """The bytes to forward for ``events``; token events are timed together, as they arrived together."""
        forward: list[bytes] = []
        tokens = 0
        for event in events:
            if self.ended:
                break
            payload = event.strip()[5:].lstrip() if event.lstrip().startswith(b"data:") else b""
            if payload == b"[DONE]":
                self.done = True
                forward.append(DONE_EVENT)
                continue
            if payload.startswith(b'{"error"'):
                self.upstream_error = True
            elif payload and carries_usage(payload):
                chunk = json.loads(payload)
                _record_usage(self.timing, chunk.get("usage"))
                if not chunk.get("choices") and not self.client_wants_usage:
                    continue
            if payload and not self.upstream_error and carries_token(payload):
                tokens += 1
            forward.append(event.strip() + b"\n\n")
        if tokens:
            self.timing.mark_tokens(tokens)
        return b"".join(forward)
