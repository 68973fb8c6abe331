"""The experience pool: its interface, and an in-memory implementation for unit tests and virtual time.

The live system uses ``RedisExperiencePool`` (``redis_pool.py``): shared by every replica, atomic,
persistent. Both follow ``replay.replay`` and keep a monotonically increasing version that changes
exactly when the set of examples changes, so a decision cached under one version is still valid
while the version holds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from edgecloud.core.vocabulary import Evaluation, ReplayOutcome
from edgecloud.core.wire import DEFAULT_CELL, DEFAULT_POLICY
from edgecloud.decision.experience import Experience
from edgecloud.decision.replay import replay

# How many experiences the in-memory audit log keeps (Redis keeps its stream capped likewise).
LOG_LENGTH = 100_000


@dataclass(frozen=True)
class PoolNamespace:
    """One pool per cell (base station) and per policy, so policies under comparison never share examples."""

    cell: str = DEFAULT_CELL
    policy: str = DEFAULT_POLICY

    @property
    def prefix(self) -> str:
        return f"edgecloud:pool:{self.cell}:{self.policy}"


@dataclass(frozen=True)
class OfferResult:
    outcome: ReplayOutcome
    version: int
    buffered: bool = False
    """True when the store was unreachable and the experience waits in ``ResilientExperiencePool``'s
    buffer: ``outcome`` and ``version`` are then provisional (the rules applied to the last snapshot
    seen); the store decides for real when the buffer is flushed."""

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

    async def snapshot(self, namespace: PoolNamespace) -> PoolSnapshot: ...

    async def version(self, namespace: PoolNamespace) -> int: ...

    async def latest(self, namespace: PoolNamespace, count: int) -> list[Experience]:
        """The ``count`` most recent experiences offered, newest first, whatever their evaluation."""
        ...

    async def clear(self, namespace: PoolNamespace) -> int:
        """Empty the pool (not the log); returns the new version."""
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

    def _get(self, namespace: PoolNamespace) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    async def offer(self, namespace: PoolNamespace, experience: Experience) -> OfferResult:
        pool = self._get(namespace)
        outcome = replay(pool.examples.get(experience.state.key), experience)
        evaluated = experience.evaluated(outcome.evaluation)
        if outcome.changes_pool:
            pool.examples[experience.state.key] = evaluated
            pool.version += 1
        pool.log.append(evaluated)
        return OfferResult(outcome, pool.version)

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
