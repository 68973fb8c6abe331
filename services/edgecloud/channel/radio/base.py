"""The interface every downlink channel model offers to the scheduler.

A channel model owns the users' radio state (position, path loss, fading) and answers one
question per slot: at what rate could each resource block (RB) carry data to each user? The
scheduler (``channel/schedulers.py``) decides who gets which RB; the cell (``channel/cell.py``)
moves the bytes. ``RadioModel`` (3GPP TR 38.901 UMa/UMi) and ``ConstantCapacityChannel`` implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from edgecloud.channel.slot_kernel import SlotLinks


@dataclass(frozen=True)
class UeRadioState:
    """One user's large-scale radio state, as ``GET /v1/ues`` reports it."""

    cell: int  # index of the serving cell (0: the centre cell of the layout)
    x_m: float  # position relative to the layout's centre site (the serving site of the one-cell layout), metres
    y_m: float
    distance_2d_m: float  # horizontal distance to the serving site
    los: bool  # line of sight to the serving site
    path_loss_db: float  # to the serving site, without shadowing
    shadowing_db: float  # log-normal shadowing to the serving site (added to the path loss)
    mean_sinr_db: float  # wideband SINR without fast fading, all interferers at their activity factor


class ChannelModel(Protocol):
    num_rbs: int
    rb_bandwidth_hz: float
    slot_duration_s: float

    @property
    def num_cells(self) -> int:
        """Cells that schedule users, each with its own scheduler (indices 0 .. num_cells - 1)."""
        ...

    def add_ue(self, position: tuple[float, float] | None = None) -> int:
        """Attach a user at ``position`` (metres from the serving site) or a random drop; return its handle."""
        ...

    def place_ue(self, handle: int, position: tuple[float, float]) -> None:
        """Move a user to ``position``; its large-scale state is recomputed."""
        ...

    def remove_ue(self, handle: int) -> None: ...

    def advance(self, n_slots: int) -> None:
        """Let ``n_slots`` slots pass: fast fading, interferer activity and mobility evolve."""
        ...

    def rates_bps(self, handles: np.ndarray) -> np.ndarray:
        """Achievable rate of every RB for each user in this slot, bit/s, shape (len(handles), num_rbs)."""
        ...

    def ue_state(self, handle: int) -> UeRadioState: ...

    def serving_cells(self, handles: np.ndarray) -> np.ndarray:
        """The serving cell of each user."""
        ...

    def record_grants(self, granted: np.ndarray) -> None:
        """Which RBs each cell granted this slot, shape (num_cells, num_rbs): what its neighbours see as load."""
        ...


@runtime_checkable
class CompiledChannel(Protocol):
    """A channel whose slots the compiled loop (``slot_kernel``) can run: it exposes its links."""

    num_cells: int

    def links(self, handles: Sequence[int]) -> SlotLinks: ...

    def serving_cells(self, handles: Sequence[int]) -> np.ndarray: ...

    def slots_until_update(self) -> int:
        """Slots a batch may run before the channel's large-scale state changes."""
        ...

    def advance(self, n_slots: int) -> None: ...
