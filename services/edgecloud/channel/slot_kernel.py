"""The slot loop compiled: eq. (2) rates, per-cell proportional-fair grants and FIFO queues for many slots per call.

The cell (``cell.py``) runs slot after slot in Python, which costs about 0.3 ms a slot with 20 users:
real time is 0.5 ms. This module runs the same slots in one numba-compiled call, so a batch of slots
costs what its arithmetic costs. It is an exact transcription of the Python path's rules, which stay
in ``cell.py`` for the schedulers and channels it does not cover (round robin, the constant channel,
test channels) and as the baseline of ``benchmarks/slot_loop.py``; ``tests/test_channel_slot_kernel.py``
checks that both give the same grants, bits and deliveries.

Per slot t and attached user k, served by site j = serving[k] (eq. 2):

    SINR_{k,q} = P_{k,j} F_{k,j,q}(t) / (sum_{j' != j} a_{j',q} P_{k,j'} F_{k,j',q}(t) + N)
    r_{k,q}    = b log2(1 + SINR_{k,q} / Gamma), at most b x the peak spectral efficiency

P is the received power per RB before fast fading, F the fading power |h|^2 read from the trace
(``radio/fading.py``), a the interferer's activity on RB q: a Bernoulli draw, or, for a scheduling
site under ``interference_activity: scheduled``, whether it granted RB q in the previous slot.
Each scheduling site gives RB q to the eligible user of highest priority among its own users:
r_{k,q} / R_k for PF (paper Sec. II-C), r_{k,q} for max-C/I. A user granted more than its queue keeps
its best RBs and hands the rest back; they are granted again among the others (``Cell._grant``).
Delivered bits leave the head of the user's FIFO of items; the slot that carries an item's last bit
is recorded for it (``Cell._drain``).

Cells whose interference does not depend on each other's grants (Bernoulli activity) run their slots
independently, one cell per thread (numba's ``prange``; ``NUMBA_NUM_THREADS`` sets how many). Under
``scheduled`` interference every cell needs its neighbours' previous slot, so they run together.

Numerics: SINR and log2 in single precision (float32 resolves 6e-8, far below any effect on a rate);
log2 by exponent and mantissa in a loop the compiler vectorises (``_log2_in_place``), which np.log2,
a scalar call per element in compiled code, is not.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

POLICY_PF = 0  # argmax r / R, ProportionalFair
POLICY_MAXCI = 1  # argmax r, MaxCarrierToInterference
# Bits below this count as nothing left; the same constant as ``cell.BITS_EPSILON``.
BITS_EPSILON = 1e-6
# Floor of the PF average throughput; the same as ``schedulers.MIN_AVERAGE_THROUGHPUT_BPS``.
MIN_AVERAGE_THROUGHPUT_BPS = 1e-3
NO_WINNER = -1
NOT_DELIVERED = -1
ARRIVED_EMPTY = -2  # an empty item that arrived behind nothing: delivered when it arrived, no slot carried it
# Slots of rates computed at once, link by link (see _rates): 16 ms; ours, past where longer blocks stopped helping.
RATE_BLOCK_SLOTS = 32
# Below this many user-slots a batch runs on one thread: starting the threads costs more (ours, measured).
THREADED_WORK = 256


@dataclass
class SlotLinks:
    """The radio model's link state for a set of users, as arrays the kernel reads (``RadioModel.links``).

    Rows of the model's arrays are addressed through ``rows``; nothing is copied.
    """

    rows: NDArray[np.int64]  # the model row of each user, in the caller's order
    rx_power_w: NDArray[np.float64]  # (model rows, sites): P per RB before fast fading
    serving: NDArray[np.int64]  # (model rows,): serving site
    fading_start: NDArray[np.int64]  # (model rows, sites): the trace slot each link started on
    fading_shift: NDArray[np.int64]  # (model rows, sites): its cyclic RB shift
    trace: NDArray[np.float32]  # (trace slots, RBs): |h|^2, see fading.power_trace
    fading_slot: int  # the slot index of the current slot (the traces' clock)
    fading_block_slots: int
    fading_moves: bool  # False for a static channel: links keep their start row
    activity: NDArray[np.float32]  # (activity slots, sites, RBs): Bernoulli interferer activity, read cyclically
    scheduling: NDArray[np.bool_]  # (sites,): which sites schedule users
    scheduled_rbs: NDArray[np.float32]  # (sites, RBs): RBs each scheduling site granted last slot (updated)
    use_scheduled: bool  # interference_activity == "scheduled"
    noise_w: float
    inverse_gap: float  # 1 / Gamma
    rb_bandwidth_hz: float
    rate_cap_bps: float  # np.inf when uncapped
    slot_duration_s: float


@dataclass
class QueueState:
    """The cell's per-user state a batch reads and updates, in the cell's row order.

    Each user's queued items are ``item_bits[item_head[k]:item_end[k]]``, head first; the kernel takes
    delivered bits off them and writes the delivering slot of every item it completes into
    ``delivered_slot`` (``NOT_DELIVERED`` otherwise), advancing ``item_head``.

    Items that arrive during the batch follow their user's queued ones in ``item_bits``, in arrival order:
    arrival a queues item ``arrival_item[a]`` of user ``arrival_user[a]`` just before the batch's slot
    ``arrival_slot[a]`` (sorted by slot; ``Cell.enqueue``'s rules: an empty item behind nothing is delivered
    at once, ``ARRIVED_EMPTY``), so one call runs what would be a call per arrival slot.
    """

    cell_of: NDArray[np.int64]  # each user's cell (0 .. cells - 1)
    need_bits: NDArray[np.float64]  # bits queued
    item_bits: NDArray[np.float64]
    item_head: NDArray[np.int64]
    item_end: NDArray[np.int64]
    delivered_slot: NDArray[np.int64]
    average_bps: NDArray[np.float64]  # PF's R_k
    delivered_bits: NDArray[np.float64]  # cumulative
    granted_bits: NDArray[np.float64]
    granted_rbs: NDArray[np.int64]
    backlogged_slots: NDArray[np.int64]
    active_slot: NDArray[np.int64]  # out: the last slot index in which each user had bits delivered or queued
    statistics: NDArray[np.float64]  # [cell throughput bps, RB utilisation], exponentially averaged
    arrival_slot: NDArray[np.int64]  # batch slot (0 = first) before which each arrival is queued, non-decreasing
    arrival_user: NDArray[np.int64]
    arrival_item: NDArray[np.int64]


def slot_rates(links: SlotLinks, *, sinr: bool = False) -> NDArray[np.float64]:
    """Eq. (2) per RB for the users of ``links`` in the current slot, bit/s, shape (users, RBs); or their SINR."""
    rates = np.empty((1, len(links.rows), links.trace.shape[1]))
    _rates(
        rates,
        links.rows,
        np.arange(len(links.rows)),
        links.fading_slot,
        1,
        links.fading_block_slots,
        links.fading_moves,
        links.rx_power_w,
        links.serving,
        links.fading_start,
        links.fading_shift,
        links.trace,
        links.activity,
        links.scheduling,
        links.scheduled_rbs,
        links.use_scheduled,
        links.noise_w,
        links.inverse_gap,
        links.rb_bandwidth_hz,
        links.rate_cap_bps,
        sinr,
        _rates_scratch(1, links.activity.shape[1], rates.shape[2]),
    )
    return rates[0]


def run_slots(
    links: SlotLinks,
    queues: QueueState,
    max_slots: int,
    first_slot: int,
    policy: int,
    pf_forget: float,
    stats_forget: float,
    num_cells: int,
) -> int:
    """Run up to ``max_slots`` slots, until nobody has bits waiting or arriving; return the slots run.

    ``first_slot`` is the cell's index of the first slot (for ``active_slot`` and ``delivered_slot``); every
    arrival's slot lies below ``max_slots``.
    """
    threaded = num_cells > 1 and len(queues.need_bits) * max_slots >= THREADED_WORK
    kernel = _run_slots_threaded if threaded else _run_slots_serial
    return kernel(*_slot_arguments(links, queues, max_slots, first_slot, policy, pf_forget, stats_forget, num_cells))


def _slot_arguments(
    links: SlotLinks,
    queues: QueueState,
    max_slots: int,
    first_slot: int,
    policy: int,
    pf_forget: float,
    stats_forget: float,
    num_cells: int,
) -> tuple[object, ...]:
    return (
        max_slots,
        first_slot,
        links.fading_slot,
        links.fading_block_slots,
        links.fading_moves,
        links.rows,
        links.rx_power_w,
        links.serving,
        links.fading_start,
        links.fading_shift,
        links.trace,
        links.activity,
        links.scheduling,
        links.scheduled_rbs,
        links.use_scheduled,
        links.noise_w,
        links.inverse_gap,
        links.rb_bandwidth_hz,
        links.rate_cap_bps,
        links.slot_duration_s,
        queues.cell_of,
        queues.need_bits,
        queues.item_bits,
        queues.item_head,
        queues.item_end,
        queues.delivered_slot,
        queues.average_bps,
        queues.delivered_bits,
        queues.granted_bits,
        queues.granted_rbs,
        queues.backlogged_slots,
        queues.active_slot,
        queues.statistics,
        queues.arrival_slot,
        queues.arrival_user,
        queues.arrival_item,
        policy,
        pf_forget,
        stats_forget,
        num_cells,
    )


def compile_ahead() -> None:
    """Compile (or load from numba's cache) every kernel function for the types the cell passes.

    A first compilation takes about 40 s on the development machine: the channel service does it at
    start-up, before it serves, and ``scripts/test`` before the tests; later starts load the cache (~1 s).
    """
    sites, rbs = 2, 2
    links = SlotLinks(
        rows=np.zeros(1, dtype=np.int64),
        rx_power_w=np.ones((1, sites)),
        serving=np.zeros(1, dtype=np.int64),
        fading_start=np.zeros((1, sites), dtype=np.int64),
        fading_shift=np.zeros((1, sites), dtype=np.int64),
        trace=np.ones((1, rbs), dtype=np.float32),
        fading_slot=0,
        fading_block_slots=1,
        fading_moves=False,
        activity=np.ones((1, sites, rbs), dtype=np.float32),
        scheduling=np.ones(sites, dtype=np.bool_),
        scheduled_rbs=np.ones((sites, rbs), dtype=np.float32),
        use_scheduled=False,
        noise_w=1.0,
        inverse_gap=1.0,
        rb_bandwidth_hz=1.0,
        rate_cap_bps=np.inf,
        slot_duration_s=1.0,
    )
    queues = QueueState(
        cell_of=np.zeros(1, dtype=np.int64),
        need_bits=np.ones(1),
        item_bits=np.ones(1),
        item_head=np.zeros(1, dtype=np.int64),
        item_end=np.ones(1, dtype=np.int64),
        delivered_slot=np.full(1, NOT_DELIVERED),
        average_bps=np.zeros(1),
        delivered_bits=np.zeros(1),
        granted_bits=np.zeros(1),
        granted_rbs=np.zeros(1, dtype=np.int64),
        backlogged_slots=np.zeros(1, dtype=np.int64),
        active_slot=np.full(1, -1),
        statistics=np.zeros(2),
        arrival_slot=np.zeros(0, dtype=np.int64),
        arrival_user=np.zeros(0, dtype=np.int64),
        arrival_item=np.zeros(0, dtype=np.int64),
    )
    slot_rates(links)
    slot_rates(links, sinr=True)
    for kernel in (_run_slots_serial, _run_slots_threaded):
        kernel(*_slot_arguments(links, queues, 1, 0, POLICY_PF, 0.01, 0.01, 1))


@numba.njit(cache=True)
def _trace_slot(slot: int, block: int, moves: bool) -> int:  # pragma: no cover
    """The fading trace's slot for ``slot``: held over blocks of ``block`` slots; 0 for a static channel."""
    if not moves:
        return 0
    return slot - slot % block


# ---- rates --------------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _rates(  # pragma: no cover (compiled; covered through slot_rates and run_slots)
    out: NDArray[np.float64],
    users: NDArray[np.int64],
    members: NDArray[np.int64],
    first_slot: int,
    num_slots: int,
    fading_block: int,
    fading_moves: bool,
    rx: NDArray[np.float64],
    serving: NDArray[np.int64],
    start: NDArray[np.int64],
    shift: NDArray[np.int64],
    trace: NDArray[np.float32],
    activity: NDArray[np.float32],
    scheduling: NDArray[np.bool_],
    scheduled_rbs: NDArray[np.float32],
    use_scheduled: bool,
    noise_w: float,
    inverse_gap: float,
    bandwidth: float,
    cap: float,
    as_sinr: bool,
    scratch: tuple[
        NDArray[np.float32], NDArray[np.float32], NDArray[np.uint32], NDArray[np.float32], NDArray[np.float32]
    ],
) -> None:
    """Rates (or SINRs) of the users ``members`` (indices into ``users``) in ``num_slots`` slots from ``first_slot``,
    into ``out[slot, user]``.

    Link by link, a block of slots reads consecutive rows of the fading trace: one stream the CPU prefetches,
    where slot by slot every link's row would be a separate cache miss. A link's RB q reads trace column
    (q + shift) mod RBs: two contiguous runs, each a loop the compiler vectorises. Under scheduled interference the
    activity of a scheduling site is its last grants, so the caller asks for one slot at a time.
    ``scratch`` is ``_rates_scratch``'s, for blocks of up to its number of slots.
    """
    trace_slots, num_sites, num_rbs = trace.shape[0], activity.shape[1], activity.shape[2]
    interference, ratio, mantissa, exponent, on = scratch
    ratio_bits, mantissa_value = ratio.view(np.uint32), mantissa.view(np.float32)
    lines = np.empty(num_slots, dtype=np.int64)
    for b in range(num_slots):
        slot = first_slot + b
        lines[b] = _trace_slot(slot, fading_block, fading_moves) % trace_slots
        now = activity[slot % activity.shape[0]]
        for site in range(num_sites):
            scheduled = use_scheduled and scheduling[site]
            for q in range(num_rbs):
                on[b, site, q] = scheduled_rbs[site, q] if scheduled else now[site, q]
    gap = np.float32(inverse_gap)
    size = num_slots * num_rbs
    for k in members:
        row = users[k]
        own = serving[row]
        # Powers relative to the serving link's, so single precision holds them whatever the path loss.
        noise = np.float32(noise_w / rx[row, own])
        interference[:num_slots, :] = noise
        for site in range(num_sites):
            if site == own:
                continue
            relative = np.float32(rx[row, site] / rx[row, own])
            split = num_rbs - shift[row, site]  # RB q reads trace column (q + shift) mod RBs: two runs of columns
            for b in range(num_slots):
                fading = trace[_line(start[row, site], lines[b], trace_slots)]
                total, active = interference[b], on[b, site]
                head, tail = fading[num_rbs - split :], fading[: num_rbs - split]
                for q in range(split):
                    total[q] += active[q] * relative * head[q]
                total, active = total[split:], active[split:]
                for q in range(num_rbs - split):
                    total[q] += active[q] * relative * tail[q]
        split = num_rbs - shift[row, own]
        for b in range(num_slots):
            fading = trace[_line(start[row, own], lines[b], trace_slots)]
            total, out_ratio = interference[b], ratio[b * num_rbs : (b + 1) * num_rbs]
            head, tail = fading[num_rbs - split :], fading[: num_rbs - split]
            for q in range(split):
                out_ratio[q] = head[q] / total[q]
            total, out_ratio = total[split:], out_ratio[split:]
            for q in range(num_rbs - split):
                out_ratio[q] = tail[q] / total[q]
        if as_sinr:
            for b in range(num_slots):
                for q in range(num_rbs):
                    out[b, k, q] = ratio[b * num_rbs + q]
            continue
        for i in range(size):
            ratio[i] = np.float32(1.0) + ratio[i] * gap
        _log2_in_place(ratio[:size], ratio_bits[:size], mantissa[:size], mantissa_value[:size], exponent[:size])
        for b in range(num_slots):
            for q in range(num_rbs):
                out[b, k, q] = min(bandwidth * ratio[b * num_rbs + q], cap)


@numba.njit(cache=True)
def _rates_scratch(  # pragma: no cover
    num_slots: int, num_sites: int, num_rbs: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.uint32], NDArray[np.float32], NDArray[np.float32]]:
    """Interference (slots x RBs); ratio, mantissa and exponent (slots x RBs, flat); each site's activity."""
    return (
        np.empty((num_slots, num_rbs), dtype=np.float32),
        np.empty(num_slots * num_rbs, dtype=np.float32),
        np.empty(num_slots * num_rbs, dtype=np.uint32),
        np.empty(num_slots * num_rbs, dtype=np.float32),
        np.empty((num_slots, num_sites, num_rbs), dtype=np.float32),
    )


@numba.njit(cache=True, inline="always")
def _line(start: int, trace_slot: int, trace_slots: int) -> int:  # pragma: no cover
    """The trace row a link reads: its start slot plus the trace's clock, wrapped (no modulo: both are below it)."""
    line = start + trace_slot
    return line - trace_slots if line >= trace_slots else line


# log2 by exponent and mantissa, in single precision: x = 2^e m, m in [sqrt(1/2), sqrt(2)),
# log2 m = (2 / ln 2) atanh(t), t = (m - 1) / (m + 1), atanh by its series t + t^3/3 + ... + t^9/9 (|t| <= 0.172:
# the next term is 1e-9 of the sum, below float32's resolution). tests/test_channel_slot_kernel.py checks it.
_MANTISSA_BITS = np.uint32(0x007FFFFF)
_EXPONENT_OF_ONE = np.uint32(0x3F800000)
_EXPONENT_SHIFT = np.uint32(23)
_EXPONENT_BIAS = np.int32(127)
_SQRT2 = np.float32(np.sqrt(2.0))
_TWO_OVER_LN2 = np.float32(2.0 / np.log(2.0))
_ATANH_SERIES = tuple(np.float32(1.0 / n) for n in (9, 7, 5, 3, 1))
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


def log2(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """The kernel's log2 of each x > 0 (finite), for tests."""
    out = x.astype(np.float32)
    mantissa = np.empty(out.size, dtype=np.uint32)
    _log2_in_place(out, out.view(np.uint32), mantissa, mantissa.view(np.float32), np.empty(out.size, np.float32))
    return out


@numba.njit(cache=True, fastmath=True, error_model="numpy", inline="always")
def _log2_in_place(  # pragma: no cover
    x: NDArray[np.float32],
    x_bits: NDArray[np.uint32],
    mantissa: NDArray[np.uint32],
    mantissa_value: NDArray[np.float32],
    exponent: NDArray[np.float32],
) -> None:
    """log2 of x in place; ``x_bits`` is x viewed as integers, ``mantissa_value`` the scratch ``mantissa`` as floats."""
    for i in range(x.shape[0]):
        exponent[i] = np.float32(np.int32(x_bits[i] >> _EXPONENT_SHIFT) - _EXPONENT_BIAS)
        mantissa[i] = (x_bits[i] & _MANTISSA_BITS) | _EXPONENT_OF_ONE
    c9, c7, c5, c3, c1 = _ATANH_SERIES
    for i in range(x.shape[0]):
        big = mantissa_value[i] > _SQRT2
        value = mantissa_value[i] * _HALF if big else mantissa_value[i]
        t = (value - _ONE) / (value + _ONE)
        t2 = t * t
        series = ((((c9 * t2 + c7) * t2 + c5) * t2 + c3) * t2 + c1) * t
        x[i] = (exponent[i] + _ONE if big else exponent[i]) + _TWO_OVER_LN2 * series


# ---- grants -------------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _assign(  # pragma: no cover
    winners: NDArray[np.int64],
    best: NDArray[np.float64],
    rates: NDArray[np.float64],
    scale: NDArray[np.float64],
    cell_of: NDArray[np.int64],
    eligible: NDArray[np.int64],
) -> None:
    """Per cell and RB, the eligible user of highest priority rate x scale (first in row order on ties, as
    np.argmax); ``eligible`` lists user rows in increasing order."""
    for k in eligible:
        cell, factor = cell_of[k], scale[k]
        for q in range(rates.shape[1]):
            priority = rates[k, q] * factor
            higher = priority > best[cell, q]
            best[cell, q] = priority if higher else best[cell, q]
            winners[cell, q] = k if higher else winners[cell, q]


@numba.njit(cache=True, error_model="numpy")
def _grant(  # pragma: no cover
    winners: NDArray[np.int64],
    granted: NDArray[np.float64],
    rates: NDArray[np.float64],
    scale: NDArray[np.float64],
    slot_s: float,
    need: NDArray[np.float64],
    cell_of: NDArray[np.int64],
    cells: NDArray[np.int64],
    backlogged: NDArray[np.int64],
    best: NDArray[np.float64],
    eligible_buffer: NDArray[np.int64],
    freed: NDArray[np.bool_],
    own: NDArray[np.int64],
) -> None:
    """``Cell._grant`` for the ``cells`` at once: users granted more than their queue keep only their best RBs.

    Priorities are rate x scale; bits are rate x slot, summed in RB order (as np.bincount). ``best``
    (cells x RBs), ``eligible_buffer`` (users), ``freed`` (cells x RBs, all False) and ``own`` (RBs) are scratch.
    """
    num_rbs = rates.shape[1]
    for cell in cells:
        winners[cell, :] = NO_WINNER
        best[cell, :] = -np.inf
    eligible = eligible_buffer[: backlogged.shape[0]]
    eligible[:] = backlogged
    _assign(winners, best, rates, scale, cell_of, eligible)
    while True:
        _granted_bits(granted, winners, rates, slot_s, cells, backlogged)
        still_eligible = 0
        any_surplus = any_freed = False
        for k in eligible:
            if not granted[k] > need[k] + BITS_EPSILON:
                eligible[still_eligible] = k
                still_eligible += 1
                continue
            any_surplus = True
            cell = cell_of[k]
            count = 0
            for q in range(num_rbs):
                if winners[cell, q] == k:
                    own[count] = q
                    count += 1
            for i in range(1, count):  # best first, ties in RB order (a stable sort on -bits)
                q = own[i]
                j = i
                while j > 0 and rates[k, own[j - 1]] * slot_s < rates[k, q] * slot_s:
                    own[j] = own[j - 1]
                    j -= 1
                own[j] = q
            total = 0.0
            kept = count
            for i in range(count):
                total += rates[k, own[i]] * slot_s
                if total >= need[k] - BITS_EPSILON:
                    kept = i + 1
                    break
            for i in range(kept, count):
                freed[cell, own[i]] = True
                winners[cell, own[i]] = NO_WINNER
                any_freed = True
        eligible = eligible[:still_eligible]
        if not any_surplus:
            return
        if not any_freed or still_eligible == 0:
            freed[:, :] = False
            _granted_bits(granted, winners, rates, slot_s, cells, backlogged)
            return
        for cell in cells:  # the freed RBs to the best still-eligible user of their cell; no one outbids the rest
            for q in range(num_rbs):
                best[cell, q] = -np.inf if freed[cell, q] else np.inf
        _assign(winners, best, rates, scale, cell_of, eligible)
        freed[:, :] = False


@numba.njit(cache=True, error_model="numpy")
def _granted_bits(  # pragma: no cover
    bits: NDArray[np.float64],
    winners: NDArray[np.int64],
    rates: NDArray[np.float64],
    slot_s: float,
    cells: NDArray[np.int64],
    users: NDArray[np.int64],
) -> None:
    for k in users:
        bits[k] = 0.0
    for cell in cells:
        for q in range(winners.shape[1]):
            k = winners[cell, q]
            if k >= 0:
                bits[k] += rates[k, q] * slot_s


# ---- the slot loop ------------------------------------------------------------------------------------------


def _slots(  # pragma: no cover
    num_slots: int,
    first_slot: int,
    fading_slot: int,
    fading_block: int,
    fading_moves: bool,
    users: NDArray[np.int64],
    rx: NDArray[np.float64],
    serving: NDArray[np.int64],
    start: NDArray[np.int64],
    shift: NDArray[np.int64],
    trace: NDArray[np.float32],
    activity: NDArray[np.float32],
    scheduling: NDArray[np.bool_],
    scheduled_rbs: NDArray[np.float32],
    use_scheduled: bool,
    noise_w: float,
    inverse_gap: float,
    bandwidth: float,
    cap: float,
    slot_s: float,
    cell_of: NDArray[np.int64],
    need: NDArray[np.float64],
    item_bits: NDArray[np.float64],
    item_head: NDArray[np.int64],
    item_end: NDArray[np.int64],
    delivered_slot: NDArray[np.int64],
    average: NDArray[np.float64],
    delivered_total: NDArray[np.float64],
    granted_total: NDArray[np.float64],
    granted_rbs: NDArray[np.int64],
    backlogged_slots: NDArray[np.int64],
    active_slot: NDArray[np.int64],
    statistics: NDArray[np.float64],
    arrival_slot: NDArray[np.int64],
    arrival_user: NDArray[np.int64],
    arrival_item: NDArray[np.int64],
    policy: int,
    pf_forget: float,
    stats_forget: float,
    num_cells: int,
) -> int:
    coupled = use_scheduled and num_cells > 1  # cells see each other's grants: one slot loop for all
    groups = 1 if coupled else num_cells
    slot_bits = np.zeros((num_cells, num_slots))  # bits each cell delivered per slot
    slot_rbs = np.zeros((num_cells, num_slots))  # RBs each cell granted per slot
    busy = np.zeros(groups, dtype=np.int64)  # slots until each group had nobody waiting
    for group in numba.prange(groups):
        members = np.flatnonzero(cell_of >= 0) if coupled else np.flatnonzero(cell_of == group)
        cells = np.arange(num_cells) if coupled else np.full(1, group, dtype=np.int64)
        busy[group] = _run_cells(
            members,
            cells,
            num_slots,
            first_slot,
            fading_slot,
            fading_block,
            fading_moves,
            users,
            rx,
            serving,
            start,
            shift,
            trace,
            activity,
            scheduling,
            scheduled_rbs,
            use_scheduled,
            noise_w,
            inverse_gap,
            bandwidth,
            cap,
            slot_s,
            cell_of,
            need,
            item_bits,
            item_head,
            item_end,
            delivered_slot,
            average,
            delivered_total,
            granted_total,
            granted_rbs,
            backlogged_slots,
            active_slot,
            arrival_slot,
            arrival_user,
            arrival_item,
            slot_bits,
            slot_rbs,
            policy,
            pf_forget,
            num_cells,
        )
    return _finish(
        busy,
        cell_of,
        scheduling,
        scheduled_rbs,
        average,
        pf_forget,
        slot_bits,
        slot_rbs,
        statistics,
        stats_forget,
        slot_s,
    )


def _compiled_twice(function: Callable[..., int]) -> tuple[Callable[..., int], Callable[..., int]]:
    """``function`` compiled with its ``prange`` run by threads, and as a plain loop (under its own name, so
    numba's cache keeps the two apart): starting the threads costs more than a short batch."""
    serial = types.FunctionType(function.__code__, function.__globals__, f"{function.__name__}_serial")
    serial.__qualname__ = serial.__name__
    threaded = numba.njit(cache=True, error_model="numpy", parallel=True)(function)
    return threaded, numba.njit(cache=True, error_model="numpy")(serial)


_run_slots_threaded, _run_slots_serial = _compiled_twice(_slots)


@numba.njit(cache=True, error_model="numpy")
def _finish(  # pragma: no cover
    busy: NDArray[np.int64],
    cell_of: NDArray[np.int64],
    scheduling: NDArray[np.bool_],
    scheduled_rbs: NDArray[np.float32],
    average: NDArray[np.float64],
    pf_forget: float,
    slot_bits: NDArray[np.float64],
    slot_rbs: NDArray[np.float64],
    statistics: NDArray[np.float64],
    stats_forget: float,
    slot_s: float,
) -> int:
    """After the groups: the batch lasted as long as the busiest; the cell statistics over its slots.

    Kept out of the parallel function: numba would turn each array expression there into a parallel region.
    """
    ran = 0
    for group in range(busy.shape[0]):
        ran = max(ran, busy[group])
    # A group idle before the others still lived through their slots: its users' PF averages decay per slot,
    # as in the Python loop, and its sites granted nothing.
    for group in range(busy.shape[0]):
        if busy[group] < ran:
            for k in range(cell_of.shape[0]):
                if cell_of[k] == group:
                    for _ in range(busy[group], ran):
                        average[k] += pf_forget * (0.0 - average[k])
            if scheduling[group]:
                scheduled_rbs[group, :] = 0.0
    num_cells, num_rbs = slot_bits.shape[0], scheduled_rbs.shape[1]
    for i in range(ran):
        bits = rbs = 0.0
        for cell in range(num_cells):
            bits += slot_bits[cell, i]
            rbs += slot_rbs[cell, i]
        statistics[0] += stats_forget * (bits / slot_s - statistics[0])
        statistics[1] += stats_forget * (rbs / (num_cells * num_rbs) - statistics[1])
    return ran


@numba.njit(cache=True, error_model="numpy")
def _run_cells(  # pragma: no cover
    members: NDArray[np.int64],
    cells: NDArray[np.int64],
    num_slots: int,
    first_slot: int,
    fading_slot: int,
    fading_block: int,
    fading_moves: bool,
    users: NDArray[np.int64],
    rx: NDArray[np.float64],
    serving: NDArray[np.int64],
    start: NDArray[np.int64],
    shift: NDArray[np.int64],
    trace: NDArray[np.float32],
    activity: NDArray[np.float32],
    scheduling: NDArray[np.bool_],
    scheduled_rbs: NDArray[np.float32],
    use_scheduled: bool,
    noise_w: float,
    inverse_gap: float,
    bandwidth: float,
    cap: float,
    slot_s: float,
    cell_of: NDArray[np.int64],
    need: NDArray[np.float64],
    item_bits: NDArray[np.float64],
    item_head: NDArray[np.int64],
    item_end: NDArray[np.int64],
    delivered_slot: NDArray[np.int64],
    average: NDArray[np.float64],
    delivered_total: NDArray[np.float64],
    granted_total: NDArray[np.float64],
    granted_rbs: NDArray[np.int64],
    backlogged_slots: NDArray[np.int64],
    active_slot: NDArray[np.int64],
    arrival_slot: NDArray[np.int64],
    arrival_user: NDArray[np.int64],
    arrival_item: NDArray[np.int64],
    slot_bits: NDArray[np.float64],
    slot_rbs: NDArray[np.float64],
    policy: int,
    pf_forget: float,
    num_cells: int,
) -> int:
    """The slots of the users ``members``, served by the ``cells``; returns the slots until none had bits waiting
    and none of theirs was still to arrive."""
    num_users = users.shape[0]
    num_rbs = trace.shape[1]
    block = 1 if use_scheduled and num_cells > 1 else min(RATE_BLOCK_SLOTS, num_slots)
    rates = np.empty((block, num_users, num_rbs))
    block_start = block_end = 0
    scale = np.ones(num_users)
    granted = np.zeros(num_users)
    winners = np.full((num_cells, num_rbs), NO_WINNER)
    backlogged = np.empty(members.shape[0], dtype=np.int64)
    scratch = _rates_scratch(block, activity.shape[1], num_rbs)
    best = np.empty((num_cells, num_rbs))
    eligible = np.empty(members.shape[0], dtype=np.int64)
    freed = np.zeros((num_cells, num_rbs), dtype=np.bool_)
    own = np.empty(num_rbs, dtype=np.int64)
    member = np.zeros(num_users, dtype=np.bool_)
    member[members] = True
    last_arrival = -1  # the batch slot of the members' last arrival
    for a in range(arrival_slot.shape[0]):
        if member[arrival_user[a]]:
            last_arrival = arrival_slot[a]
    arriving = np.zeros(num_users, dtype=np.bool_)
    rated = np.empty(members.shape[0], dtype=np.int64)
    next_arrival = 0
    for i in range(num_slots):
        while next_arrival < arrival_slot.shape[0] and arrival_slot[next_arrival] <= i:
            k = arrival_user[next_arrival]
            if member[k]:
                _arrive(k, arrival_item[next_arrival], need, item_bits, item_head, item_end, delivered_slot)
                active_slot[k] = first_slot + i
            next_arrival += 1
        waiting = 0
        for k in members:
            if need[k] > BITS_EPSILON:
                backlogged[waiting] = k
                waiting += 1
        if waiting == 0:
            if i >= last_arrival:  # and nothing of theirs still to arrive
                return i
            for k in members:  # nobody waits until the next arrival: the slot passes with no grant
                average[k] += pf_forget * (0.0 - average[k])
            for cell in cells:
                if scheduling[cell]:
                    scheduled_rbs[cell, :] = 0.0
            continue
        now = backlogged[:waiting]
        if i >= block_end:  # the next block of rates: for who waits now or arrives within the block
            block_start, block_end = i, min(i + block, num_slots)
            for a in range(next_arrival, arrival_slot.shape[0]):
                if arrival_slot[a] >= block_end:
                    break
                arriving[arrival_user[a]] = True
            count = 0
            for k in members:
                if need[k] > BITS_EPSILON or arriving[k]:
                    rated[count] = k
                    count += 1
                    arriving[k] = False
            _rates(
                rates,
                users,
                rated[:count],
                fading_slot + i,
                block_end - block_start,
                fading_block,
                fading_moves,
                rx,
                serving,
                start,
                shift,
                trace,
                activity,
                scheduling,
                scheduled_rbs,
                use_scheduled,
                noise_w,
                inverse_gap,
                bandwidth,
                cap,
                False,
                scratch,
            )
        rates_now = rates[i - block_start]
        for k in now:
            scale[k] = 1.0 if policy == POLICY_MAXCI else 1.0 / max(average[k], MIN_AVERAGE_THROUGHPUT_BPS)
        _grant(winners, granted, rates_now, scale, slot_s, need, cell_of, cells, now, best, eligible, freed, own)

        for k in members:
            average[k] += pf_forget * (0.0 - average[k]) if need[k] <= BITS_EPSILON else 0.0
        for k in now:
            delivered = min(granted[k], need[k])
            average[k] += pf_forget * (delivered / slot_s - average[k])
            backlogged_slots[k] += 1
            granted_total[k] += granted[k]
            delivered_total[k] += delivered
            slot_bits[cell_of[k], i] += delivered
            if delivered > 0.0:
                active_slot[k] = first_slot + i
                _drain(k, delivered, first_slot + i, need, item_bits, item_head, item_end, delivered_slot)
        for cell in cells:
            for q in range(num_rbs):
                k = winners[cell, q]
                if k >= 0:
                    granted_rbs[k] += 1
                    slot_rbs[cell, i] += 1.0
        for cell in cells:
            if scheduling[cell]:
                for q in range(num_rbs):
                    scheduled_rbs[cell, q] = 1.0 if winners[cell, q] >= 0 else 0.0
    return num_slots


@numba.njit(cache=True, error_model="numpy")
def _arrive(  # pragma: no cover
    k: int,
    item: int,
    need: NDArray[np.float64],
    item_bits: NDArray[np.float64],
    item_head: NDArray[np.int64],
    item_end: NDArray[np.int64],
    delivered_slot: NDArray[np.int64],
) -> None:
    """``Cell.enqueue``: the item joins the user's queue; an empty one behind nothing is delivered as it arrives."""
    if item_bits[item] <= BITS_EPSILON and item_head[k] == item_end[k]:
        delivered_slot[item] = ARRIVED_EMPTY
        item_head[k] = item + 1
        item_end[k] = item + 1
        return
    need[k] += item_bits[item]
    item_end[k] = item + 1


@numba.njit(cache=True, error_model="numpy")
def _drain(  # pragma: no cover
    k: int,
    delivered: float,
    slot: int,
    need: NDArray[np.float64],
    item_bits: NDArray[np.float64],
    item_head: NDArray[np.int64],
    item_end: NDArray[np.int64],
    delivered_slot: NDArray[np.int64],
) -> None:
    """``Cell._drain``: delivered bits off the head of the queue; items fully sent (and empty ones behind) done."""
    need[k] = max(need[k] - delivered, 0.0)
    budget = delivered
    head = item_head[k]
    while head < item_end[k]:
        sent = min(item_bits[head], budget)
        item_bits[head] -= sent
        budget -= sent
        if item_bits[head] > BITS_EPSILON:
            break
        delivered_slot[head] = slot
        head += 1
    item_head[k] = head
    if head == item_end[k]:
        need[k] = 0.0
