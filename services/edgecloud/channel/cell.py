"""The serving cells, slot by slot: users' downlink queues, RB grants, delivered bytes.

Each slot each cell's scheduler grants every resource block to one of its users with bits waiting
(one cell, or every site of the layout with its own scheduler and PF averages; the channel says which
site serves whom); a user whose
grant exceeds its queue keeps its best RBs and hands the rest back for the others. Bits a grant
could carry beyond the queue are lost, never banked for later slots. Delivered bits leave the
head of the user's FIFO queue; each queued item (an SSE chunk, a whole body) is delivered at the
end of the slot that carries its last bit. Time is counted in slots here; ``air.py`` maps it to
seconds. No clock, no HTTP: the live pacer and the virtual-time experiments both drive this class.

Slots run in two ways with the same rules. With a channel that exposes its links (the 3GPP model) and a
priority scheduler (PF, max-C/I), ``slot_kernel`` runs them compiled, many per call; otherwise (round
robin, the constant channel, test channels) ``_run_slot`` runs one slot in Python. ``compiled=False``
forces the Python path: the baseline the benchmark and the equivalence tests run beside the kernel.

The proportional-fair average follows the usual exponential filter (paper Sec. II-C):
R_k(t+1) = (1 - 1/W) R_k(t) + (1/W) r_k(t), r_k the rate user k was served in slot t.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from edgecloud.channel import slot_kernel
from edgecloud.channel.radio.base import ChannelModel, CompiledChannel
from edgecloud.channel.schedulers import Scheduler

# Bits below this count as nothing left (float sums of RB rates are not exact).
BITS_EPSILON = slot_kernel.BITS_EPSILON
# Longest batch of compiled slots (128 ms): bounds the kernel's per-slot records, not the schedule.
MAX_BATCH_SLOTS = 256
# Items a user's queue ring holds before the rings grow (they double): a few SSE chunks. Ours.
INITIAL_QUEUE_CAPACITY = 8


@dataclass
class QueuedItem:
    """What the caller knows an item by; its bits wait in the cell's queue arrays."""

    key: Hashable  # returned in the delivery, so the caller knows what arrived
    flow: int  # the response it belongs to; a cancelled flow's items leave the queue


@dataclass(frozen=True)
class SlotDelivery:
    key: Hashable
    user_id: str
    slot: int  # delivered at the end of this slot, or at its start when ``immediate``
    immediate: bool = False
    arrival: int | None = None  # for an empty item delivered as it arrived: its index in ``run_until``'s arrivals


@dataclass(frozen=True)
class Arrival:
    """Bits for a user that join its queue just before slot ``slot`` runs (``Cell.enqueue`` then)."""

    slot: int
    user_id: str
    bits: float
    key: Hashable
    flow: int


@dataclass
class User:
    user_id: str
    handle: int  # the channel model's handle
    queue: deque[QueuedItem] = field(default_factory=deque)  # head first, as the bits in the cell's ring


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
    """Users' queues and counters live in arrays by row (a user's row is its place in ``_order``), so the
    compiled loop reads and updates them for all users at once. A user's queued items are a ring of bits,
    ``_item_bits[row, (_item_head[row] + i) % capacity]`` for ``i < _item_count[row]``, head first, in the
    order of ``User.queue``'s keys."""

    def __init__(
        self,
        channel: ChannelModel,
        scheduler: Scheduler,
        pf_window_slots: float,
        stats_window_slots: float,
        *,
        compiled: bool = True,
    ):
        if pf_window_slots < 1 or stats_window_slots < 1:
            raise ValueError("averaging windows must be at least one slot")
        self.channel = channel
        self.scheduler = scheduler  # cell 0's; every other scheduling cell gets its own of the same kind
        self._schedulers = [scheduler] + [type(scheduler)() for _ in range(channel.num_cells - 1)]
        self._kernel_policy = scheduler.kernel_policy
        self.compiled = compiled and isinstance(channel, CompiledChannel) and self._kernel_policy is not None
        self.slot = 0  # index of the next slot to run
        self.users: dict[str, User] = {}
        self._order: list[User] = []  # row order of the arrays below
        self._row: dict[str, int] = {}  # user id -> row
        self._handles = np.zeros(0, dtype=np.int64)
        self._queued_bits = np.zeros(0)  # bits waiting per row
        self._last_active = np.zeros(0, dtype=np.int64)  # the last slot a row queued or had bits delivered
        self._item_bits = np.zeros((0, INITIAL_QUEUE_CAPACITY))
        self._item_head = np.zeros(0, dtype=np.int64)
        self._item_count = np.zeros(0, dtype=np.int64)
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
        user = User(user_id, self.channel.add_ue(position))
        self.users[user_id] = user
        self._row[user_id] = len(self._order)
        self._order.append(user)
        self._handles = np.append(self._handles, user.handle)
        self._queued_bits = np.append(self._queued_bits, 0.0)
        self._last_active = np.append(self._last_active, self.slot)
        self._item_bits = np.vstack([self._item_bits, np.zeros((1, self._item_bits.shape[1]))])
        self._item_head = np.append(self._item_head, 0)
        self._item_count = np.append(self._item_count, 0)
        self._average_bps = np.append(self._average_bps, 0.0)
        self._delivered_bits = np.append(self._delivered_bits, 0.0)
        self._granted_bits = np.append(self._granted_bits, 0.0)
        self._granted_rbs = np.append(self._granted_rbs, 0)
        self._backlogged_slots = np.append(self._backlogged_slots, 0)
        return user

    def detach(self, user_id: str) -> None:
        user = self.users.pop(user_id)
        row = self._row[user_id]
        del self._order[row]
        self._row = {other.user_id: index for index, other in enumerate(self._order)}
        self._handles = np.delete(self._handles, row)
        self._queued_bits = np.delete(self._queued_bits, row)
        self._last_active = np.delete(self._last_active, row)
        self._item_bits = np.delete(self._item_bits, row, axis=0)
        self._item_head = np.delete(self._item_head, row)
        self._item_count = np.delete(self._item_count, row)
        self._average_bps = np.delete(self._average_bps, row)
        self._delivered_bits = np.delete(self._delivered_bits, row)
        self._granted_bits = np.delete(self._granted_bits, row)
        self._granted_rbs = np.delete(self._granted_rbs, row)
        self._backlogged_slots = np.delete(self._backlogged_slots, row)
        self.channel.remove_ue(user.handle)

    def traffic(self, user_id: str) -> UserTraffic:
        row = self._row[user_id]
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

    def queued_bits(self, user_id: str) -> float:
        return float(self._queued_bits[self._row[user_id]])

    def last_active_slot(self, user_id: str) -> int:
        """The last slot in which the user queued bits or had bits delivered (its attach slot if never)."""
        return int(self._last_active[self._row[user_id]])

    # --- queues ------------------------------------------------------------------------------

    def enqueue(
        self, user_id: str, bits: float, key: Hashable, flow: int, arrival: int | None = None
    ) -> SlotDelivery | None:
        """Queue ``bits`` for the user from the next slot on; an empty item behind nothing is delivered now."""
        row = self._row[user_id]
        self._last_active[row] = self.slot
        if bits <= BITS_EPSILON and not self._item_count[row]:
            return SlotDelivery(key, user_id, self.slot, immediate=True, arrival=arrival)
        bits = max(bits, 0.0)
        self._reserve(int(self._item_count[row]) + 1)
        self._item_bits[row, self._tail(row)] = bits
        self._item_count[row] += 1
        self._queued_bits[row] += bits
        self._order[row].queue.append(QueuedItem(key, flow))
        return None

    def cancel(self, user_id: str, flow: int) -> list[SlotDelivery]:
        """Drop a flow's queued items at once (its client left); empty items left at the head are delivered."""
        user = self.users.get(user_id)
        if user is None:
            return []
        row = self._row[user_id]
        kept = [index for index, item in enumerate(user.queue) if item.flow != flow]
        bits = self._item_bits[row, self._positions(row)[kept]]
        user.queue = deque(user.queue[index] for index in kept)
        self._item_bits[row, : len(kept)] = bits
        self._item_head[row], self._item_count[row] = 0, len(kept)
        self._queued_bits[row] = float(bits.sum())
        released = self._drain(row, 0.0)
        return [SlotDelivery(delivery.key, user_id, self.slot, immediate=True) for delivery in released]

    @property
    def backlogged(self) -> bool:
        return bool((self._queued_bits > BITS_EPSILON).any())

    @property
    def backlogged_users(self) -> int:
        return int(np.count_nonzero(self._queued_bits > BITS_EPSILON))

    def _waiting_rows(self) -> np.ndarray:
        return np.flatnonzero(self._queued_bits > BITS_EPSILON)

    def _positions(self, row: int) -> np.ndarray:
        """Ring positions of the row's queued items, head first."""
        return (self._item_head[row] + np.arange(self._item_count[row])) % self._item_bits.shape[1]

    def _tail(self, row: int) -> int:
        return int((self._item_head[row] + self._item_count[row]) % self._item_bits.shape[1])

    def _reserve(self, items: int) -> None:
        """Room for ``items`` queued items in every ring: a full ring doubles, its items laid out from 0."""
        capacity = self._item_bits.shape[1]
        if items <= capacity:
            return
        grown = max(2 * capacity, items)
        laid_out = np.zeros((len(self._order), grown))
        columns = (self._item_head[:, None] + np.arange(capacity)) % capacity
        laid_out[:, :capacity] = np.take_along_axis(self._item_bits, columns, axis=1)
        self._item_bits = laid_out
        self._item_head[:] = 0

    def _drain(self, row: int, delivered_bits: float) -> list[SlotDelivery]:
        """Take delivered bits off the head of the queue; items fully sent (and empty ones behind) are delivered."""
        user = self._order[row]
        ring, capacity = self._item_bits[row], self._item_bits.shape[1]
        deliveries = []
        self._queued_bits[row] = max(float(self._queued_bits[row]) - delivered_bits, 0.0)
        budget = delivered_bits
        head, count = int(self._item_head[row]), int(self._item_count[row])
        while count:
            sent = min(float(ring[head]), budget)
            ring[head] -= sent
            budget -= sent
            if ring[head] > BITS_EPSILON:
                break
            head, count = (head + 1) % capacity, count - 1
            deliveries.append(SlotDelivery(user.queue.popleft().key, user.user_id, self.slot))
        self._item_head[row], self._item_count[row] = head, count
        if not count:
            self._queued_bits[row] = 0.0
        return deliveries

    # --- time --------------------------------------------------------------------------------

    def run_until(self, slot: int, arrivals: Sequence[Arrival] = ()) -> list[SlotDelivery]:
        """Run every slot before ``slot``, each arrival queued just before its slot (those due by now at once,
        those due at ``slot`` last); slots with nobody waiting are skipped in one step.

        ``arrivals`` are in slot order. The compiled path runs the arrivals of a batch inside it, so a call
        costs one batch whatever the number of slots at which something arrives.
        """
        deliveries: list[SlotDelivery] = []
        taken = 0  # arrivals queued so far
        while True:
            while taken < len(arrivals) and arrivals[taken].slot <= self.slot:
                arrival = arrivals[taken]
                delivered = self.enqueue(arrival.user_id, arrival.bits, arrival.key, arrival.flow, taken)
                deliveries.extend([delivered] if delivered is not None else [])
                taken += 1
            if self.slot >= slot:
                return deliveries
            if self.backlogged:
                taken = self._run_batch(slot, arrivals, taken, deliveries)
            else:
                upcoming = arrivals[taken].slot if taken < len(arrivals) else slot
                self._idle(min(upcoming, slot) - self.slot)

    def run_until_idle(self, max_slots: int) -> list[SlotDelivery]:
        """Run slots until every queue is empty (at most ``max_slots``)."""
        deliveries: list[SlotDelivery] = []
        limit = self.slot + max_slots
        while self.backlogged and self.slot < limit:
            self._run_batch(limit, (), 0, deliveries)
        return deliveries

    def _run_batch(self, until: int, arrivals: Sequence[Arrival], taken: int, deliveries: list[SlotDelivery]) -> int:
        """At least one slot before ``until``: a compiled batch, with the arrivals from ``taken`` on that are due
        within it queued inside, or one slot in Python. Its deliveries join ``deliveries``; returns the arrivals
        taken so far."""
        if not self.compiled:
            deliveries.extend(self._run_slot())
            return taken
        # No batch runs past the radio's next large-scale update (a mobility step).
        end = self.slot + min(
            until - self.slot, MAX_BATCH_SLOTS, cast(CompiledChannel, self.channel).slots_until_update()
        )
        inside = taken
        while inside < len(arrivals) and arrivals[inside].slot < end:
            inside += 1
        deliveries.extend(self._run_slots(end - self.slot, arrivals, taken, inside))
        return inside

    def _run_slots(self, n_slots: int, arrivals: Sequence[Arrival], first: int, end: int) -> list[SlotDelivery]:
        """At most ``n_slots`` compiled slots, ``arrivals[first:end]`` (all due within them) queued inside.

        Only the users with bits waiting or arriving go to the kernel, their queues gathered from the rings
        and put back with numpy; the others' PF averages decay here by the batch's slots at once, as ``_idle``
        decays them. Python touches a user only for the items it had delivered.
        """
        channel = cast(CompiledChannel, self.channel)
        arriving = arrivals[first:end]
        arrival_rows = np.array([self._row[arrival.user_id] for arrival in arriving], dtype=np.int64)
        rows = np.union1d(self._waiting_rows(), arrival_rows)
        index_of = np.empty(len(self._order), dtype=np.int64)
        index_of[rows] = np.arange(len(rows))
        arrival_user = index_of[arrival_rows]
        # Each user's items in the kernel's flat layout: its queued items, then its arrivals in arrival order.
        queued = self._item_count[rows]
        arrived = np.bincount(arrival_user, minlength=len(rows))
        lengths = queued + arrived
        item_head = np.cumsum(lengths) - lengths
        capacity = self._item_bits.shape[1]
        offsets = np.arange(int(lengths.sum())) - np.repeat(item_head, lengths)
        row_of_item = np.repeat(rows, lengths)
        item_bits = self._item_bits[row_of_item, (self._item_head[row_of_item] + offsets) % capacity]
        arrival_item = item_head[arrival_user] + queued[arrival_user] + _rank_within(arrival_user, len(rows))
        item_bits[arrival_item] = [max(arrival.bits, 0.0) for arrival in arriving]
        for arrival in arriving:  # their keys behind the user's, in arrival order: the kernel counts each from its slot
            self.users[arrival.user_id].queue.append(QueuedItem(arrival.key, arrival.flow))
        handles = self._handles[rows]
        queues = slot_kernel.QueueState(
            cell_of=channel.serving_cells(handles) if channel.num_cells > 1 else np.zeros(len(rows), dtype=np.int64),
            need_bits=self._queued_bits[rows],
            item_bits=item_bits,
            item_head=item_head.copy(),
            item_end=item_head + queued,
            delivered_slot=np.full(len(item_bits), slot_kernel.NOT_DELIVERED),
            average_bps=self._average_bps[rows],
            delivered_bits=self._delivered_bits[rows],
            granted_bits=self._granted_bits[rows],
            granted_rbs=self._granted_rbs[rows],
            backlogged_slots=self._backlogged_slots[rows],
            active_slot=np.full(len(rows), -1),
            statistics=np.array([self.cell_throughput_bps, self.rb_utilisation]),
            arrival_slot=np.array([arrival.slot - self.slot for arrival in arriving], dtype=np.int64),
            arrival_user=arrival_user,
            arrival_item=arrival_item,
        )
        ran = slot_kernel.run_slots(
            channel.links(handles),
            queues,
            n_slots,
            self.slot,
            cast(int, self._kernel_policy),
            self._pf_forget,
            self._stats_forget,
            channel.num_cells,
        )
        # In closed form: a numpy call per slot cost more than the kernel's slots of one cell (0.3 ms a batch).
        self._average_bps *= (1.0 - self._pf_forget) ** ran
        self._average_bps[rows] = queues.average_bps
        self._delivered_bits[rows] = queues.delivered_bits
        self._granted_bits[rows] = queues.granted_bits
        self._granted_rbs[rows] = queues.granted_rbs
        self._backlogged_slots[rows] = queues.backlogged_slots
        self._queued_bits[rows] = queues.need_bits
        self.cell_throughput_bps, self.rb_utilisation = (float(value) for value in queues.statistics)
        active = queues.active_slot >= 0
        self._last_active[rows[active]] = queues.active_slot[active]
        # The rings again: what is left of each user's items, from its new head, laid out from 0.
        left = queues.item_end - queues.item_head
        self._reserve(int(left.max(initial=0)))
        offsets = np.arange(int(left.sum())) - np.repeat(np.cumsum(left) - left, left)
        self._item_bits[np.repeat(rows, left), offsets] = item_bits[np.repeat(queues.item_head, left) + offsets]
        self._item_head[rows] = 0
        self._item_count[rows] = left
        completed = self._completed(rows, queues, item_head, arrival_item, arrivals, first)
        self.slot += ran
        channel.advance(ran)
        return completed

    def _completed(
        self,
        rows: np.ndarray,
        queues: slot_kernel.QueueState,
        first_items: np.ndarray,
        arrival_item: np.ndarray,
        arrivals: Sequence[Arrival],
        first: int,
    ) -> list[SlotDelivery]:
        """The batch's deliveries in the order the Python loop hands them out: by slot; at a slot, the empty items
        that arrived at its start (in arrival order) before the items it carried (by row, then queue order)."""
        arrival_of_item = dict(zip(arrival_item.tolist(), range(first, first + len(arrival_item)), strict=True))
        completed: list[tuple[int, int, int, int, SlotDelivery]] = []
        for index in np.flatnonzero(queues.item_head != first_items).tolist():
            user = self._order[int(rows[index])]
            for item in range(int(first_items[index]), int(queues.item_head[index])):
                done = user.queue.popleft()
                slot = int(queues.delivered_slot[item])
                if slot == slot_kernel.ARRIVED_EMPTY:
                    number = arrival_of_item[item]
                    slot = arrivals[number].slot
                    completed.append((slot, 0, number, 0, SlotDelivery(done.key, user.user_id, slot, True, number)))
                else:
                    completed.append((slot, 1, index, item, SlotDelivery(done.key, user.user_id, slot)))
        completed.sort(key=lambda entry: entry[:4])
        return [entry[4] for entry in completed]

    def _idle(self, n_slots: int) -> None:
        """Slots with nobody waiting: PF averages and statistics decay, and no site grants anything."""
        self.channel.record_grants(np.zeros((len(self._schedulers), self.channel.num_rbs), dtype=bool))
        self.channel.advance(n_slots)
        self._average_bps *= (1.0 - self._pf_forget) ** n_slots
        decay = (1.0 - self._stats_forget) ** n_slots
        self.cell_throughput_bps *= decay
        self.rb_utilisation *= decay
        self.slot += n_slots

    def _run_slot(self) -> list[SlotDelivery]:
        rows = self._waiting_rows()
        handles = self._handles[rows]
        rates_bps = self.channel.rates_bps(handles)
        rb_bits = rates_bps * self.channel.slot_duration_s
        need_bits = self._queued_bits[rows]
        granted_bits = np.zeros(len(rows))
        granted_rbs = np.zeros(len(rows), dtype=np.int64)
        cell_grants = np.zeros((len(self._schedulers), self.channel.num_rbs), dtype=bool)
        for cell, scheduler, mine in self._cells_of(handles):
            winners = self._grant(
                scheduler, rates_bps[mine], rb_bits[mine], need_bits[mine], handles[mine], self._average_bps[rows[mine]]
            )
            scheduler.served(handles[mine], winners)
            granted_bits[mine] = self._bits_per_user(winners, rb_bits[mine])
            granted_rbs[mine] = np.bincount(winners[winners >= 0], minlength=len(handles[mine]))
            cell_grants[cell] = winners >= 0
        self.channel.record_grants(cell_grants)
        delivered_bits = np.minimum(granted_bits, need_bits)
        slot_s = self.channel.slot_duration_s
        served_bps = np.zeros_like(self._average_bps)
        served_bps[rows] = delivered_bits / slot_s
        self._average_bps += self._pf_forget * (served_bps - self._average_bps)
        self.cell_throughput_bps += self._stats_forget * (delivered_bits.sum() / slot_s - self.cell_throughput_bps)
        self.rb_utilisation += self._stats_forget * (
            np.count_nonzero(cell_grants) / cell_grants.size - self.rb_utilisation
        )
        self._backlogged_slots[rows] += 1
        self._granted_bits[rows] += granted_bits
        self._granted_rbs[rows] += granted_rbs
        self._delivered_bits[rows] += delivered_bits

        deliveries: list[SlotDelivery] = []
        for index in np.flatnonzero(delivered_bits):
            self._last_active[rows[index]] = self.slot
            deliveries.extend(self._drain(int(rows[index]), float(delivered_bits[index])))
        self.channel.advance(1)
        self.slot += 1
        return deliveries

    def _cells_of(self, handles: np.ndarray) -> list[tuple[int, Scheduler, slice | np.ndarray]]:
        """Each cell with users among ``handles``: its index, its scheduler and its users' positions."""
        if len(self._schedulers) == 1:
            return [(0, self.scheduler, slice(None))]
        serving = self.channel.serving_cells(handles)
        return [
            (cell, scheduler, mine)
            for cell, scheduler in enumerate(self._schedulers)
            if (mine := np.flatnonzero(serving == cell)).size
        ]

    def _bits_per_user(self, winners: np.ndarray, rb_bits: np.ndarray) -> np.ndarray:
        granted = winners >= 0
        return np.bincount(
            winners[granted], weights=rb_bits[winners[granted], self._rb_index[granted]], minlength=rb_bits.shape[0]
        )

    def _grant(
        self,
        scheduler: Scheduler,
        rates_bps: np.ndarray,
        rb_bits: np.ndarray,
        need_bits: np.ndarray,
        handles: np.ndarray,
        avg: np.ndarray,
    ) -> np.ndarray:
        """RB winners for this slot: users whose grant exceeds their queue keep only what they need."""
        eligible = np.ones(len(need_bits), dtype=bool)
        winners = scheduler.assign(rates_bps, avg, handles, eligible)
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
            regrant = scheduler.assign(rates_bps, avg, handles, eligible)
            winners[freed] = regrant[freed]


def _rank_within(groups: np.ndarray, num_groups: int) -> np.ndarray:
    """For each entry, how many entries of its group come before it (0, 1, 2, ... within each group)."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=num_groups)
    starts = np.cumsum(counts) - counts
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = np.arange(len(groups)) - np.repeat(starts, counts)
    return ranks
