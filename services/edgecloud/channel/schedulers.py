"""Who gets each resource block in a slot: proportional fair, round robin, max-C/I.

One small class per policy behind ``Scheduler.assign`` and a name -> class registry, like the
decision policies. A scheduler only ranks users; the cell (``cell.py``) gives each RB to the best
user that still has bytes waiting and hands back RBs a user cannot fill (capacity is not banked).

Proportional fairness is the allocation rule of the paper (Sec. II-C, for z_{j,q,k} in eq. 2): RB q
goes to argmax_k r_{k,q}(t) / R_k(t), with R_k the exponentially averaged throughput of user k.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from edgecloud.channel import slot_kernel

# Ranks users may not take (no bytes waiting, or already satisfied this slot).
INELIGIBLE = -np.inf
# Floor of the PF average throughput, so that a user never served yet wins over any served one.
MIN_AVERAGE_THROUGHPUT_BPS = slot_kernel.MIN_AVERAGE_THROUGHPUT_BPS


class Scheduler(ABC):
    """Gives each RB of a slot to one of the eligible users."""

    name: ClassVar[str]
    # The compiled slot loop's copy of this policy (``slot_kernel.POLICY_*``), or None: the cell runs it in Python.
    kernel_policy: ClassVar[int | None] = None

    @abstractmethod
    def assign(
        self, rates_bps: np.ndarray, average_bps: np.ndarray, handles: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        """Winner row of each RB (-1 where no user is eligible).

        ``rates_bps`` is (users, RBs), ``average_bps`` the users' averaged throughput, ``handles``
        their stable ids and ``eligible`` which rows may be served.
        """

    def served(self, handles: np.ndarray, winners: np.ndarray) -> None:  # noqa: B027 (an optional hook)
        """Told who was finally served in a slot (round robin keeps its turn here)."""


class PriorityScheduler(Scheduler):
    """Each RB goes to the eligible user of highest priority on it."""

    @abstractmethod
    def priority(self, rates_bps: np.ndarray, average_bps: np.ndarray) -> np.ndarray:
        """Priority of each user (row) on each RB (column)."""

    def assign(
        self, rates_bps: np.ndarray, average_bps: np.ndarray, handles: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        if not eligible.any():
            return np.full(rates_bps.shape[1], -1)
        priority = self.priority(rates_bps, average_bps)
        priority[~eligible] = INELIGIBLE
        return np.argmax(priority, axis=0)


class ProportionalFair(PriorityScheduler):
    """argmax r_{k,q} / R_k: the user best placed relative to its own average wins the RB."""

    name = "pf"
    kernel_policy = slot_kernel.POLICY_PF

    def priority(self, rates_bps: np.ndarray, average_bps: np.ndarray) -> np.ndarray:
        return rates_bps * (1.0 / np.maximum(average_bps, MIN_AVERAGE_THROUGHPUT_BPS))[:, None]


class MaxCarrierToInterference(PriorityScheduler):
    """argmax r_{k,q}: the highest sum rate, at the expense of users at the cell edge."""

    name = "maxci"
    kernel_policy = slot_kernel.POLICY_MAXCI

    def priority(self, rates_bps: np.ndarray, average_bps: np.ndarray) -> np.ndarray:
        return rates_bps.copy()


class RoundRobin(Scheduler):
    """Channel-blind: RBs are dealt one by one to the eligible users, resuming after the last one served."""

    name = "rr"

    def __init__(self) -> None:
        self._last_served = -1  # handle of the user dealt the last RB of the previous slot

    def assign(
        self, rates_bps: np.ndarray, average_bps: np.ndarray, handles: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        winners = np.full(rates_bps.shape[1], -1)
        rows = np.flatnonzero(eligible)
        if rows.size == 0:
            return winners
        # Turn order: handles after the last one served first, then the rest (wrapped around).
        wrapped = handles[rows] + np.where(handles[rows] > self._last_served, 0, handles.max() + 1)
        in_turn = rows[np.argsort(wrapped)]
        winners[:] = in_turn[np.arange(winners.size) % in_turn.size]
        return winners

    def served(self, handles: np.ndarray, winners: np.ndarray) -> None:
        dealt = winners[winners >= 0]
        if dealt.size:
            self._last_served = int(handles[dealt[-1]])


SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (ProportionalFair, RoundRobin, MaxCarrierToInterference)
}


def make_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}.") from None
