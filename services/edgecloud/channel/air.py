"""The air interface in seconds: bits submitted at a time are delivered when the cell has sent them.

``AirInterface`` maps the cell's slots onto a time axis (slot s spans [t0 + s T, t0 + (s+1) T)).
Bits submitted for time t are queued at t and compete from the first slot starting at or after t:
the scheduler decides at slot boundaries. Submissions may lie in the future (the backhaul delay
of an offloaded answer); they are queued in time order, interleaved exactly with the slots, so the
delivery times do not depend on how often ``advance_to`` is called. The live pacer calls it every
few milliseconds of wall time; an experiment calls ``deliver`` once for thousands of items in
virtual time. Both get the same schedule, and the compiled cell runs the arrivals of a call inside its
batches of slots (``Cell.run_until``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from edgecloud.channel.cell import Arrival, Cell, SlotDelivery


@dataclass(frozen=True)
class Delivery:
    key: Hashable
    user_id: str
    time: float  # seconds on the interface's time axis


@dataclass(frozen=True)
class Transmission:
    """Bits for a user, ready at the base station at ``ready_time`` (seconds)."""

    user_id: str
    ready_time: float
    bits: float
    key: Hashable
    flow: int = 0


class AirInterface:
    def __init__(self, cell: Cell, start_time: float = 0.0):
        self.cell = cell
        self.start_time = start_time
        self.slot_duration_s = cell.channel.slot_duration_s
        self._pending: list[tuple[float, int, Transmission]] = []  # heap by ready time, then submission order
        self._sequence = itertools.count()

    def slot_start(self, slot: int) -> float:
        return self.start_time + slot * self.slot_duration_s

    def _first_slot_from(self, time: float) -> int:
        return max(math.ceil((time - self.start_time) / self.slot_duration_s - 1e-9), 0)

    def submit(self, transmission: Transmission) -> None:
        heapq.heappush(self._pending, (transmission.ready_time, next(self._sequence), transmission))

    def advance_to(self, now: float) -> list[Delivery]:
        """Queue the submissions ready by ``now`` and run every slot that has started by ``now``.

        A slot runs at its start, as a real scheduler decides then; its deliveries, at its end, may
        lie up to one slot after ``now``, so the pacer can release them on time, not a tick late.
        """
        arrivals: list[Arrival] = []
        ready_times: list[float] = []
        while self._pending and self._pending[0][0] <= now:
            ready_time, _, item = heapq.heappop(self._pending)
            arrivals.append(Arrival(self._first_slot_from(ready_time), item.user_id, item.bits, item.key, item.flow))
            ready_times.append(ready_time)
        started = max(math.floor((now - self.start_time) / self.slot_duration_s + 1e-9) + 1, 0)
        return [self._timed(delivery, ready_times) for delivery in self.cell.run_until(started, arrivals)]

    def cancel(self, user_id: str, flow: int) -> list[Delivery]:
        """Forget a flow: its pending submissions and its queued bits."""
        kept = [entry for entry in self._pending if not (entry[2].user_id == user_id and entry[2].flow == flow)]
        if len(kept) != len(self._pending):
            self._pending = kept
            heapq.heapify(self._pending)
        return [self._timed(delivery) for delivery in self.cell.cancel(user_id, flow)]

    def deliver(self, transmissions: Iterable[Transmission], max_drain_s: float = 3600.0) -> list[Delivery]:
        """Virtual time: submit everything, run to the last delivery, return the deliveries in time order."""
        for transmission in transmissions:
            self.submit(transmission)
        deliveries = self.advance_to(max(entry[0] for entry in self._pending)) if self._pending else []
        max_slots = math.ceil(max_drain_s / self.slot_duration_s)
        deliveries.extend(self._timed(delivery) for delivery in self.cell.run_until_idle(max_slots))
        return deliveries

    def next_event_time(self) -> float:
        """When ``advance_to`` next has work: the next slot's start if anyone waits, else the next submission."""
        if self.cell.backlogged:
            return self.slot_start(self.cell.slot)
        if self._pending:
            return self._pending[0][0]
        return math.inf

    def _timed(self, delivery: SlotDelivery, ready_times: Sequence[float] = ()) -> Delivery:
        """At the end of the delivering slot; an empty item with nothing ahead when it arrived, at its ready time
        (``ready_times`` of the arrivals passed to the cell); one released by a cancel, at the current slot's start."""
        if delivery.arrival is not None:
            return Delivery(delivery.key, delivery.user_id, ready_times[delivery.arrival])
        slot = delivery.slot if delivery.immediate else delivery.slot + 1
        return Delivery(delivery.key, delivery.user_id, self.slot_start(slot))
