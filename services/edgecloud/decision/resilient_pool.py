"""An experience pool that keeps serving while its store (Redis) is unreachable.

While the store is down:
- ``offer`` buffers the experience in memory (oldest dropped beyond ``buffer_size``, counted in
  ``dropped_count``) and returns ``OfferResult(buffered=True)`` with a provisional outcome: the replay
  rules of section III-B applied to the last snapshot seen;
- ``snapshot`` returns the last snapshot seen for the namespace with ``stale=True`` (an empty one with
  version ``UNKNOWN_VERSION`` if none was seen), ``version`` the last version seen;
- ``latest`` returns the buffered experiences of the namespace, newest first, then the last answer seen;
- ``clear`` raises the store's error (emptying a pool is not worth replaying later);
- ``announce`` returns False (the service announces again later).

An experience offered again with the ``experience_id`` of one still in the buffer (a sender re-sent a post
whose reply was lost) is not buffered twice: its first provisional result comes back marked ``duplicate``.

When the service stops with experiences still waiting, ``close`` writes them to the spool file
(``spool_path``, ``core.spool``) and a pool built on the same file reads them back first, so a restart while
the store is down loses nothing; without a spool file they are lost, and the log says how many. While they
wait, ``keep_flushing`` keeps the same file current at every try (``core.spool.OutageSpool``), so a crash
loses only what arrived within the last retry interval.

Once the store answers, the buffer is flushed, oldest first, before the operation that found it back,
so the pool ends as if nothing had failed; ``keep_flushing`` (the service runs it in the background)
tries every retry interval, so a quiet service does not wait for its next request to push what waited.
A flush that times out after the store applied an experience offers it again: the pool is unchanged by
that (an equal reward keeps the stored example), only the log holds it twice (an experience with an id
not even that: the store skips it). The store is
reached through ``core.redis_guard.RedisGuard``, as the gateway reaches its Redis: each call has a
deadline, and after a failure the store is left alone for ``retry_interval_s`` so a request path does
not wait for a timeout on every call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgecloud.core.redis_guard import CALL_TIMEOUT_S, RETRY_INTERVAL_S, RedisGuard
from edgecloud.core.spool import OutageSpool, read_spool, write_spool
from edgecloud.decision.experience import Experience
from edgecloud.decision.pool import ExperiencePool, OfferResult, PoolNamespace, PoolSnapshot
from edgecloud.decision.replay import replay

logger = logging.getLogger(__name__)

BUFFER_SIZE = 10_000
# The version reported before any was seen: never equal to a store's version (those start at 0).
UNKNOWN_VERSION = -1
# Log a warning on the first dropped experience and then on every this many.
DROP_WARNING_EVERY = 1000
# keep_flushing's least wait between tries, so a retry interval of 0 (the tests') does not spin the loop.
FLUSH_INTERVAL_FLOOR_S = 0.1


class ResilientExperiencePool:
    """Wraps any ``ExperiencePool``; see the module docstring for what it does while the store is down."""

    def __init__(
        self,
        pool: ExperiencePool,
        *,
        buffer_size: int = BUFFER_SIZE,
        timeout_s: float = CALL_TIMEOUT_S,
        retry_interval_s: float = RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        spool_path: Path | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.pool = pool
        self.buffer_size = buffer_size
        self._store = RedisGuard(
            "experience store",
            "buffering offers, serving the last snapshot",
            timeout_s,
            retry_interval_s,
            before=self._flush_waiting,
            log=logger,
            clock=clock,
        )
        self._buffer: deque[tuple[PoolNamespace, Experience]] = deque()
        self._held: dict[tuple[PoolNamespace, str], OfferResult] = {}  # buffered experiences with an id
        self._flush_lock = asyncio.Lock()
        self._snapshots: dict[PoolNamespace, PoolSnapshot] = {}
        self._versions: dict[PoolNamespace, int] = {}
        self._latest: dict[PoolNamespace, list[Experience]] = {}
        self.dropped_count = 0
        self.spool_path = spool_path
        self._outage_spool = OutageSpool(spool_path, logger)
        self._held_count = 0  # experiences buffered so far, for the outage spool's appends
        self._restore()

    @property
    def buffered_count(self) -> int:
        """Experiences waiting for the store (the one a flush is sending is not counted)."""
        return len(self._buffer)

    @property
    def available(self) -> bool:
        """False from a failed call to the store until the next successful one."""
        return self._store.available

    async def flush(self) -> int:
        """Offer the buffered experiences to the store, oldest first; returns how many went in.

        One flush at a time. If the store fails, the experience being sent goes back to the front
        of the buffer and the error is raised.
        """
        async with self._flush_lock:
            flushed = 0
            while self._buffer:
                namespace, experience = self._buffer.popleft()
                try:
                    result = await self.pool.offer(namespace, experience)
                except BaseException:
                    self._buffer.appendleft((namespace, experience))
                    self._trim()
                    raise
                self._versions[namespace] = result.version
                self._held.pop((namespace, experience.experience_id), None)
                flushed += 1
            if flushed:
                logger.info("flushed %d buffered experiences to the pool", flushed)
            return flushed

    async def flush_if_reachable(self) -> int:
        """What waits goes to the store if it answers (tried at most once per retry interval after a failure,
        never raising for an outage); returns how many still wait."""
        if self._buffer:
            await self._store.call(self.flush)
        return len(self._buffer)

    async def keep_flushing(self) -> None:
        """Until cancelled: every retry interval, what waits goes to the store if it answers, and what still waits
        to the spool file."""
        while True:
            await asyncio.sleep(max(self._store.retry_interval_s, FLUSH_INTERVAL_FLOOR_S))
            if await self.flush_if_reachable():
                self._outage_spool.keep(list(self._buffer), self._held_count, _spool_record)
            else:
                self._outage_spool.clear()

    async def close(self) -> None:
        """At the service's stop: what still waits goes to the store if it answers now, else to the spool file."""
        try:
            await self.flush_if_reachable()
        finally:
            self._spool()

    def _spool(self) -> None:
        records = [_spool_record(held) for held in self._buffer]
        write_spool(self.spool_path, records, "experiences", logger)

    def _restore(self) -> None:
        """The experiences an earlier run spooled, first in the buffer (``core.spool``)."""
        self._buffer.extend(read_spool(self.spool_path, _spooled, "experiences", logger))
        self._trim()
        if self._buffer:
            self._outage_spool.keep(list(self._buffer), self._held_count, _spool_record)  # until they are flushed

    async def offer(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        return (await self.offer_many([(namespace, experience)]))[0]

    async def offer_many(self, offers: Sequence[tuple[PoolNamespace, Experience]]) -> list[OfferResult]:
        # Behind a running flush, experiences wait their turn so that the store sees offers in order.
        if self._flush_lock.locked():
            return [self._hold(namespace, experience) for namespace, experience in offers]
        results = await self._store.call(lambda: self.pool.offer_many(offers))
        if results is None:
            return [self._hold(namespace, experience) for namespace, experience in offers]
        for (namespace, _), result in zip(offers, results, strict=True):
            self._versions[namespace] = result.version
        return results

    async def snapshot(self, namespace: PoolNamespace) -> PoolSnapshot:
        snapshot = await self._store.call(lambda: self.pool.snapshot(namespace))
        if snapshot is None:
            cached = self._snapshots.get(namespace, PoolSnapshot(UNKNOWN_VERSION, ()))
            return dataclasses.replace(cached, stale=True)
        self._snapshots[namespace] = snapshot
        self._versions[namespace] = snapshot.version
        return snapshot

    async def version(self, namespace: PoolNamespace) -> int:
        version = await self._store.call(lambda: self.pool.version(namespace))
        if version is None:
            return self._versions.get(namespace, UNKNOWN_VERSION)
        self._versions[namespace] = version
        return version

    async def latest(self, namespace: PoolNamespace, count: int) -> list[Experience]:
        latest = await self._store.call(lambda: self.pool.latest(namespace, count))
        if latest is None:
            pending = [experience for held, experience in reversed(self._buffer) if held == namespace]
            return [*pending, *self._latest.get(namespace, [])][: max(count, 0)]
        self._latest[namespace] = latest
        return latest

    async def announce(self, namespace: PoolNamespace, scorer: str) -> bool:
        return bool(await self._store.call(lambda: self.pool.announce(namespace, scorer)))

    async def clear(self, namespace: PoolNamespace) -> int:
        """Empty the pool after the buffered experiences went in; raises if the store is unreachable."""
        if self._buffer:
            await self.flush()
        version = await self.pool.clear(namespace)
        self._store.available = True
        self._versions[namespace] = version
        self._snapshots[namespace] = PoolSnapshot(version, ())
        return version

    async def _flush_waiting(self) -> None:
        """Before any call to the store: what waited goes first, unless a flush is already on its way."""
        if self._buffer and not self._flush_lock.locked():
            await self.flush()

    def _hold(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        held = (namespace, experience.experience_id)
        if experience.experience_id and held in self._held:
            return dataclasses.replace(self._held[held], duplicate=True)
        self._buffer.append((namespace, experience))
        self._held_count += 1
        cached = self._snapshots.get(namespace)
        examples = cached.examples if cached is not None else ()
        stored = next((example for example in examples if example.state == experience.state), None)
        provisional = replay(stored, experience)
        result = OfferResult(provisional, self._versions.get(namespace, UNKNOWN_VERSION), buffered=True)
        if experience.experience_id:
            self._held[held] = result
        self._trim()
        return result

    def _trim(self) -> None:
        while len(self._buffer) > self.buffer_size:
            namespace, experience = self._buffer.popleft()
            self._held.pop((namespace, experience.experience_id), None)
            self.dropped_count += 1
            if self.dropped_count == 1 or self.dropped_count % DROP_WARNING_EVERY == 0:
                logger.warning(
                    "experience buffer full (%d): dropped the oldest; %d dropped so far",
                    self.buffer_size,
                    self.dropped_count,
                )


def _spool_record(held: tuple[PoolNamespace, Experience]) -> dict[str, Any]:
    namespace, experience = held
    return {"cell": namespace.cell, "policy": namespace.policy, "experience": experience.to_json()}


def _spooled(record: dict[str, Any]) -> tuple[PoolNamespace, Experience]:
    return PoolNamespace(record["cell"], record["policy"]), Experience.from_json(record["experience"])
