"""The 3GPP TR 38.901 downlink radio model: per-RB, per-slot rates of the paper's eq. (2).

For user k served by site j (the centre site, or with ``scheduling_cells`` > 1 the strongest scheduling
site) and RB q in the current slot:

    SINR_{k,q} = p_q G_{j,k} |h_{j,k,q}|^2 / (sum_{j' != j} a_{j',q} p_q G_{j',k} |h_{j',k,q}|^2 + b_q N0)
    rate_{k,q} = b_q log2(1 + SINR_{k,q} / Gamma), optionally capped at b_q x max spectral efficiency

G is the large-scale gain 10^(-(PL + SF) / 10) of path loss (Table 7.4.1-1, in the link's LOS state
drawn from Table 7.4.2-1) and log-normal shadowing; |h|^2 is Rayleigh fading read from the fading trace
(``fading.py``); a_{j',q} in {0, 1} is whether interfering site j' uses RB q this slot (eq. 2's z_{j',q}):
Bernoulli(activity_factor), or for a scheduling site what it granted (``interference_activity``).
The scheduler applies the serving side's z_{j,q,k} by choosing which user gets RB q.

The rates are computed by ``slot_kernel`` (compiled), the same code whether the cell asks for one
slot (``rates_bps``) or runs a batch of slots (``links``). All per-user state lives in preallocated
arrays (rows, grown by doubling) behind a handle -> row index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edgecloud.channel import slot_kernel
from edgecloud.channel.radio import fading, layout, pathloss
from edgecloud.channel.radio.base import UeRadioState
from edgecloud.channel.radio.params import DB_PER_DECADE, RadioParams
from edgecloud.channel.slot_kernel import SlotLinks

INITIAL_CAPACITY = 64  # rows preallocated; doubled when full
# Slots of Bernoulli interferer activity drawn at the start and read cyclically, so the activity of a slot depends
# on its index only (not on how the slots are batched). 4,096 slots (2 s) is ours: a pattern repeating every 2 s
# across 6 x 51 independent (site, RB) draws is no pattern a PF average (100 slots) can learn.
ACTIVITY_TRACE_SLOTS = 4096
DBM_PER_DBW = 30.0
NO_ROW = -1
MAX_DROP_ATTEMPTS = 1000  # redraws of a random drop until the serving site is its strongest

Handles = Sequence[int] | np.ndarray  # user handles, as a list or an integer array

# Per-user arrays: name -> (shape after the row axis, dtype). Rows [0, count) are the attached users.
_PER_UE_ARRAYS: dict[str, tuple[tuple[int, ...], type]] = {
    "_handle_of_row": ((), np.int64),
    "_serving": ((), np.int64),  # the serving site
    "_position": ((2,), np.float64),
    "_waypoint": ((2,), np.float64),
    "_los_anchor": ((2,), np.float64),  # where the LOS states were last drawn
    "_sf_anchor": ((layout.NUM_SITES, 2), np.float64),  # where each link's shadowing was last drawn
    "_los": ((layout.NUM_SITES,), np.bool_),
    "_shadowing_db": ((layout.NUM_SITES,), np.float64),
    "_path_loss_db": ((layout.NUM_SITES,), np.float64),
    "_rx_power_w": ((layout.NUM_SITES,), np.float64),  # p_q x G per RB, before fast fading
    "_fading_start": ((layout.NUM_SITES,), np.int64),  # each link's start slot in the fading trace
    "_fading_shift": ((layout.NUM_SITES,), np.int64),  # and its cyclic RB shift
}


def dbm_to_w(dbm: float) -> float:
    return float(10 ** ((dbm - DBM_PER_DBW) / DB_PER_DECADE))


def db_to_linear(db: float) -> float:
    return float(10 ** (db / DB_PER_DECADE))


class RadioModel:
    """A 7-site UMa/UMi layout whose centre site, or first n sites, serve users (implements ``base.ChannelModel``)."""

    # Per-user rows, allocated from _PER_UE_ARRAYS in __init__.
    _handle_of_row: NDArray[np.int64]
    _serving: NDArray[np.int64]
    _position: NDArray[np.float64]
    _waypoint: NDArray[np.float64]
    _los_anchor: NDArray[np.float64]
    _sf_anchor: NDArray[np.float64]
    _los: NDArray[np.bool_]
    _shadowing_db: NDArray[np.float64]
    _path_loss_db: NDArray[np.float64]
    _rx_power_w: NDArray[np.float64]
    _fading_start: NDArray[np.int64]
    _fading_shift: NDArray[np.int64]

    def __init__(self, params: RadioParams, rng: np.random.Generator) -> None:
        self.params = params
        self.num_rbs = params.num_rbs
        self.rb_bandwidth_hz = params.rb_bandwidth_hz
        self.slot_duration_s = params.slot_duration_s
        self._rng = rng
        self._rb_power_w = dbm_to_w(params.rb_power_dbm)
        self._noise_w = dbm_to_w(params.noise_per_rb_dbm)
        self._gap = db_to_linear(params.snr_gap_db)
        cap = params.max_spectral_efficiency_bps_hz
        self._rate_cap_bps = None if cap is None else cap * self.rb_bandwidth_hz
        self._count = 0
        self._next_handle = 0
        self._capacity = INITIAL_CAPACITY
        self._row_of_handle = np.full(INITIAL_CAPACITY, NO_ROW, dtype=np.int64)
        for name, (shape, dtype) in _PER_UE_ARRAYS.items():
            setattr(self, name, np.zeros((INITIAL_CAPACITY, *shape), dtype=dtype))
        # The traces come from their own streams, so drops, LOS states and shadowing are the same with or
        # without fading or partial activity (the same seed, the same users).
        fading_rng, activity_rng = rng.spawn(2)
        if params.fast_fading:
            self._trace, self._fading_moves = fading.power_trace(
                fading_rng, params.doppler_hz, self.slot_duration_s, params.fading_trace_slots, self.num_rbs
            )
        else:
            self._trace, self._fading_moves = np.ones((1, self.num_rbs), dtype=np.float32), False
        self._slot = 0  # slots advanced since the start: the fading trace's clock
        self._multi_cell = params.scheduling_cells > 1
        self._scheduling = np.zeros(layout.NUM_SITES, dtype=bool)
        self._scheduling[: params.scheduling_cells] = True
        # What each scheduling site granted last slot (its interference under interference_activity: scheduled).
        self._scheduled_rbs = np.ones((layout.NUM_SITES, self.num_rbs), dtype=np.float32)
        self._activity = self._activity_trace(activity_rng)
        self._pending_mobility_s = 0.0

    # ---- attach, move, detach -------------------------------------------------------------------------------

    @property
    def num_ues(self) -> int:
        return self._count

    def add_ue(self, position: tuple[float, float] | None = None) -> int:
        """Attach a user at ``position`` (metres from the serving site) or a uniform drop in the cell."""
        params = self.params
        point = self._drop() if position is None else self._checked_position(position)
        if self._count == self._capacity:
            self._grow_rows()
        if self._next_handle == len(self._row_of_handle):
            grown = np.full(2 * len(self._row_of_handle), NO_ROW, dtype=np.int64)
            grown[: self._next_handle] = self._row_of_handle
            self._row_of_handle = grown
        row, handle = self._count, self._next_handle
        self._count += 1
        self._next_handle += 1
        self._row_of_handle[handle] = row
        self._handle_of_row[row] = handle
        self._position[row] = point
        self._serving[row] = layout.SERVING_SITE
        self._waypoint[row] = layout.drop_uniform(self._rng, 1, params.isd_m, params.min_distance_m)[0]
        rows = np.array([row])
        self._update_large_scale(rows, redraw_all=True)
        for _ in range(MAX_DROP_ATTEMPTS):
            if self._multi_cell or position is not None or np.argmax(self._rx_power_w[row]) == layout.SERVING_SITE:
                break
            # A random drop belongs to the serving cell only if that cell is its strongest site (max received
            # power association, as in 3GPP system-level evaluations); otherwise it would be handed over.
            self._position[row] = self._drop()
            self._update_large_scale(rows, redraw_all=True)
        if self._multi_cell:
            self._serving[row] = self._strongest_scheduling_site(row)
        self._fading_start[row] = self._rng.integers(len(self._trace), size=layout.NUM_SITES)
        self._fading_shift[row] = self._rng.integers(self.num_rbs, size=layout.NUM_SITES)
        return handle

    def place_ue(self, handle: int, position: tuple[float, float]) -> None:
        """Move a user; its path loss is recomputed, LOS and shadowing redrawn past their decorrelation distance."""
        row = self._row(handle)
        self._position[row] = self._checked_position(position)
        self._update_large_scale(np.array([row]), redraw_all=False)
        if self._multi_cell:
            self._serving[row] = self._strongest_scheduling_site(row)

    def remove_ue(self, handle: int) -> None:
        """Detach a user; the last row moves into its place so rows stay contiguous. Handles are never reused."""
        row = self._row(handle)
        last = self._count - 1
        if row != last:
            for name in _PER_UE_ARRAYS:
                array = getattr(self, name)
                array[row] = array[last]
            self._row_of_handle[self._handle_of_row[row]] = row
        self._row_of_handle[handle] = NO_ROW
        self._count -= 1

    # ---- time ----------------------------------------------------------------------------------------------

    def advance(self, n_slots: int) -> None:
        """Let ``n_slots`` slots pass: the clock of the fading and activity traces and, if on, mobility move on."""
        if isinstance(n_slots, bool) or not isinstance(n_slots, int | np.integer) or n_slots < 0:
            raise ValueError(f"n_slots must be an integer >= 0, got {n_slots!r}")
        if n_slots == 0:
            return
        self._slot += int(n_slots)
        if self.params.mobility and self._count:
            self._pending_mobility_s += n_slots * self.slot_duration_s
            if self._pending_mobility_s >= self.params.mobility_update_s:
                self._move(self._pending_mobility_s)
                self._pending_mobility_s = 0.0

    # ---- per-slot queries ----------------------------------------------------------------------------------

    def rates_bps(self, handles: Handles) -> NDArray[np.float64]:
        """Eq. (2) per RB for each user this slot, bit/s, shape (len(handles), num_rbs)."""
        return slot_kernel.slot_rates(self.links(handles))

    def sinr_db(self, handles: Handles) -> NDArray[np.float64]:
        """Instantaneous SINR per RB this slot, dB, shape (len(handles), num_rbs)."""
        return DB_PER_DECADE * np.log10(slot_kernel.slot_rates(self.links(handles), sinr=True))

    def mean_sinr_db(self, handles: Handles) -> NDArray[np.float64]:
        """Wideband SINR from large-scale gains only; interferers weighted by the activity factor, dB."""
        rows = self._rows(handles)
        rx = self._rx_power_w[rows]
        signal = rx[np.arange(len(rows)), self._serving[rows]]
        interference = self.params.activity_factor * (rx.sum(axis=1) - signal)
        return np.asarray(DB_PER_DECADE * np.log10(signal / (interference + self._noise_w)), dtype=np.float64)

    def serving_cells(self, handles: Handles) -> NDArray[np.int64]:
        """The serving site of each user (0, the centre site, for all in the one-cell layout)."""
        return self._serving[self._rows(handles)]

    @property
    def num_cells(self) -> int:
        """Sites that schedule users, the first ``scheduling_cells`` of the layout."""
        return self.params.scheduling_cells

    def links(self, handles: Handles) -> SlotLinks:
        """The users' link state for the slot kernel, from the current slot on (arrays shared, not copied)."""
        params = self.params
        return SlotLinks(
            rows=self._rows(handles),
            rx_power_w=self._rx_power_w,
            serving=self._serving,
            fading_start=self._fading_start,
            fading_shift=self._fading_shift,
            trace=self._trace,
            fading_slot=self._slot,
            fading_block_slots=params.fading_block_slots,
            fading_moves=self._fading_moves,
            activity=self._activity,
            scheduling=self._scheduling,
            scheduled_rbs=self._scheduled_rbs,
            use_scheduled=params.interference_activity == "scheduled",
            noise_w=self._noise_w,
            inverse_gap=1.0 / self._gap,
            rb_bandwidth_hz=self.rb_bandwidth_hz,
            rate_cap_bps=np.inf if self._rate_cap_bps is None else self._rate_cap_bps,
            slot_duration_s=self.slot_duration_s,
        )

    def slots_until_update(self) -> int:
        """Slots a batch may run before the large-scale state next changes (a mobility update), at least 1."""
        if not (self.params.mobility and self._count):
            return np.iinfo(np.int64).max
        left_s = self.params.mobility_update_s - self._pending_mobility_s
        return max(math.ceil(left_s / self.slot_duration_s - 1e-9), 1)

    def record_grants(self, granted: NDArray[np.bool_]) -> None:
        """The RBs each scheduling site granted this slot (cells, RBs): their interference next slot."""
        self._scheduled_rbs[: self.num_cells] = granted

    def ue_state(self, handle: int) -> UeRadioState:
        row = self._row(handle)
        serving = int(self._serving[row])
        x, y = (float(v) for v in self._position[row])
        site_x, site_y = layout.site_positions(self.params.isd_m)[serving]
        return UeRadioState(
            cell=serving,
            x_m=x,
            y_m=y,
            distance_2d_m=math.hypot(x - site_x, y - site_y),
            los=bool(self._los[row, serving]),
            path_loss_db=float(self._path_loss_db[row, serving]),
            shadowing_db=float(self._shadowing_db[row, serving]),
            mean_sinr_db=float(self.mean_sinr_db([handle])[0]),
        )

    # ---- internals -----------------------------------------------------------------------------------------

    def _activity_trace(self, rng: np.random.Generator) -> NDArray[np.float32]:
        """Bernoulli(activity_factor) per (slot, site, RB), ``ACTIVITY_TRACE_SLOTS`` long; one slot if 0 or 1."""
        factor = self.params.activity_factor
        if 0.0 < factor < 1.0:
            shape = (ACTIVITY_TRACE_SLOTS, layout.NUM_SITES, self.num_rbs)
            return (rng.random(shape, dtype=np.float32) < factor).astype(np.float32)
        return np.full((1, layout.NUM_SITES, self.num_rbs), float(factor == 1.0), dtype=np.float32)

    def _drop(self) -> NDArray[np.float64]:
        """A uniform drop: in the centre hexagon, or in any scheduling site's when several schedule."""
        params = self.params
        if self._multi_cell:
            positions, _ = layout.drop_uniform_layout(
                self._rng, 1, params.isd_m, params.min_distance_m, params.scheduling_cells
            )
            return positions[0]
        return layout.drop_uniform(self._rng, 1, params.isd_m, params.min_distance_m)[0]

    def _strongest_scheduling_site(self, row: int) -> int:
        """Max received power association (3GPP system-level evaluations), among the sites that schedule."""
        return int(np.argmax(self._rx_power_w[row, : self.params.scheduling_cells]))

    def _move(self, elapsed_s: float) -> None:
        """Walk every user in its serving site's hexagon (waypoints relative to that site; no handover)."""
        count, params = self._count, self.params
        site = layout.site_positions(params.isd_m)[self._serving[:count]]
        relative = self._position[:count] - site
        layout.walk_waypoints(
            self._rng,
            relative,
            self._waypoint[:count],
            params.ue_speed_m_s * elapsed_s,
            params.isd_m,
            params.min_distance_m,
        )
        self._position[:count] = relative + site
        self._update_large_scale(np.arange(count), redraw_all=False)

    def _update_large_scale(self, rows: NDArray[np.int64], *, redraw_all: bool) -> None:
        """Recompute path loss at the users' positions; redraw LOS states and shadowing where due.

        LOS states (Table 7.4.2-1) are redrawn once a user is ``los_decorrelation_m`` from where they were
        drawn (Table 7.6.3.1-2); a link's shadowing once the user is its state's decorrelation distance
        (Table 7.5-6) from where it was drawn, or when its LOS state changed. ``redraw_all`` draws everything.
        """
        params = self.params
        position = self._position[rows]
        d2d = layout.distances_to_sites(position, params.isd_m)
        old_los = self._los[rows]
        if redraw_all:
            redraw_los = np.ones(d2d.shape, dtype=bool)
        else:
            moved = np.hypot(*(position - self._los_anchor[rows]).T)
            redraw_los = np.repeat((moved >= params.los_decorrelation_m)[:, None], layout.NUM_SITES, axis=1)
        los = old_los
        if redraw_los.any():
            drawn = self._rng.random(d2d.shape) < pathloss.los_probability(params.scenario, d2d, params.ue_height_m)
            los = np.where(redraw_los, drawn, old_los)
            self._los_anchor[rows] = np.where(redraw_los[:, :1], position, self._los_anchor[rows])
        sf_moved = np.hypot(*np.moveaxis(position[:, None, :] - self._sf_anchor[rows], -1, 0))
        sf_limit = np.where(old_los, params.shadowing_decorrelation_los_m, params.shadowing_decorrelation_nlos_m)
        redraw_sf = redraw_los if redraw_all else (los != old_los) | (sf_moved >= sf_limit)
        shadowing = self._shadowing_db[rows]
        if redraw_sf.any():
            drawn_sf = pathloss.shadowing_std_db(params.scenario, los) * self._rng.standard_normal(d2d.shape)
            shadowing = np.where(redraw_sf, drawn_sf, shadowing)
            self._sf_anchor[rows] = np.where(redraw_sf[:, :, None], position[:, None, :], self._sf_anchor[rows])
        loss = pathloss.path_loss(
            params.scenario, los, d2d, params.bs_height_m, params.ue_height_m, params.carrier_frequency_hz
        )
        self._los[rows] = los
        self._shadowing_db[rows] = shadowing
        self._path_loss_db[rows] = loss
        self._rx_power_w[rows] = self._rb_power_w * 10 ** (-(loss + shadowing) / DB_PER_DECADE)

    def _grow_rows(self) -> None:
        capacity = 2 * self._capacity
        for name in _PER_UE_ARRAYS:
            old = getattr(self, name)
            grown = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: self._count] = old[: self._count]
            setattr(self, name, grown)
        self._capacity = capacity

    def _row(self, handle: int) -> int:
        return int(self._rows([handle])[0])

    def _rows(self, handles: Handles) -> NDArray[np.int64]:
        index = np.asarray(handles, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self._next_handle):
            raise KeyError(f"unknown UE handle(s) among {list(handles)}")
        rows = self._row_of_handle[index]
        if index.size and rows.min() == NO_ROW:
            raise KeyError(f"UE handle(s) {index[rows == NO_ROW].tolist()} are not attached")
        return rows

    def _checked_position(self, position: tuple[float, float]) -> NDArray[np.float64]:
        """A position in the layout's user area: the serving hexagon (any scheduling site's when several schedule),
        at least ``min_distance_m`` from its site (where users are dropped, and where TR 38.901's path-loss
        formulas hold)."""
        point = np.asarray(position, dtype=np.float64)
        if point.shape != (2,) or not np.isfinite(point).all():
            raise ValueError(f"position must be two finite numbers (x_m, y_m), got {position!r}")
        isd_m, min_distance_m = self.params.isd_m, self.params.min_distance_m
        site = layout.site_of(point[None, :], isd_m)[0]
        if not 0 <= site < self.params.scheduling_cells or np.hypot(*(point - layout.site_positions(isd_m)[site])) < (
            min_distance_m
        ):
            area = "the scheduling sites' hexagons" if self._multi_cell else "the serving cell: a hexagon"
            raise ValueError(
                f"position {tuple(point.tolist())} is outside {area} of inter-site distance "
                f"{isd_m:g} m around its site, at least {min_distance_m:g} m from it"
            )
        return point
