"""The serving cell, slot by slot: users' downlink queues, RB grants, delivered bytes.

Each slot the scheduler grants every resource block to one user with bits waiting; a user whose
grant exceeds its queue keeps its best RBs and hands the rest back for the others. Bits a grant
could carry beyond the queue are lost, never banked for later slots. Delivered bits leave the
head of the user's FIFO queue; each queued item (an SSE chunk, a whole body) is delivered at the
end of the slot that carries its last bit. Time is counted in slots here; ``air.py`` maps it to
seconds. No clock, no HTTP: the live pacer and the virtual-time experiments both drive this class.

The proportional-fair average follows the usual exponential filter (paper Sec. II-C):
R_k(t+1) = (1 - 1/W) R_k(t) + (1/W) r_k(t), r_k the rate user k was served in slot t.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from edgecloud.channel.radio.base import ChannelModel
from edgecloud.channel.schedulers import Scheduler

# Bits below this count as nothing left (float sums of RB rates are not exact).
BITS_EPSILON = 1e-6


@dataclass
class QueuedItem:
    key: Hashable  # returned in the delivery, so the caller knows what arrived
    flow: int  # the response it belongs to; a cancelled flow's items leave the queue
    remaining_bits: float


@dataclass(frozen=True)
class SlotDelivery:
    key: Hashable
    user_id: str
    slot: int  # delivered at the end of this slot, or at its start when ``immediate``
    immediate: bool = False


@dataclass
class User:
    user_id: str
    handle: int  # the channel model's handle
    queue: deque[QueuedItem] = field(default_factory=deque)
    queued_bits: float = 0.0
    last_active_slot: int = 0

    @property
    def backlogged(self) -> bool:
        return self.queued_bits > BITS_EPSILON


@dataclass(frozen=True)
class UserTraffic:
    """A user's cumulative counters since it attached."""

    delivered_bits: float
    granted_bits: float  # capacity of the RBs granted; >= delivered_bits (a last RB may be part-filled)
    granted_rbs: int  # resource blocks granted, summed over slots
    backlogged_slots: int  # slots that started with bits waiting
    average_bps: float  # the PF filter's R_k: what the scheduler believes the user has been getting
    served_bps: float  # delivered bits per second of backlog: the rate the user saw while it had data waiting


class Cell:
    def __init__(self, channel: ChannelModel, scheduler: Scheduler, pf_window_slots: float, stats_window_slots: float):
        if pf_window_slots < 1 or stats_window_slots < 1:
            raise ValueError("averaging windows must be at least one slot")
        self.channel = channel
        self.scheduler = scheduler
        self.slot = 0  # index of the next slot to run
        self.users: dict[str, User] = {}
        self._order: list[User] = []  # row order of the arrays below
        self._average_bps = np.zeros(0)  # PF averaged throughput per row
        self._delivered_bits = np.zeros(0)  # cumulative per row
        self._granted_bits = np.zeros(0)
        self._granted_rbs = np.zeros(0, dtype=np.int64)
        self._backlogged_slots = np.zeros(0, dtype=np.int64)
        self._pf_forget = 1.0 / pf_window_slots
        self._stats_forget = 1.0 / stats_window_slots
        self.cell_throughput_bps = 0.0  # exponentially averaged over the stats window
        self.rb_utilisation = 0.0  # share of RBs carrying data, averaged likewise
        self._rb_index = np.arange(channel.num_rbs)

    # --- users -------------------------------------------------------------------------------

    def attach(self, user_id: str, position: tuple[float, float] | None = None) -> User:
        user = User(user_id, self.channel.add_ue(position), last_active_slot=self.slot)
        self.users[user_id] = user
        self._order.append(user)
        self._average_bps = np.append(self._average_bps, 0.0)
        self._delivered_bits = np.append(self._delivered_bits, 0.0)
        self._granted_bits = np.append(self._granted_bits, 0.0)
        self._granted_rbs = np.append(self._granted_rbs, 0)
        self._backlogged_slots = np.append(self._backlogged_slots, 0)
        return user

    def detach(self, user_id: str) -> None:
        user = self.users.pop(user_id)
        row = self._order.index(user)
        del self._order[row]
        self._average_bps = np.delete(self._average_bps, row)
        self._delivered_bits = np.delete(self._delivered_bits, row)
        self._granted_bits = np.delete(self._granted_bits, row)
        self._granted_rbs = np.delete(self._granted_rbs, row)
        self._backlogged_slots = np.delete(self._backlogged_slots, row)
        self.channel.remove_ue(user.handle)

    def traffic(self, user_id: str) -> UserTraffic:
        row = self._order.index(self.users[user_id])
        busy_slots = int(self._backlogged_slots[row])
        delivered = float(self._delivered_bits[row])
        busy_s = busy_slots * self.channel.slot_duration_s
        return UserTraffic(
            delivered_bits=delivered,
            granted_bits=float(self._granted_bits[row]),
            granted_rbs=int(self._granted_rbs[row]),
            backlogged_slots=busy_slots,
            average_bps=float(self._average_bps[row]),
            served_bps=delivered / busy_s if busy_s else 0.0,
        )

    # --- queues ------------------------------------------------------------------------------

    def enqueue(self, user_id: str, bits: float, key: Hashable, flow: int) -> SlotDelivery | None:
        """Queue ``bits`` for the user from the next slot on; an empty item behind nothing is delivered now."""
        user = self.users[user_id]
        user.last_active_slot = self.slot
        if bits <= BITS_EPSILON and not user.queue:
            return SlotDelivery(key, user_id, self.slot, immediate=True)
        user.queue.append(QueuedItem(key, flow, max(bits, 0.0)))
        user.queued_bits += max(bits, 0.0)
        return None

    def cancel(self, user_id: str, flow: int) -> list[SlotDelivery]:
        """Drop a flow's queued items at once (its client left); empty items left at the head are delivered."""
        user = self.users.get(user_id)
        if user is None:
            return []
        user.queue = deque(item for item in user.queue if item.flow != flow)
        user.queued_bits = sum(item.remaining_bits for item in user.queue)
        released = self._drain(user, 0.0)
        return [SlotDelivery(delivery.key, user_id, self.slot, immediate=True) for delivery in released]

    @property
    def backlogged(self) -> bool:
        return any(user.backlogged for user in self._order)

    # --- time --------------------------------------------------------------------------------

    def run_until(self, slot: int) -> list[SlotDelivery]:
        """Run every slot before ``slot``; slots with nobody waiting are skipped in one step."""
        deliveries: list[SlotDelivery] = []
        while self.slot < slot:
            if self.backlogged:
                deliveries.extend(self._run_slot())
            else:
                self._idle(slot - self.slot)
        return deliveries

    def run_until_idle(self, max_slots: int) -> list[SlotDelivery]:
        """Run slots until every queue is empty (at most ``max_slots``)."""
        deliveries: list[SlotDelivery] = []
        limit = self.slot + max_slots
        while self.backlogged and self.slot < limit:
            deliveries.extend(self._run_slot())
        return deliveries

    def _idle(self, n_slots: int) -> None:
        self.channel.advance(n_slots)
        self._average_bps *= (1.0 - self._pf_forget) ** n_slots
        decay = (1.0 - self._stats_forget) ** n_slots
        self.cell_throughput_bps *= decay
        self.rb_utilisation *= decay
        self.slot += n_slots

    def _run_slot(self) -> list[SlotDelivery]:
        rows = np.array([row for row, user in enumerate(self._order) if user.backlogged])
        users = [self._order[row] for row in rows]
        handles = np.array([user.handle for user in users])
        rates_bps = self.channel.rates_bps(handles)
        rb_bits = rates_bps * self.channel.slot_duration_s
        need_bits = np.array([user.queued_bits for user in users])
        winners = self._grant(rates_bps, rb_bits, need_bits, handles, self._average_bps[rows])
        self.scheduler.served(handles, winners)

        granted_bits = self._bits_per_user(winners, rb_bits)
        delivered_bits = np.minimum(granted_bits, need_bits)
        slot_s = self.channel.slot_duration_s
        served_bps = np.zeros_like(self._average_bps)
        served_bps[rows] = delivered_bits / slot_s
        self._average_bps += self._pf_forget * (served_bps - self._average_bps)
        self.cell_throughput_bps += self._stats_forget * (delivered_bits.sum() / slot_s - self.cell_throughput_bps)
        self.rb_utilisation += self._stats_forget * (
            np.count_nonzero(winners >= 0) / winners.size - self.rb_utilisation
        )
        self._backlogged_slots[rows] += 1
        self._granted_bits[rows] += granted_bits
        self._granted_rbs[rows] += np.bincount(winners[winners >= 0], minlength=len(users))
        self._delivered_bits[rows] += delivered_bits

        deliveries: list[SlotDelivery] = []
        for index in np.flatnonzero(delivered_bits):
            user = users[index]
            user.last_active_slot = self.slot
            deliveries.extend(self._drain(user, float(delivered_bits[index])))
        self.channel.advance(1)
        self.slot += 1
        return deliveries

    def _bits_per_user(self, winners: np.ndarray, rb_bits: np.ndarray) -> np.ndarray:
        granted = winners >= 0
        return np.bincount(
            winners[granted], weights=rb_bits[winners[granted], self._rb_index[granted]], minlength=rb_bits.shape[0]
        )

    def _grant(
        self,
        rates_bps: np.ndarray,
        rb_bits: np.ndarray,
        need_bits: np.ndarray,
        handles: np.ndarray,
        avg: np.ndarray,
    ) -> np.ndarray:
        """RB winners for this slot: users whose grant exceeds their queue keep only what they need."""
        eligible = np.ones(len(need_bits), dtype=bool)
        winners = self.scheduler.assign(rates_bps, avg, handles, eligible)
        while True:
            surplus = eligible & (self._bits_per_user(winners, rb_bits) > need_bits + BITS_EPSILON)
            if not surplus.any():
                return winners
            freed = np.zeros(winners.size, dtype=bool)
            for row in np.flatnonzero(surplus):
                own = np.flatnonzero(winners == row)
                best_first = own[np.argsort(-rb_bits[row, own], kind="stable")]
                kept = np.searchsorted(np.cumsum(rb_bits[row, best_first]), need_bits[row] - BITS_EPSILON) + 1
                freed[best_first[kept:]] = True
                eligible[row] = False
            winners[freed] = -1
            if not freed.any() or not eligible.any():
                return winners
            regrant = self.scheduler.assign(rates_bps, avg, handles, eligible)
            winners[freed] = regrant[freed]

    def _drain(self, user: User, delivered_bits: float) -> list[SlotDelivery]:
        """Take delivered bits off the head of the queue; items fully sent (and empty ones behind) are delivered."""
        deliveries = []
        user.queued_bits = max(user.queued_bits - delivered_bits, 0.0)
        budget = delivered_bits
        while user.queue:
            head = user.queue[0]
            sent = min(head.remaining_bits, budget)
            head.remaining_bits -= sent
            budget -= sent
            if head.remaining_bits > BITS_EPSILON:
                break
            user.queue.popleft()
            deliveries.append(SlotDelivery(head.key, user.user_id, self.slot))
        if not user.queue:
            user.queued_bits = 0.0
        return deliveries
