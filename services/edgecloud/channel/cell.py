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
        self._waiting: set[str] = set()  # users with bits queued (kept as queues change: the slot loop asks often)
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
        self._row[user_id] = len(self._order)
        self._order.append(user)
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
        self._waiting.discard(user_id)
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

    # --- queues ------------------------------------------------------------------------------

    def enqueue(
        self, user_id: str, bits: float, key: Hashable, flow: int, arrival: int | None = None
    ) -> SlotDelivery | None:
        """Queue ``bits`` for the user from the next slot on; an empty item behind nothing is delivered now."""
        user = self.users[user_id]
        user.last_active_slot = self.slot
        if bits <= BITS_EPSILON and not user.queue:
            return SlotDelivery(key, user_id, self.slot, immediate=True, arrival=arrival)
        user.queue.append(QueuedItem(key, flow, max(bits, 0.0)))
        user.queued_bits += max(bits, 0.0)
        self._note_waiting(user)
        return None

    def cancel(self, user_id: str, flow: int) -> list[SlotDelivery]:
        """Drop a flow's queued items at once (its client left); empty items left at the head are delivered."""
        user = self.users.get(user_id)
        if user is None:
            return []
        user.queue = deque(item for item in user.queue if item.flow != flow)
        user.queued_bits = sum(item.remaining_bits for item in user.queue)
        released = self._drain(user, 0.0)
        self._note_waiting(user)
        return [SlotDelivery(delivery.key, user_id, self.slot, immediate=True) for delivery in released]

    @property
    def backlogged(self) -> bool:
        return bool(self._waiting)

    def _note_waiting(self, user: User) -> None:
        if user.backlogged:
            self._waiting.add(user.user_id)
        else:
            self._waiting.discard(user.user_id)

    def _waiting_rows(self) -> np.ndarray:
        return np.array(sorted(self._row[user_id] for user_id in self._waiting), dtype=np.int64)

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
            if not self.backlogged:
                upcoming = arrivals[taken].slot if taken < len(arrivals) else slot
                self._idle(min(upcoming, slot) - self.slot)
            elif self.compiled:
                end = self.slot + self._batch_slots(slot - self.slot)
                inside = taken
                while inside < len(arrivals) and arrivals[inside].slot < end:
                    inside += 1
                deliveries.extend(self._run_slots(end - self.slot, arrivals, taken, inside))
                taken = inside
            else:
                deliveries.extend(self._run_slot())

    def run_until_idle(self, max_slots: int) -> list[SlotDelivery]:
        """Run slots until every queue is empty (at most ``max_slots``)."""
        deliveries: list[SlotDelivery] = []
        limit = self.slot + max_slots
        while self.backlogged and self.slot < limit:
            if self.compiled:
                deliveries.extend(self._run_slots(self._batch_slots(limit - self.slot), (), 0, 0))
            else:
                deliveries.extend(self._run_slot())
        return deliveries

    def _run_slots(self, n_slots: int, arrivals: Sequence[Arrival], first: int, end: int) -> list[SlotDelivery]:
        """At most ``n_slots`` compiled slots, ``arrivals[first:end]`` (all due within them) queued inside.

        Only the users with bits waiting or arriving go to the kernel; the others' PF averages decay slot by
        slot here, as the Python loop decays them.
        """
        channel = cast(CompiledChannel, self.channel)
        arriving = arrivals[first:end]
        waiting_or_arriving = {self._row[user_id] for user_id in self._waiting}
        waiting_or_arriving.update(self._row[arrival.user_id] for arrival in arriving)
        rows = np.array(sorted(waiting_or_arriving), dtype=np.int64)
        users = [self._order[row] for row in rows]
        handles = [user.handle for user in users]
        index_of = {user.user_id: index for index, user in enumerate(users)}
        queued = np.array([len(user.queue) for user in users], dtype=np.int64)
        arrival_user = np.array([index_of[arrival.user_id] for arrival in arriving], dtype=np.int64)
        for arrival in arriving:  # behind the user's queue, in arrival order; the kernel counts each from its slot
            self.users[arrival.user_id].queue.append(QueuedItem(arrival.key, arrival.flow, max(arrival.bits, 0.0)))
        lengths = np.array([len(user.queue) for user in users], dtype=np.int64)
        item_head = np.cumsum(lengths) - lengths
        arrival_item = item_head[arrival_user] + queued[arrival_user] + _rank_within(arrival_user, len(users))
        queues = slot_kernel.QueueState(
            cell_of=channel.serving_cells(handles) if channel.num_cells > 1 else np.zeros(len(users), dtype=np.int64),
            need_bits=np.array([user.queued_bits for user in users]),
            item_bits=np.array([item.remaining_bits for user in users for item in user.queue], dtype=np.float64),
            item_head=item_head,
            item_end=item_head + queued,
            delivered_slot=np.full(int(lengths.sum()), slot_kernel.NOT_DELIVERED),
            average_bps=self._average_bps[rows],
            delivered_bits=self._delivered_bits[rows],
            granted_bits=self._granted_bits[rows],
            granted_rbs=self._granted_rbs[rows],
            backlogged_slots=self._backlogged_slots[rows],
            active_slot=np.full(len(users), -1),
            statistics=np.array([self.cell_throughput_bps, self.rb_utilisation]),
            arrival_slot=np.array([arrival.slot - self.slot for arrival in arriving], dtype=np.int64),
            arrival_user=arrival_user,
            arrival_item=arrival_item,
        )
        first_items = item_head.copy()
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
        idle = np.ones(len(self._order), dtype=bool)
        idle[rows] = False
        waiting_none = self._average_bps[idle]
        for _ in range(ran):
            waiting_none += self._pf_forget * (0.0 - waiting_none)
        self._average_bps[idle] = waiting_none
        self._average_bps[rows] = queues.average_bps
        self._delivered_bits[rows] = queues.delivered_bits
        self._granted_bits[rows] = queues.granted_bits
        self._granted_rbs[rows] = queues.granted_rbs
        self._backlogged_slots[rows] = queues.backlogged_slots
        self.cell_throughput_bps, self.rb_utilisation = (float(value) for value in queues.statistics)
        arrival_of_item = dict(zip(arrival_item.tolist(), range(first, end), strict=True))
        # In the order the Python loop hands them out: by slot; at a slot, the empty items that arrived at its
        # start (in arrival order) before the items it carried (by row, then queue order).
        completed: list[tuple[int, int, int, int, SlotDelivery]] = []
        for index, user in enumerate(users):
            user.queued_bits = float(queues.need_bits[index])
            for item in range(first_items[index], queues.item_head[index]):
                done = user.queue.popleft()
                slot = int(queues.delivered_slot[item])
                if slot == slot_kernel.ARRIVED_EMPTY:
                    number = arrival_of_item[item]
                    slot = arrivals[number].slot
                    delivery = SlotDelivery(done.key, user.user_id, slot, immediate=True, arrival=number)
                    completed.append((slot, 0, number, 0, delivery))
                else:
                    completed.append((slot, 1, index, item, SlotDelivery(done.key, user.user_id, slot)))
            if user.queue:
                user.queue[0].remaining_bits = float(queues.item_bits[queues.item_head[index]])
            else:
                user.queued_bits = 0.0
            if queues.active_slot[index] >= 0:
                user.last_active_slot = int(queues.active_slot[index])
            self._note_waiting(user)
        self.slot += ran
        channel.advance(ran)
        completed.sort(key=lambda entry: entry[:4])
        return [entry[4] for entry in completed]

    def _batch_slots(self, wanted: int) -> int:
        """Slots the next compiled batch may run: at most ``wanted``, ``MAX_BATCH_SLOTS``, and none past the radio's
        next large-scale update."""
        return min(wanted, MAX_BATCH_SLOTS, cast(CompiledChannel, self.channel).slots_until_update())

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
        users = [self._order[row] for row in rows]
        handles = np.array([user.handle for user in users])
        rates_bps = self.channel.rates_bps(handles)
        rb_bits = rates_bps * self.channel.slot_duration_s
        need_bits = np.array([user.queued_bits for user in users])
        granted_bits = np.zeros(len(users))
        granted_rbs = np.zeros(len(users), dtype=np.int64)
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
            user = users[index]
            user.last_active_slot = self.slot
            deliveries.extend(self._drain(user, float(delivered_bits[index])))
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
        self._note_waiting(user)
        return deliveries


def _rank_within(groups: np.ndarray, num_groups: int) -> np.ndarray:
    """For each entry, how many entries of its group come before it (0, 1, 2, ... within each group)."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=num_groups)
    starts = np.cumsum(counts) - counts
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = np.arange(len(groups)) - np.repeat(starts, counts)
    return ranks
