"""The experience pool: its interface, and an in-memory implementation for unit tests and virtual time.

The live system uses ``RedisExperiencePool`` (``redis_pool.py``): shared by every replica, atomic,
persistent. Both follow ``replay.replay`` and keep a monotonically increasing version that changes
exactly when the set of examples changes, so a decision cached under one version is still valid
while the version holds. An experience with an ``experience_id`` is recorded once: offered again (a re-sent
post whose reply was lost), it changes nothing and its first result comes back marked ``duplicate``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from edgecloud.core.vocabulary import Evaluation, ReplayOutcome
from edgecloud.core.wire import DEFAULT_CELL, DEFAULT_POLICY, pool_prefix
from edgecloud.decision.experience import Experience
from edgecloud.decision.replay import replay

# How many experiences the in-memory audit log keeps (Redis keeps its stream capped likewise).
LOG_LENGTH = 100_000
# How long a pool remembers the id of an experience it recorded, to skip it when it is offered again: far above a
# sender's retry (a second) and the usual outage of the decision service; ours, as the gateway's length markers.
RECORDED_ID_TTL_S = 600
# How many recorded ids the in-memory pool remembers (it has no clock for a TTL).
RECORDED_IDS_KEPT = 100_000


@dataclass(frozen=True)
class PoolNamespace:
    """One pool per cell (base station) and per policy, so policies under comparison never share examples."""

    cell: str = DEFAULT_CELL
    policy: str = DEFAULT_POLICY

    @property
    def prefix(self) -> str:
        return pool_prefix(self.cell, self.policy)


@dataclass(frozen=True)
class OfferResult:
    outcome: ReplayOutcome
    version: int
    buffered: bool = False
    """True when the store was unreachable and the experience waits in ``ResilientExperiencePool``'s
    buffer: ``outcome`` and ``version`` are then provisional (the rules applied to the last snapshot
    seen); the store decides for real when the buffer is flushed."""
    duplicate: bool = False
    """True when an experience with the same ``experience_id`` was recorded before: nothing changed, ``outcome``
    and ``version`` are the first recording's."""

    @property
    def evaluation(self) -> Evaluation:
        return self.outcome.evaluation


@dataclass(frozen=True)
class PoolSnapshot:
    version: int
    examples: tuple[Experience, ...]
    """One per keyword combination, ordered by keyword key (so prompts are stable)."""
    stale: bool = False
    """True when the store was unreachable and this is the last snapshot seen (``ResilientExperiencePool``)."""


class ExperiencePool(Protocol):
    async def offer(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        """Apply the replay rules to ``experience`` and log it, atomically."""
        ...

    async def offer_many(self, offers: Sequence[tuple[PoolNamespace, Experience]]) -> list[OfferResult]:
        """``offer`` for each, in order (a store may send them in one round trip)."""
        ...

    async def snapshot(self, namespace: PoolNamespace) -> PoolSnapshot: ...

    async def version(self, namespace: PoolNamespace) -> int: ...

    async def latest(self, namespace: PoolNamespace, count: int) -> list[Experience]:
        """The ``count`` most recent experiences offered, newest first, whatever their evaluation."""
        ...

    async def clear(self, namespace: PoolNamespace) -> int:
        """Empty the pool (not the log); returns the new version."""
        ...

    async def announce(self, namespace: PoolNamespace, scorer: str) -> bool:
        """Say which scorer answers for the pool (``core.wire.pool_scorer_key``); False if it could not be said."""
        ...


@dataclass
class _Namespace:
    examples: dict[str, Experience] = field(default_factory=dict)
    version: int = 0
    log: deque[Experience] = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))


class InMemoryExperiencePool:
    """The pool in a dict: for unit tests and the virtual-time experiments (one process, no Redis)."""

    def __init__(self) -> None:
        self._namespaces: dict[PoolNamespace, _Namespace] = {}
        self._recorded: OrderedDict[tuple[PoolNamespace, str], OfferResult] = OrderedDict()
        self.scorers: dict[PoolNamespace, str] = {}

    def _get(self, namespace: PoolNamespace) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    async def offer(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        recorded = (namespace, experience.experience_id)
        if experience.experience_id and recorded in self._recorded:
            return replace(self._recorded[recorded], duplicate=True)
        pool = self._get(namespace)
        outcome = replay(pool.examples.get(experience.state.key), experience)
        evaluated = experience.evaluated(outcome.evaluation)
        if outcome.changes_pool:
            pool.examples[experience.state.key] = evaluated
            pool.version += 1
        pool.log.append(evaluated)
        result = OfferResult(outcome, pool.version)
        if experience.experience_id:
            self._recorded[recorded] = result
            while len(self._recorded) > RECORDED_IDS_KEPT:
                self._recorded.popitem(last=False)
        return result

    async def offer_many(self, offers: Sequence[tuple[PoolNamespace, Experience]]) -> list[OfferResult]:
        return [await self.offer(namespace, experience) for namespace, experience in offers]

    async def snapshot(self, namespace: PoolNamespace) -> PoolSnapshot:
        pool = self._get(namespace)
        return PoolSnapshot(pool.version, tuple(pool.examples[key] for key in sorted(pool.examples)))

    async def version(self, namespace: PoolNamespace) -> int:
        return self._get(namespace).version

    async def latest(self, namespace: PoolNamespace, count: int) -> list[Experience]:
        log = self._get(namespace).log
        return [log[-index] for index in range(1, min(count, len(log)) + 1)]

    async def clear(self, namespace: PoolNamespace) -> int:
        pool = self._get(namespace)
        pool.examples.clear()
        pool.version += 1
        return pool.version

    async def announce(self, namespace: PoolNamespace, scorer: str) -> bool:
        self.scorers[namespace] = scorer
        return True
