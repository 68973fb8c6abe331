"""Clocks: wall time for live services, virtual time for experiments; no HTTP here.

A ``Clock`` gives the time and sleeps: ``RealClock`` in wall time for the live servers,
``VirtualClock`` in simulated time, so an experiment pushes thousands of requests through the same
code (the simulator's engine, the channel emulator's scheduler) in a fraction of a second. Callers
sleep until absolute deadlines (``sleep_until``), never by accumulating relative sleeps, so timing
errors do not drift.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean something)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


async def sleep_until(clock: Clock, deadline: float) -> None:
    """Sleep until ``deadline`` on ``clock``; return at once if it has passed.

    Event-loop timers are only about 1 ms precise (uvloop tends to wake early, asyncio late);
    callers schedule from deadlines, not from wake-up times, so these errors never accumulate.
    """
    delay = deadline - clock.now()
    if delay > 0:
        await clock.sleep(delay)


class RealClock:
    """Wall time: ``time.monotonic`` (the clock asyncio's loop uses) and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """Simulated time for an asyncio loop that never waits for a timer.

    ``run(main())`` runs a coroutine on a loop whose ``time()`` is this clock: when every task
    is waiting for a timer, the loop jumps straight to the earliest one. All of asyncio (sleep,
    wait_for, queues, locks) then works in virtual time, unchanged. Real I/O still works but does
    not hold virtual time back. ``sleep`` must be awaited on that loop.
    """

    def __init__(self, start: float = 0.0):
        self._now = start

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualTimeLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


class _VirtualSelector(selectors.BaseSelector):
    """A real selector whose waits for timers cost no time: it advances the clock instead."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock
        self._selector = selectors.DefaultSelector()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._selector.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer pending: only real I/O can make progress
            return self._selector.select(None)
        self._clock.advance(timeout)
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def close(self) -> None:
        self._selector.close()

    def get_map(self) -> Any:
        return self._selector.get_map()


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock):
        super().__init__(selector=_VirtualSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.now()
