"""The tasks of an experiment, episode by episode (section IV-A's workload); no policy, no timing model here.

An episode is one task from each of the K users, arriving uniformly within the episode window. A task
is quality-preferred with probability ``quality_share``; its type is then drawn uniformly from the
quality-preferred kinds, else from the regular ones. Its output length is drawn uniformly around the
mean (the paper gives only the mean), and the length is known when deciding (x of eq. 8 carries it; the
gateway estimates it live). The quality requirement is the type's default from the gateway's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgecloud.core.vocabulary import ServiceType
from edgecloud.experiments.config import WorkloadConfig


@dataclass(frozen=True)
class Task:
    episode: int
    user: str
    arrival_s: float
    service_type: ServiceType
    output_tokens: int
    requirement: float

    @property
    def quality_preferred(self) -> bool:
        return self.service_type.quality_preferred

    @property
    def task_class(self) -> str:
        return "quality" if self.quality_preferred else "regular"


def user_ids(count: int) -> list[str]:
    return [f"ue-{index:03d}" for index in range(count)]


class TaskGenerator:
    def __init__(self, workload: WorkloadConfig, requirements: Mapping[ServiceType, float], seed: int):
        self.workload = workload
        self.requirements = requirements
        self.users = user_ids(workload.users)
        self._rng = np.random.default_rng(seed)

    def episode(self, index: int, start_s: float) -> list[Task]:
        """One task per user, in arrival order."""
        load, rng = self.workload, self._rng
        low = max(round(load.mean_output_tokens * (1 - load.output_tokens_spread)), 1)
        high = round(load.mean_output_tokens * (1 + load.output_tokens_spread))
        tasks = []
        for user in self.users:
            kinds = load.quality_types if rng.random() < load.quality_share else load.regular_types
            kind = kinds[int(rng.integers(len(kinds)))]
            tasks.append(
                Task(
                    episode=index,
                    user=user,
                    arrival_s=start_s + float(rng.uniform(0, load.episode_window_s)),
                    service_type=kind,
                    output_tokens=int(rng.integers(low, high + 1)),
                    requirement=self.requirements[kind],
                )
            )
        return sorted(tasks, key=lambda task: task.arrival_s)
