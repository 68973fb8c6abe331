"""The interface every downlink channel model offers to the scheduler.

A channel model owns the users' radio state (position, path loss, fading) and answers one
question per slot: at what rate could each resource block (RB) carry data to each user? The
scheduler (``channel/schedulers.py``) decides who gets which RB; the cell (``channel/cell.py``)
moves the bytes. ``RadioModel`` (3GPP TR 38.901 UMa/UMi) and ``ConstantCapacityChannel`` implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class UeRadioState:
    """One user's large-scale radio state, as ``GET /v1/ues`` reports it."""

    cell: int  # index of the serving cell (0: the centre cell of the layout)
    x_m: float  # position relative to the serving site, metres
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
