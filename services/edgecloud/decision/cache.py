"""The decision cache: with temperature 0 the LLM's answer is a function of (x, pool version, model).

Entries are keyed by that triple, so a pool change (a new version) makes old entries unreachable; they
are dropped when a newer version of the same namespace is seen. Concurrent misses for one key share one
computation (single flight), so a burst of identical requests costs one LLM call.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Value = TypeVar("Value")


@dataclass(frozen=True)
class CacheKey:
    namespace: str
    state_key: str
    pool_version: int
    model: str


class DecisionCache(Generic[Value]):
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Value] = OrderedDict()
        self._in_flight: dict[CacheKey, asyncio.Future[Value]] = {}
        self._newest_version: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Value | None:
        value = self._entries.get(key)
        if value is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: Value) -> None:
        self._forget_older_versions(key)
        self._entries[key] = value
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

    def _forget_older_versions(self, key: CacheKey) -> None:
        newest = self._newest_version.get(key.namespace, -1)
        if key.pool_version <= newest:
            return
        self._newest_version[key.namespace] = key.pool_version
        stale = [k for k in self._entries if k.namespace == key.namespace and k.pool_version < key.pool_version]
        for old in stale:
            del self._entries[old]

    def clear(self) -> None:
        self._entries.clear()
        self._newest_version.clear()

    def __len__(self) -> int:
        return len(self._entries)
