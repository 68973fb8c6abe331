"""The paper's system model in virtual time: what serving a task on either side costs (section II).

- Generation, eqs. 3, 4c, 4d: t_gen = TTFT + n TPOT with the side's simulator profile
  (``llmsim/data/profiles.yaml``); TTFT and each token's TPOT carry the profile's bounded jitter,
  mean (1 + u), u ~ U(-jitter, jitter), as the live simulator draws them.
- Quality, constraint 4e: the serving model's benchmark index against the task's requirement, from
  the gateway's table (``gateway/data/quality.yaml``).
- Transmission, eqs. 1 and 2: the answer's n s_token bytes reach the base station when generated (plus
  t_back when offloaded) and cross the same cell as the live emulator (``channel``: TR 38.901 radio,
  the scheduler per resource block, slot by slot); t_tran runs from the end of generation to the last
  bit's delivery, so it holds n s_token / C and, offloaded, t_back, as in eq. 1.

Both sides' generation delays are drawn for every task whatever is decided (common random numbers),
so all policies meet the same tasks and the same draws, and the oracle knows the true outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecloud.channel.air import AirInterface, Transmission
from edgecloud.channel.service import make_cell
from edgecloud.channel.settings import ChannelSettings
from edgecloud.core.vocabulary import Action
from edgecloud.experiments.workload import Task
from edgecloud.gateway.quality import QualityTable
from edgecloud.llmsim.profiles import LatencyProfile

BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Outcome:
    """Serving a task on one side: its generation delay (eq. 3) and whether quality is met (4e)."""

    generation_s: float
    quality_met: bool


@dataclass(frozen=True)
class TaskOutcomes:
    task: Task
    edge: Outcome
    cloud: Outcome

    def of(self, action: Action) -> Outcome:
        return self.cloud if action is Action.OFFLOAD else self.edge


@dataclass(frozen=True)
class Served:
    """One decided and served task, with its measured delays."""

    task: Task
    action: Action
    source: str
    generation_s: float
    transmission_s: float
    quality_met: bool

    @property
    def total_s(self) -> float:
        """t_total of eq. 4 for this task."""
        return self.generation_s + self.transmission_s


def generation_delay(profile: LatencyProfile, tokens: int, jitter: float, rng: np.random.Generator) -> float:
    """Eq. 3 (4c/4d for the side): TTFT + n TPOT, each term jittered by mean (1 + u), u ~ U(-jitter, jitter)."""
    draws = 1.0 + rng.uniform(-jitter, jitter, tokens + 1) if jitter else np.ones(tokens + 1)
    return float(profile.ttft * draws[0] + profile.tpot * draws[1:].sum())


class EdgeCloudSystem:
    def __init__(
        self,
        edge: LatencyProfile,
        cloud: LatencyProfile,
        quality: QualityTable,
        channel: ChannelSettings,
        users: Sequence[str],
        bytes_per_token: float,
        jitter: float,
        seed: int,
    ):
        self.edge, self.cloud, self.quality = edge, cloud, quality
        self.bytes_per_token = bytes_per_token
        self.jitter = jitter
        self.backhaul_s = channel.backhaul_delay_s
        self._rng = np.random.default_rng(seed)
        cell = make_cell(channel)
        for user in users:
            cell.attach(user)
        self.air = AirInterface(cell)

    def outcomes(self, task: Task) -> TaskOutcomes:
        """Both sides' true outcomes for ``task`` (drawn once, in task order)."""
        return TaskOutcomes(task, self._outcome(self.edge, task), self._outcome(self.cloud, task))

    def _outcome(self, profile: LatencyProfile, task: Task) -> Outcome:
        delay = generation_delay(profile, task.output_tokens, self.jitter, self._rng)
        return Outcome(delay, self.quality.meets(profile.name, task.service_type, task.requirement))

    def oracle_view(self, outcomes: TaskOutcomes, action: Action) -> tuple[float, bool]:
        """What the oracle compares: t_gen + alpha t_back and quality. The bits' air time is the same
        for both actions of a task, so leaving it out does not change the oracle's choice."""
        outcome = outcomes.of(action)
        return outcome.generation_s + action.alpha * self.backhaul_s, outcome.quality_met

    def serve(self, decided: Sequence[tuple[TaskOutcomes, Action, str]]) -> list[Served]:
        """Serve an episode's decided tasks: generation, then the answers' bits through the cell together."""
        transmissions = []
        for index, (outcomes, action, _) in enumerate(decided):
            task = outcomes.task
            ready = task.arrival_s + outcomes.of(action).generation_s + action.alpha * self.backhaul_s
            bits = task.output_tokens * self.bytes_per_token * BITS_PER_BYTE
            transmissions.append(Transmission(task.user, ready, bits, key=index))
        delivered = {delivery.key: delivery.time for delivery in self.air.deliver(transmissions)}
        served = []
        for index, (outcomes, action, source) in enumerate(decided):
            outcome = outcomes.of(action)
            generated_at = outcomes.task.arrival_s + outcome.generation_s
            served.append(
                Served(
                    outcomes.task, action, source, outcome.generation_s, delivered[index] - generated_at,
                    outcome.quality_met,
                )
            )  # fmt: skip
        return served
