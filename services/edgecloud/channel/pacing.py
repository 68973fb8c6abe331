"""Live pacing: the air interface driven by a clock, releasing each chunk when its bits are delivered.

``Pacer.send`` queues a chunk's bits for a user at a ready time and returns a future that resolves
with the chunk's delivery time. A ticker task advances the ``AirInterface`` to the clock's now while
anything is in flight, and sleeps on an event otherwise. It wakes at the next slot start while users
have bytes waiting (each slot runs at its start, so its deliveries, due at its end, are known in
time and the caller sleeps until them), at the next submission otherwise, and at least every
``tick_s``, but never sooner than the event loop's timer resolution (1 ms: uvloop, the server's
loop, rounds shorter timers down to zero and would spin). The schedule does not depend on these
wake-ups (``air.py`` interleaves submissions and slots exactly); a release is late by the timer's
error, at most about one tick, and never early (``release_at``). The metric ``release_lateness``
records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import cast

from edgecloud.channel.air import AirInterface, Delivery, Transmission
from edgecloud.core.clock import Clock

ChunkKey = tuple[int, int]  # (flow, sequence number within the flow)
# libuv (uvloop) and epoll time their waits in whole milliseconds.
TIMER_RESOLUTION_S = 0.001


async def release_at(clock: Clock, deadline: float) -> None:
    """Sleep until ``deadline`` and never return before it, whatever the loop's timer rounding."""
    while (delay := deadline - clock.now()) > 0:
        await clock.sleep(max(delay, TIMER_RESOLUTION_S))


class Pacer:
    def __init__(self, air: AirInterface, clock: Clock, tick_s: float):
        self.air = air
        self.clock = clock
        self.tick_s = tick_s
        self._waiting: dict[ChunkKey, asyncio.Future[float]] = {}
        self._flows = itertools.count(1)
        self._sequence = itertools.count()
        self._work = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    def new_flow(self) -> int:
        return next(self._flows)

    def send(self, user_id: str, bits: float, flow: int, ready_at: float) -> asyncio.Future[float]:
        """Queue ``bits`` for ``user_id`` at ``ready_at`` (clock time); the future gives the delivery time."""
        key = (flow, next(self._sequence))
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        self.air.submit(Transmission(user_id, ready_at, bits, key, flow))
        self._work.set()
        return future

    def cancel(self, user_id: str, flow: int) -> None:
        """The flow's client left: its bits leave the scheduler now and its futures are cancelled."""
        self._resolve(self.air.cancel(user_id, flow))
        for key in [key for key in self._waiting if key[0] == flow]:
            self._waiting.pop(key).cancel()

    async def _tick_forever(self) -> None:
        while True:
            if not self._waiting:
                self._work.clear()
                await self._work.wait()
            now = self.clock.now()
            self._resolve(self.air.advance_to(now))
            wake = min(now + self.tick_s, self.air.next_event_time())
            await self.clock.sleep(max(wake - self.clock.now(), TIMER_RESOLUTION_S))

    def _resolve(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            future = self._waiting.pop(cast(ChunkKey, delivery.key), None)
            if future is not None and not future.done():
                future.set_result(delivery.time)
