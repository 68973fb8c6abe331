"""Redis that may fail but never fails a request or holds it up: for state that has an in-process fallback.

Each call is bounded by a deadline of twice the socket timeout (connect + command); a failure switches the
caller to its fallback, and Redis is left alone for ``retry_interval_s`` so that requests do not each pay
the timeout; then it is tried again. One warning per outage, not per request, and one line when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Errors that mean "Redis is not there or not answering"; anything else is a bug and is raised.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

T = TypeVar("T")


class RedisGuard:
    def __init__(
        self,
        what: str,
        fallback: str,
        timeout_s: float,
        retry_interval_s: float,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``what`` Redis holds and the ``fallback`` meanwhile, for ``log``; ``before`` runs ahead of every call
        (pushing what waited during an outage), inside the same deadline."""
        if timeout_s <= 0 or retry_interval_s < 0:
            raise ValueError("timeout_s must be positive and retry_interval_s not negative")
        self.what = what
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self._before = before
        self._log = log
        self._clock = clock
        self.available = True
        self._failed_at = 0.0

    async def call(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call()`` on Redis; None while Redis is unreachable (never raises for that)."""
        if not self.available and self._clock() - self._failed_at < self.retry_interval_s:
            return None
        try:
            async with asyncio.timeout(2 * self.timeout_s):  # connect + command
                if self._before is not None:
                    await self._before()
                result = await call()
        except UNAVAILABLE as error:
            if self.available:
                self._log.warning(
                    "%s (Redis) unreachable (%r): %s, retrying every %g s",
                    self.what,
                    error,
                    self.fallback,
                    self.retry_interval_s,
                )
            self.available = False
            self._failed_at = self._clock()
            return None
        if not self.available:
            self._log.info("%s (Redis) reachable again", self.what)
        self.available = True
        return result
