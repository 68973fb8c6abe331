"""A channel of fixed capacity: every user, alone in the cell, gets exactly ``capacity_bps``.

Used to check the measurement chain against eq. 1 (n tokens x 4 bytes x 8 / C) with nothing random
in the way: every RB carries ``capacity_bps / num_rbs`` to every user in every slot.
"""

from __future__ import annotations

import numpy as np

from edgecloud.channel.radio.base import UeRadioState


class ConstantCapacityChannel:
    def __init__(self, capacity_bps: float, num_rbs: int, rb_bandwidth_hz: float, slot_duration_s: float):
        if capacity_bps <= 0:
            raise ValueError(f"capacity_bps must be > 0, got {capacity_bps}")
        self.capacity_bps = capacity_bps
        self.num_rbs = num_rbs
        self.rb_bandwidth_hz = rb_bandwidth_hz
        self.slot_duration_s = slot_duration_s
        self._positions: dict[int, tuple[float, float]] = {}
        self._next_handle = 0

    def add_ue(self, position: tuple[float, float] | None = None) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._positions[handle] = position or (0.0, 0.0)
        return handle

    def place_ue(self, handle: int, position: tuple[float, float]) -> None:
        self._positions[handle] = position

    def remove_ue(self, handle: int) -> None:
        del self._positions[handle]

    def advance(self, n_slots: int) -> None:
        """Nothing changes with time."""

    num_cells = 1

    def serving_cells(self, handles: np.ndarray) -> np.ndarray:
        return np.zeros(len(handles), dtype=np.int64)

    def record_grants(self, granted: np.ndarray) -> None:
        """Users of a constant channel see no interference."""

    def rates_bps(self, handles: np.ndarray) -> np.ndarray:
        return np.full((len(handles), self.num_rbs), self.capacity_bps / self.num_rbs)

    def ue_state(self, handle: int) -> UeRadioState:
        x, y = self._positions[handle]
        spectral_efficiency = self.capacity_bps / (self.num_rbs * self.rb_bandwidth_hz)
        sinr_db = 10 * float(np.log10(2**spectral_efficiency - 1))
        return UeRadioState(
            cell=0,
            x_m=x,
            y_m=y,
            distance_2d_m=float(np.hypot(x, y)),
            los=True,
            path_loss_db=0.0,
            shadowing_db=0.0,
            mean_sinr_db=sinr_db,
        )
