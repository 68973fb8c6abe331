"""The gateway's HTTP/1.1 client to the backends: httptools' parser under an asyncio protocol, pooled.

Why not aiohttp, which the gateway's other clients use: relaying a streamed answer is one write and a few
dozen small reads, and aiohttp's general machinery around them (its request builder and writer, its stream
reader, its timers) was a fifth of the gateway's CPU on a pinned request (py-spy, BENCHMARKS.md). This client
does only what the relay needs, with the same C parser underneath (llhttp, through httptools):

- POST a body on a pooled keep-alive connection (TLS for ``https``), a request in one write;
- the status, then the body a network read at a time (chunked, ``Content-Length`` or until close);
- the connect timeout, and a read timeout on every wait for bytes (aiohttp's ``sock_read``);
- back-pressure: a reader that falls behind by ``READ_BUFFER_HIGH_BYTES`` pauses the socket;
- at most ``max_connections`` open, idle ones dropped after ``idle_timeout_s``.

Failures are ``TimeoutError`` (no connection, or no bytes, in time) or ``UpstreamHTTPError`` (refused, broken,
not HTTP).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from functools import cache
from typing import cast
from urllib.parse import urlsplit

import httptools

# Back-pressure bounds of a response's unread body: aiohttp's own read buffer limit (2**16) and half of it.
READ_BUFFER_HIGH_BYTES = 64 * 1024
READ_BUFFER_LOW_BYTES = READ_BUFFER_HIGH_BYTES // 2
DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamHTTPError(Exception):
    """The backend could not be reached, closed the connection early, or did not answer in HTTP."""


@dataclass(frozen=True)
class Origin:
    """Where a base URL's requests go: the connection's address and what each request line carries."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    base_path: str


@cache
def origin_of(base_url: str) -> Origin:
    """``base_url`` parsed once (a gateway has a handful of backends)."""
    parts = urlsplit(base_url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"Not an http(s) URL: {base_url!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal keeps its brackets in the Host header
        host_header = f"[{parts.hostname}]" if parts.port is None else f"[{parts.hostname}]:{port}"
    return Origin(parts.scheme, parts.hostname, port, host_header.encode(), parts.path.rstrip("/"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses the response of the request in flight and queues its body's reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin):
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.start_message()

    def start_message(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers_done = False
        self.message_done = False
        self.keep_alive = False
        self.delimited = False  # the body has a length or is chunked; otherwise it ends with the connection
        self.error: UpstreamHTTPError | None = None
        self.blocks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self._parsed: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._parsed.append(body)

    def on_message_complete(self) -> None:
        self.message_done = True
        self.keep_alive = self.parser.should_keep_alive()

    # asyncio's callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamHTTPError(f"invalid HTTP response ({type(exc).__name__})"))
        if self._parsed:
            block = self._parsed[0] if len(self._parsed) == 1 else b"".join(self._parsed)
            self._parsed.clear()
            self.blocks.append(block)
            self.buffered += len(block)
            if self.buffered > READ_BUFFER_HIGH_BYTES and not self.paused and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and not self.delimited and not self.message_done:
            self.message_done = True  # a body without a length ends with its connection
            self.keep_alive = False
        elif not self.message_done and self.error is None:
            self.error = UpstreamHTTPError("the backend closed the connection")
        self._wake()

    def _fail(self, error: UpstreamHTTPError) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Until something was parsed or the connection ended; ``TimeoutError`` after ``timeout_s`` of silence."""
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout_s, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def take(self) -> bytes:
        block = self.blocks.popleft()
        self.buffered -= len(block)
        if self.paused and self.buffered <= READ_BUFFER_LOW_BYTES and self.transport is not None:
            self.transport.resume_reading()
            self.paused = False
        return block

    @property
    def reusable(self) -> bool:
        return self.message_done and self.keep_alive and not self.lost and self.error is None and not self.blocks

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()
        self.lost = True


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamResponse:
    """A response being read: ``status`` at once, then the body by ``async for`` (a network read each)."""

    def __init__(self, pool: HTTPPool, connection: _Connection):
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = connection.status

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        while not connection.blocks:
            if connection.error is not None:
                raise connection.error
            if connection.message_done:
                raise StopAsyncIteration
            await connection.wait(self._pool.read_timeout_s)
        return connection.take()

    @property
    def at_eof(self) -> bool:
        """The whole body was read."""
        connection = self._connection
        return connection is None or (connection.message_done and not connection.blocks)

    async def read(self) -> bytes:
        """The rest of the body."""
        return b"".join([block async for block in self])

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if its body was read to the end."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.put_back(connection)

    def close(self) -> None:
        """Done with the response, whatever is left of its body: the connection is closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self._pool.put_back(connection)


class HTTPPool:
    """Keep-alive connections to the backends; create and use it inside one event loop."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._ssl_context = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def post(self, base_url: str, path: str, headers: bytes, body: bytes) -> UpstreamResponse:
        """POST ``body`` to ``base_url + path`` with ``headers`` (``Name: value\\r\\n`` lines); the response once
        its status and headers are in."""
        origin = origin_of(base_url)
        connection = await self._connection_to(origin)
        assert connection.transport is not None
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nAccept-Encoding: identity\r\n%s\r\n" % (
            (origin.base_path + path).encode(),
            origin.host_header,
            len(body),
            headers,
        )
        connection.transport.write(head + body)
        try:
            while not connection.headers_done:
                if connection.error is not None:
                    raise connection.error
                await connection.wait(self.read_timeout_s)
        except BaseException:
            connection.close()
            self.put_back(connection)
            raise
        return UpstreamResponse(self, connection)

    async def _connection_to(self, origin: Origin) -> _Connection:
        """An idle connection to ``origin``, else a new one once fewer than ``max_connections`` are open."""
        if self._closed:
            raise UpstreamHTTPError("the client is closed")
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(origin)
            now = loop.time()
            while idle:
                connection = idle.pop()
                if not connection.lost and now - connection.idle_since < self.idle_timeout_s:
                    connection.start_message()
                    return connection
                self._discard(connection)
            if self._open >= self.max_connections:
                self._drop_idle()  # another origin's idle connection makes room, if there is one
            if self._open < self.max_connections:
                break
            waiter = loop.create_future()  # woken when a connection goes idle or closes
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the wake goes to the next in line
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    origin.host,
                    origin.port,
                    ssl=self._tls() if origin.scheme == "https" else None,
                )
        except OSError as exc:
            self._free_slot()
            raise UpstreamHTTPError(f"cannot connect ({type(exc).__name__})") from None
        except BaseException:
            self._free_slot()
            raise
        return protocol

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def put_back(self, connection: _Connection) -> None:
        """A response is done with ``connection``: keep it for the next request to its origin, or drop it."""
        if connection.reusable and not self._closed:
            connection.idle_since = connection.loop.time()
            self._idle.setdefault(connection.origin, deque()).append(connection)
            self._wake_one()
        else:
            self._discard(connection)

    def _drop_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                self._discard(idle.popleft())
                return

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._free_slot()

    def _free_slot(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections; those in use close when their responses are done."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                self._discard(idle.pop())
        self._idle.clear()
