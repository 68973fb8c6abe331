"""Episodes in virtual time through the decision service's own core (``DecisionService``).

Each episode: the K users' tasks arrive; all are decided by ``DecisionService.decide`` at once (the
oracle also gets the true outcomes; exploration draws in arrival order); the system serves them
(generation, then the PF cell); each served task's measured t_tran and t_gen go back through
``DecisionService.record``, which computes the reward of eq. 10 and applies the replay rules, as live
experiences do. Outcomes become known only
after the episode's last decision (answers take longer than the arrival window), so the pool changes
between episodes, not within one; the next episode starts when the last answer has been delivered.

Virtual time: nothing here sleeps. The only wall time spent is the decision LLM's (real HTTP to an
OpenAI-compatible endpoint); the modelled delays do not include it, as a GPU edge decides in
milliseconds. The ICL policies therefore wait for the LLM rather than fall back on a timeout.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from edgecloud.core.wire import DecisionRequest, ExperienceRequest
from edgecloud.decision.experience import Experience
from edgecloud.decision.policies.base import DecisionContext
from edgecloud.decision.pool import PoolNamespace
from edgecloud.decision.service import DecisionService
from edgecloud.experiments.system import EdgeCloudSystem, Served
from edgecloud.experiments.workload import TaskGenerator


@dataclass
class PolicyRun:
    """One policy's run: every served task, by episode, and what the LLM was asked."""

    label: str
    policy: str
    episodes: list[list[Served]] = field(default_factory=list)
    llm_calls: int = 0
    """Decisions the LLM scored (not cached, not explored)."""
    final_pool: list[Experience] = field(default_factory=list)
    """The pool's examples after the last episode: what the prompt showed the LLM at the end."""

    @property
    def served(self) -> list[Served]:
        return [item for episode in self.episodes for item in episode]


async def run_episodes(
    service: DecisionService,
    system: EdgeCloudSystem,
    tasks: TaskGenerator,
    *,
    label: str,
    policy: str,
    cell: str,
    episodes: int,
    on_episode: Callable[[PolicyRun], None] | None = None,
) -> PolicyRun:
    run = PolicyRun(label, policy)
    start_s = 0.0
    for index in range(episodes):
        tasks_now = tasks.episode(index, start_s)
        outcomes = [system.outcomes(task) for task in tasks_now]
        requests = [
            DecisionRequest(
                service_type=task.service_type, estimated_tokens=task.output_tokens, cell=cell, policy=policy
            )
            for task in tasks_now
        ]
        # Decided concurrently (the pool changes only between episodes): the LLM sees an episode's prompts
        # at once and batches them. Each decision draws its exploration before its first wait, so the
        # draws follow arrival order exactly as one by one.
        responses = await asyncio.gather(
            *(
                service.decide(request, DecisionContext(outcome_of=functools.partial(system.oracle_view, outcome)))
                for request, outcome in zip(requests, outcomes, strict=True)
            )
        )
        run.llm_calls += sum(response.source == "llm" for response in responses)
        decided = [
            (outcome, response.decision, response.source.value)
            for outcome, response in zip(outcomes, responses, strict=True)
        ]
        served = system.serve(decided)
        for item in served:
            await service.record(
                ExperienceRequest(
                    service_type=item.task.service_type,
                    estimated_tokens=item.task.output_tokens,
                    cell=cell,
                    policy=policy,
                    decision=item.action,
                    transmission_s=item.transmission_s,
                    generation_s=item.generation_s,
                    quality_met=item.quality_met,
                )
            )
        run.episodes.append(served)
        start_s = max(item.task.arrival_s + item.total_s for item in served)
        if on_episode is not None:
            on_episode(run)
    run.final_pool = list((await service.pool.snapshot(PoolNamespace(cell, policy))).examples)
    return run
