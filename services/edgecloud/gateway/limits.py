"""Requests and tokens per client key per minute, counted in Redis so that every gateway replica enforces
the same budget.

Fixed one-minute windows (``{prefix}:{key name}:{minute}:requests`` and ``:tokens``, expiring after two
minutes): a request is admitted while its key has sent fewer than ``requests_per_minute`` requests and
spent fewer than ``tokens_per_minute`` tokens (prompt and completion, as OpenAI counts them) in the
current minute; a refused one gets 429 with ``retry-after``, the seconds to the next minute. A fixed
window lets a client send up to twice its budget across a minute boundary; the simplicity (one INCR per
request) is worth that here. While Redis is down each replica counts alone (``core.redis_guard``): the
budget then holds per replica, and no request fails for the limiter's sake.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis

from edgecloud.core.errors import RateLimitError
from edgecloud.core.redis_guard import CALL_TIMEOUT_S, RETRY_INTERVAL_S, RedisGuard, redis_client
from edgecloud.gateway.clients import ClientKey

logger = logging.getLogger(__name__)

KEY_PREFIX = "edgecloud:limits"
WINDOW_S = 60  # the budget's period: per minute, as OpenAI states its limits
EXPIRE_S = 2 * WINDOW_S  # a window's counters outlive it by one window, then Redis drops them


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None,
        *,
        timeout_s: float = CALL_TIMEOUT_S,
        retry_interval_s: float = RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis_url = redis_url
        self._clock = clock
        self._client: aioredis.Redis | None = None
        self._redis = RedisGuard(
            "rate-limit counters", "counting on this replica alone", timeout_s, retry_interval_s, log=logger
        )
        self._local: Counter[str] = Counter()  # while Redis is down: the counters of ``_local_window`` only
        self._local_window = -1

    async def start(self) -> None:
        if self.redis_url is not None and self._client is None:
            self._client = redis_client(self.redis_url, self._redis.timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _window(self, client: ClientKey) -> tuple[int, str, str, float]:
        """The current minute, ``client``'s request and token counters in it, and the seconds it has left."""
        now = self._clock()
        window = math.floor(now / WINDOW_S)
        base = f"{KEY_PREFIX}:{client.name}:{window}"
        return window, f"{base}:requests", f"{base}:tokens", (window + 1) * WINDOW_S - now

    async def admit(self, client: ClientKey) -> None:
        """Count one request of ``client``; 429 if its requests or tokens of this minute are used up."""
        if client.requests_per_minute is None and client.tokens_per_minute is None:
            return
        window, requests_key, tokens_key, retry_after_s = self._window(client)
        requests, tokens = await self._count(window, requests_key, 1, read=tokens_key)
        if client.requests_per_minute is not None and requests > client.requests_per_minute:
            self._refuse(client, f"{client.requests_per_minute} requests", retry_after_s)
        if client.tokens_per_minute is not None and tokens >= client.tokens_per_minute:
            self._refuse(client, f"{client.tokens_per_minute} tokens", retry_after_s)

    async def spend(self, client: ClientKey, tokens: int) -> None:
        """Add a finished request's tokens to ``client``'s minute."""
        if client.tokens_per_minute is None or tokens <= 0:
            return
        window, _, tokens_key, _ = self._window(client)
        await self._count(window, tokens_key, tokens)

    async def _count(self, window: int, key: str, amount: int, read: str | None = None) -> tuple[int, int]:
        """Add ``amount`` to ``key``; return its new value and the value of ``read`` (0 if none)."""
        client = self._client
        if client is not None:

            async def in_redis() -> tuple[int, int]:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.incrby(key, amount)
                    pipe.expire(key, EXPIRE_S)
                    if read is not None:
                        pipe.get(read)
                    results = await pipe.execute()
                return int(results[0]), int(results[2] or 0) if read is not None else 0

            counted = await self._redis.call(in_redis)
            if counted is not None:
                return counted
        if window != self._local_window:  # a new minute: the last one's counts are of no use
            self._local.clear()
            self._local_window = window
        self._local[key] += amount
        return self._local[key], self._local[read] if read is not None else 0

    @staticmethod
    def _refuse(client: ClientKey, budget: str, retry_after_s: float) -> None:
        retry_after = max(1, math.ceil(retry_after_s))
        raise RateLimitError(
            f"Rate limit reached for this API key ({client.name}): {budget} per minute. Retry in {retry_after} s.",
            code="rate_limit_exceeded",
            headers={"retry-after": str(retry_after)},
        )
