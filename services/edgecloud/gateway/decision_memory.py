"""The gateway's memory of the decision service's answers: a steady-state decision without a round trip.

The decision service caches an ICL answer by (pool, x, the exact prompt, the decision LLM's model), and the
prompt of x is a function of the pool's version and the ICL method alone (``decision/cache.py``,
``decision/policies/icl.py``). So an answer the service marks ``valid_for_version`` (scored by its LLM, or
from its cache of such scores; never an exploration) holds for x until the pool's version or the scorer
(model, method, scoring path: a fingerprint the service announces) changes. A fallback holds only while the
LLM cannot score: the service marks it too, with ``valid_for_s``, the time until it tries the LLM again, and
the gateway forgets it then (other fallbacks, of a slow or failing LLM, are never remembered). The gateway keeps
such answers under (cell, policy, x = (service type, token bin), pool version, scorer), and for each
decision reads the pool's current version and scorer from the decision service's Redis
(``core.wire.pool_version_key`` and ``pool_scorer_key``: one MGET, through ``RedisGuard`` with a
budget of its own, ``GatewaySettings.decision_memory_timeout_s``). Decisions that need the view while a read is on
its way share that read: under load one MGET answers many requests, each with a view at most one round trip older
than its arrival (as any read is by the time its answer is used). Nothing is trusted without such a read: while
that Redis does not answer, or no scorer is announced, every decision goes to the service.

Exploration keeps the service's probability: on a hit the gateway draws u ~ U(0, 1); if u is below the
epsilon of the service's last answer it asks the service with that draw (``DecisionRequest.explore_draw``)
and the service explores iff u is below its epsilon now, so the service's generator picks the random
action and its audit and metrics see every exploration. A hit that does not explore is answered here and
reported with the next request (``DecisionRequest.remembered``), a step of the service's schedule.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from edgecloud.core.redis_guard import RedisGuard, redis_client
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.core.wire import DecisionResponse, pool_scorer_key, pool_version_key

logger = logging.getLogger(__name__)

# Answers kept at most: the keyword grid has 35 states, and only the current version's are ever read.
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Remembered:
    """A remembered answer: the action, what it is to the caller (``cache``: a scored answer; ``fallback``: the pool's
    example while the LLM cannot score), and until when it holds (None: as long as its version and scorer)."""

    action: Action
    source: DecisionSource
    expires_at: float | None


@dataclass(frozen=True)
class PoolView:
    """The pool's version and scorer as the decision service's Redis holds them now."""

    version: int
    scorer: str


class DecisionMemory:
    def __init__(
        self,
        redis_url: str | None,
        cell: str,
        policy: str,
        *,
        timeout_s: float,
        retry_interval_s: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis_url = redis_url
        self._keys = (pool_version_key(cell, policy), pool_scorer_key(cell, policy))
        self._guard = RedisGuard(
            "decision pool version",
            "asking the decision service for every decision",
            timeout_s,
            retry_interval_s,
            log=logger,
            clock=clock,
        )
        self._client: aioredis.Redis | None = None
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str, TaskState], Remembered] = OrderedDict()  # by (version, scorer, x)
        self._current: PoolView | None = None
        self._reading: asyncio.Future[PoolView | None] | None = None  # the version read on its way, shared
        self.rng = rng or random.Random()
        self.epsilon: float | None = None
        """The epsilon of the service's last answer (its next decision's); None before one."""
        self.unreported = 0
        """Decisions answered from memory that the service has not been told of yet."""

    async def start(self) -> None:
        if self.redis_url is not None and self._client is None:
            self._client = redis_client(self.redis_url, self._guard.timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def available(self) -> bool:
        """True when the version read works (Redis configured, started, answered the last call)."""
        return self._client is not None and self._guard.available

    async def view(self) -> PoolView | None:
        """The pool's version and scorer now; None when they cannot be read (the memory is then not trusted)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(self._read_done)
        # Shielded: a caller that is cancelled (its client left) does not cancel the others' read.
        return await asyncio.shield(self._reading)

    def _read_done(self, _: asyncio.Future[PoolView | None]) -> None:
        self._reading = None

    async def _read(self) -> PoolView | None:
        client = self._client
        if client is None:
            return None
        raw = await self._guard.call(lambda: client.mget(self._keys))
        if raw is None:
            return None
        version, scorer = raw
        if scorer is None:
            return None  # no scorer announced: nothing the service answered can be checked
        try:
            return PoolView(int(version or 0), scorer.decode() if isinstance(scorer, bytes) else str(scorer))
        except ValueError:
            return None

    def recall(self, view: PoolView, state: TaskState) -> Remembered | None:
        """The remembered answer for ``state`` under ``view``; answers of other versions, and lapsed ones, are
        forgotten."""
        if view != self._current:
            self._current = view
            for key in [key for key in self._entries if key[:2] != (view.version, view.scorer)]:
                del self._entries[key]
        key = (view.version, view.scorer, state)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        return entry

    def explores(self) -> float | None:
        """One draw for a remembered decision: the draw if it falls below the last known epsilon (the service
        decides with it), else None (the remembered answer stands)."""
        draw = self.rng.random()
        return draw if self.epsilon is not None and draw < self.epsilon else None

    def learn(self, state: TaskState, answer: DecisionResponse) -> None:
        """Take the service's epsilon from its answer, and remember the answer if it holds for the version."""
        self.epsilon = answer.epsilon
        version, scorer = answer.pool_version, answer.scorer
        if not answer.valid_for_version or scorer is None or version is None or version < 0:
            return
        key = (version, scorer, state)
        expires_at = None if answer.valid_for_s is None else self._clock() + answer.valid_for_s
        source = DecisionSource.FALLBACK if answer.source is DecisionSource.FALLBACK else DecisionSource.CACHE
        self._entries[key] = Remembered(answer.decision, source, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
