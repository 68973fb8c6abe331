"""The decision cache: at temperature 0 the LLM's answer is a function of the prompt it reads and the model.

Entries are keyed by (namespace, x, digest of the exact prompt, model). A pool change that alters the
examples shown for x changes the digest, so an old entry is never read again and ages out of the LRU
order; a change elsewhere in the pool leaves x's entry valid (with nearest-example retrieval most pool
changes touch a few states only). Concurrent misses for one key share one computation (single flight),
so a burst of identical requests costs one LLM call. An entry may carry a lifetime (a fallback given
while the LLM cannot score is kept only until the scorer tries again).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Value = TypeVar("Value")


@dataclass(frozen=True)
class CacheKey:
    namespace: str
    state_key: str
    prompt_digest: str
    model: str


class DecisionCache(Generic[Value]):
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[Value, float | None]] = OrderedDict()
        self._in_flight: dict[CacheKey, asyncio.Future[Value]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Value | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def remaining_s(self, key: CacheKey) -> float | None:
        """How much longer the entry for ``key`` lives; None if it has no lifetime or is not here."""
        entry = self._entries.get(key)
        if entry is None or entry[1] is None:
            return None
        return max(entry[1] - self._clock(), 0.0)

    def put(self, key: CacheKey, value: Value, ttl_s: float | None = None) -> None:
        """Keep ``value`` for ``key``; for ``ttl_s`` seconds only if given."""
        self._entries[key] = (value, None if ttl_s is None else self._clock() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_compute(self, key: CacheKey, compute: Callable[[], Awaitable[Value]]) -> tuple[Value, bool]:
        """The cached value and True, or the computed one and False; one computation per key at a time."""
        cached = self.get(key)
        if cached is not None:
            return cached, True
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        self.misses += 1
        future: asyncio.Future[Value] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await compute()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._in_flight.pop(key, None)
        future.set_result(value)
        self.put(key, value)
        return value, False

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
