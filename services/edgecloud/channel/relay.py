"""The emulator's upstream side: forward a request to the gateway, pace its answer chunk by chunk.

``GatewayClient`` is a pooled aiohttp session to the gateway. ``PacedAnswer`` turns the gateway's
open response into what the user receives: every SSE event (or the whole JSON body) is queued at
the BS when it arrives from the gateway (plus the backhaul delay when offloaded) and released when
the scheduler has delivered its bytes. Reading from the gateway never waits for the radio: bytes
pile up at the BS, as they would in a real base station's buffer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from edgecloud.channel.metrics import ChannelMetrics
from edgecloud.channel.pacing import Pacer, release_at
from edgecloud.channel.settings import ByteAccounting, ChannelSettings
from edgecloud.core.auth import bearer_headers
from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.core.errors import UpstreamTimeoutError, UpstreamUnavailableError, error_body
from edgecloud.core.headers import JSON_CONTENT
from edgecloud.core.sse import DONE_EVENT, SSEEventSplitter, carries_token
from edgecloud.core.wire import AirReport

logger = logging.getLogger(__name__)

BITS_PER_BYTE = 8
# Request headers not forwarded: hop-by-hop ones and those aiohttp sets itself.
DROPPED_REQUEST_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding"})
# Response headers not passed back: the emulator frames the body itself.
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})


class GatewayClient:
    def __init__(self, settings: ChannelSettings):
        self.base_url = settings.upstream_url
        self._api_key = settings.gateway_api_key
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CLIENT_CONNECTION_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Send the request on; the open response is returned whatever its status."""
        if self._session is None:
            raise UpstreamUnavailableError("The channel emulator's upstream client is not started.")
        forwarded = {name: value for name, value in headers.items() if name.lower() not in DROPPED_REQUEST_HEADERS}
        try:
            return await self._session.request(method, f"{self.base_url}{path}", data=body, headers=forwarded)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeoutError("The gateway did not answer in time.") from None
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamUnavailableError(f"The gateway is unreachable: {type(exc).__name__}.") from None

    async def report(self, report: AirReport) -> None:
        """Send the gateway a request's measured transmission time (it joins it to the experience)."""
        if self._session is None:
            return
        headers = bearer_headers(self._api_key)
        try:
            async with self._session.post(
                f"{self.base_url}/v1/air-reports", data=report.model_dump_json(), headers=headers | JSON_CONTENT
            ) as response:
                if response.status >= 300:
                    logger.warning("the gateway refused an air report: %s", response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("air report not delivered: %s", type(exc).__name__)


def response_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower() not in DROPPED_RESPONSE_HEADERS}


@dataclass
class DeliveredTiming:
    """What the user saw, on ``time.perf_counter`` (the ingress stamp's clock).

    TTFT and TPOT exist for streams only, as in vLLM's and the gateway's metrics: a whole JSON body
    has no first token apart from its last one.
    """

    arrived: float
    streamed: bool = True
    upstream_finished: float | None = None  # [DONE] (or the end of the body) reached the BS, before any backhaul
    first_token: float | None = None
    last_release: float | None = None
    tokens: int = 0
    accounted_bytes: float = 0.0

    def released(self, tokens: int) -> None:
        now = time.perf_counter()
        if tokens and self.first_token is None:
            self.first_token = now
        self.tokens += tokens
        self.last_release = now

    @property
    def ttft(self) -> float | None:
        if not self.streamed or self.first_token is None:
            return None
        return self.first_token - self.arrived

    @property
    def e2e(self) -> float | None:
        return None if self.last_release is None else self.last_release - self.arrived

    def mark_upstream_finished(self) -> None:
        self.upstream_finished = time.perf_counter()

    @property
    def transmission_s(self) -> float | None:
        """What the air (and the backhaul) added after the BS had the whole answer: eq. 1's t_tran as measured.

        For a whole JSON body this is n s / C + t_back exactly; in a stream the airtime of earlier tokens
        overlaps generation, so the gateway's generation time plus this is the delay the user saw.
        """
        if self.upstream_finished is None or self.last_release is None:
            return None
        return max(self.last_release - self.upstream_finished, 0.0)

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or self.tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


class Outcome:
    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECT = "client_disconnect"


_END = object()
# How the gateway starts the error event that ends a broken stream (no [DONE] follows it).
ERROR_EVENT_START = b'data: {"error"'


@dataclass
class PacedAnswer:
    """One answer on its way to one user: flow ``flow`` of the pacer, ``delay_s`` of backhaul."""

    settings: ChannelSettings
    pacer: Pacer
    metrics: ChannelMetrics
    user_id: str
    flow: int
    route: str
    service_type: str
    delay_s: float
    timing: DeliveredTiming
    on_finish: list[Callable[[str], None]] = field(default_factory=list)  # run once with the outcome

    def _bits(self, wire_bytes: int, tokens: int) -> float:
        if self.settings.byte_accounting is ByteAccounting.WIRE:
            accounted = float(wire_bytes)
        else:
            accounted = tokens * self.settings.bytes_per_token
        self.timing.accounted_bytes += accounted
        return accounted * BITS_PER_BYTE

    def _queue(self, wire_bytes: int, tokens: int) -> tuple[asyncio.Future[float], float]:
        ready_at = self.pacer.clock.now() + self.delay_s
        return self.pacer.send(self.user_id, self._bits(wire_bytes, tokens), self.flow, ready_at), ready_at

    async def _release(self, future: asyncio.Future[float], ready_at: float, tokens: int) -> None:
        delivered_at = await future
        await release_at(self.pacer.clock, delivered_at)
        self.metrics.queueing_delay.observe(max(delivered_at - ready_at, 0.0))
        self.metrics.release_lateness.observe(max(self.pacer.clock.now() - delivered_at, 0.0))
        self.timing.released(tokens)

    async def body(self, response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        """A whole JSON answer: released in one piece once all its bytes are delivered."""
        outcome = Outcome.CLIENT_DISCONNECT
        self.timing.streamed = False
        try:
            body = await response.read()
            self.timing.mark_upstream_finished()
            tokens = _completion_tokens(body)
            future, ready_at = self._queue(len(body), tokens)
            await self._release(future, ready_at, tokens)
            outcome = Outcome.SUCCESS
            yield body
        finally:
            response.close()
            self._finish(outcome)

    async def stream(self, response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        """An SSE answer: each event released when delivered; the gateway is read meanwhile."""
        queue: asyncio.Queue = asyncio.Queue()
        reader = asyncio.create_task(self._read_events(response, queue))
        outcome = Outcome.CLIENT_DISCONNECT
        try:
            while (item := await queue.get()) is not _END:
                event, tokens, future, ready_at = item
                await self._release(future, ready_at, tokens)
                if event == DONE_EVENT:  # the user has the whole answer: leaving now (as the openai client does,
                    outcome = Outcome.SUCCESS  # at [DONE]) abandons nothing, and the air report still goes
                yield event
            outcome = await reader
        finally:
            reader.cancel()
            response.close()
            self._finish(outcome)

    async def _read_events(self, response: aiohttp.ClientResponse, queue: asyncio.Queue) -> str:
        splitter = SSEEventSplitter()
        done = errored = False
        try:
            async for block in response.content.iter_any():
                for raw in splitter.feed(block):
                    event = raw.strip() + b"\n\n"
                    if event == DONE_EVENT and not done:
                        self.timing.mark_upstream_finished()  # the BS has the whole answer; the body's end may lag
                    done = done or event == DONE_EVENT
                    errored = errored or event.startswith(ERROR_EVENT_START)
                    tokens = 1 if carries_token(event) else 0
                    queue.put_nowait((event, tokens, *self._queue(len(event), tokens)))
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("gateway stream broke: %s", type(exc).__name__)
        if not done:
            self.timing.mark_upstream_finished()
        if not done and not errored:
            error = error_body("The gateway closed the stream before it was complete.", "upstream_error")
            event = b"data: " + error.model_dump_json().encode() + b"\n\n"
            queue.put_nowait((event, 0, *self._queue(len(event), 0)))
        queue.put_nowait(_END)
        return Outcome.SUCCESS if done else Outcome.UPSTREAM_ERROR

    def _finish(self, outcome: str) -> None:
        self.pacer.cancel(self.user_id, self.flow)
        self.metrics.requests.labels(self.route, self.service_type, outcome).inc()
        if outcome == Outcome.SUCCESS:
            self._record_success()
        for callback in self.on_finish:
            callback(outcome)

    def _record_success(self) -> None:
        timing, labels = self.timing, (self.route, self.service_type)
        self.metrics.delivered_tokens.labels(*labels).inc(timing.tokens)
        self.metrics.delivered_bytes.labels(*labels).inc(timing.accounted_bytes)
        if timing.e2e is not None:
            self.metrics.e2e.labels(*labels).observe(timing.e2e)
        if timing.ttft is not None:
            self.metrics.ttft.labels(*labels).observe(timing.ttft)
        if timing.tpot is not None:
            self.metrics.tpot.labels(*labels).observe(timing.tpot)
        if timing.transmission_s is not None:
            self.metrics.transmission.labels(*labels).observe(timing.transmission_s)


def _completion_tokens(body: bytes) -> int:
    try:
        usage = json.loads(body).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0
