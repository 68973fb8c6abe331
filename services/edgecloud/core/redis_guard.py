"""Redis that may fail but never fails a request or holds it up: for state that has an in-process fallback.

Each call is bounded by a deadline of twice the socket timeout (connect + command); a failure switches the
caller to its fallback, and Redis is left alone for ``retry_interval_s`` so that requests do not each pay
the timeout; then it is tried again. One warning per outage, not per request, and one line when it is back.
Both services hold their Redis state through this guard (the gateway's output lengths and rate limits, the
decision service's experience pool) with clients made by ``redis_client``, so both follow one policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Errors that mean "Redis is not there or not answering"; anything else is a bug and is raised.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

T = TypeVar("T")

CALL_TIMEOUT_S = 0.05
"""Socket connect and read timeout of a Redis call: a local Redis answers in well under 1 ms, so 50 ms means
"down or overloaded", and a request never waits longer than about twice this for it."""
RETRY_INTERVAL_S = 5.0
"""After a failure Redis is left alone this long, so requests do not each pay the timeout."""


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client with ``timeout_s`` on connect and on every command, and one immediate retry, no backoff: it
    reconnects a pooled connection that a Redis restart left dead (else the first call after every restart
    looks like an outage), where redis-py's default backoff would hold a request for seconds. The guard's
    deadline bounds both tries."""
    return aioredis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1)
    )


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
        (pushing what waited during an outage): each of its commands is bounded by the socket timeout, the
        whole not by the deadline, as a long outage may leave much to push."""
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
            if self._before is not None:
                await self._before()
            async with asyncio.timeout(2 * self.timeout_s):  # connect + command
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
