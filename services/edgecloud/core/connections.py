"""Connection limits uvicorn does not have: a deadline for request headers, and a cap on open connections.

uvicorn (0.54, pinned) closes an idle keep-alive connection after ``timeout_keep_alive``, but a fresh
connection that sends nothing, or headers a byte at a time (slow-loris), is held for ever, each holding a
descriptor. ``guarded_protocol`` subclasses uvicorn's httptools protocol:

- every request's headers must be complete within ``header_timeout_s`` of its first byte (of the
  connection's opening, for the first request), else the connection is closed;
- at ``max_connections`` open, a new connection takes the place of the longest-open one that has no
  request in progress (idle, or still sending headers); a request in progress is never cut. With none
  to replace, the new connection is closed at once. Either way one warning per ``LOG_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0  # at most one warning this often about slow or surplus connections
IDLE_CLIENT_CONNECTION_S = 2.0
"""How long a pooled client connection may idle before the client drops it: below uvicorn's 5 s keep-alive
(every service here and vLLM serve on uvicorn), so that a request never goes out on a connection the server
is closing at that moment (seen: ReadError, ServerDisconnectedError, ClientOSError). aiohttp keeps them 15 s
by default."""


class _GuardedProtocol(HttpToolsProtocol):
    header_timeout_s: ClassVar[float]
    max_connections: ClassVar[int]
    _last_warning: ClassVar[dict[str, float]]  # per kind of warning, when it was last logged

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.opened_at = time.monotonic()
        self._header_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.max_connections and not self._make_room():
            super().connection_made(transport)
            self._warn("cap", f"{len(self.connections)} connections open (the cap): refused a new one")
            transport.abort()
            return
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    @property
    def _in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> bool:
        """Close the longest-open connection with no request in progress; False if every one has one."""
        idle = [connection for connection in self.connections if not getattr(connection, "_in_progress", True)]
        if not idle:
            return False
        oldest = min(idle, key=lambda connection: getattr(connection, "opened_at", 0.0))
        self._warn("cap", f"{len(self.connections)} connections open (the cap): closed the longest-open idle one")
        oldest.transport.abort()
        self.connections.discard(oldest)
        return True

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self._warn("slow", f"closed a connection whose request headers took over {self.header_timeout_s:g} s")
            self.transport.close()

    @classmethod
    def _warn(cls, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - cls._last_warning[kind] >= LOG_EVERY_S:
            cls._last_warning[kind] = now
            logger.warning("%s (at most one such line per %g s)", message, LOG_EVERY_S)


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline and a connection cap (the module docstring)."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedProtocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections,
         "_last_warning": {"slow": -LOG_EVERY_S, "cap": -LOG_EVERY_S}},
    )  # fmt: skip
