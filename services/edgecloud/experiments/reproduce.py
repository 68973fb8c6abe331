"""Fig. 5, all panels: the learning runs of (a)-(c) and the delay sweeps of (d)-(f).

Learning runs: every policy of ``learning.policies`` over the same seeded tasks and generation draws
(common random numbers), the ICL policies scoring with the real LLM. They run concurrently, so vLLM
batches the ICL variants' prompts. Sweeps: for each model pair and each point of users, output tokens
and quality share, the oracle's decisions (what learning converges to) give the service delay; the LLM
does not take part (45 learning runs would not fit the time budget on 2 cores; see REPRODUCTION.md).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from edgecloud.channel.settings import ChannelModelName, ChannelSettings
from edgecloud.core.vocabulary import ServiceType
from edgecloud.decision.policies.base import POLICY_REGISTRY
from edgecloud.decision.policies.icl import IclPolicy
from edgecloud.decision.pool import InMemoryExperiencePool
from edgecloud.decision.scoring import Scorer, make_scorer
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings
from edgecloud.experiments.config import ConfigError, ExperimentConfig, WorkloadConfig
from edgecloud.experiments.runner import PolicyRun, run_episodes
from edgecloud.experiments.system import EdgeCloudSystem
from edgecloud.experiments.workload import TaskGenerator, user_ids
from edgecloud.gateway.quality import QualityTable
from edgecloud.llmsim.profiles import LatencyProfile, load_profiles

SCORING_TIMEOUT_S = 600.0
"""One scoring call's HTTP limit, and how long a decision waits for it (virtual time: no fallback)."""
SWEEP_POLICY = "oracle"


@dataclass(frozen=True)
class DecisionLlm:
    """An LLM that scores for the ICL policies: its label in the figures, where it is, its model."""

    label: str
    url: str
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class SweepPoint:
    pair: str
    axis: str
    value: float
    mean_delay_s: float
    mean_transmission_s: float
    """t_tran of eq. 1 alone (air time and backhaul), to tell the radio's share of the delay."""
    offload_share: float
    quality_success: float
    tasks: int


FIG5_POLICIES = frozenset(
    {"icl", "icl_paper", "icl_latest", "icl_greedy", "dqn", "always_edge", "always_cloud", "oracle"}
)
"""The policies the panels and the claims compare; the learning runs need them all."""


class Experiment:
    """The config, and everything built from it that every run shares."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.quality = QualityTable.load()
        self.profiles = load_profiles()
        self.requirements = {kind: self.quality.default_requirement(kind) for kind in ServiceType}
        self._check(config)

    def _check(self, config: ExperimentConfig) -> None:
        named = {config.system.edge_profile, config.system.cloud_profile}
        named |= {name for pair in config.sweeps.model_pairs for name in (pair.edge, pair.cloud)}
        unknown = sorted(named - set(self.profiles))
        if unknown:
            raise ConfigError(f"unknown latency profiles {unknown}; known: {sorted(self.profiles)}")
        policies = set(config.learning.policies)
        if policies - set(POLICY_REGISTRY) or FIG5_POLICIES - policies:
            raise ConfigError(
                f"learning.policies must name all of {sorted(FIG5_POLICIES)} (Fig. 5 compares them), "
                f"got {sorted(policies)}"
            )

    def profile(self, name: str) -> LatencyProfile:
        return self.profiles[name]

    def channel(self, seed: int) -> ChannelSettings:
        system = self.config.system
        return ChannelSettings(
            channel_model=ChannelModelName(system.radio),
            scheduler=system.scheduler,
            seed=seed,
            backhaul_delay_s=system.backhaul_s,
        )

    def system(self, workload: WorkloadConfig, edge: str, cloud: str, seed: int) -> EdgeCloudSystem:
        return EdgeCloudSystem(
            self.profile(edge),
            self.profile(cloud),
            self.quality,
            self.channel(seed),
            user_ids(workload.users),
            workload.bytes_per_token,
            self.config.system.jitter,
            seed,
        )

    def decision_service(self, scorer: Scorer, llm_model: str) -> DecisionService:
        decision = self.config.decision
        settings = DecisionSettings(
            target_delay_s=decision.target_delay_s,
            quality_penalty=decision.quality_penalty,
            epsilon=decision.epsilon,
            latest_examples=decision.latest_examples,
            seed=self.config.seed,
            llm_model=llm_model,
            llm_timeout_s=SCORING_TIMEOUT_S,
        )
        return DecisionService(settings, InMemoryExperiencePool(), scorer, experiment=True)


def uses_llm(policy: str) -> bool:
    return issubclass(POLICY_REGISTRY[policy], IclPolicy)


async def learning_runs(
    experiment: Experiment, llms: list[DecisionLlm], on_episode: Callable[[PolicyRun], None] | None = None
) -> list[PolicyRun]:
    """Panels (a)-(c): each policy over the same tasks; the ICL policies once per decision LLM."""
    config = experiment.config
    learning, system = config.learning, config.system
    scorers = [make_scorer("auto", llm.url, llm.model, llm.api_key, SCORING_TIMEOUT_S) for llm in llms]
    jobs = []
    for policy in learning.policies:
        targets = list(zip(llms, scorers, strict=True)) if uses_llm(policy) else [(None, scorers[0])]
        for llm, scorer in targets:
            label = policy if llm is None else f"{policy} ({llm.label})"
            jobs.append(
                run_episodes(
                    experiment.decision_service(scorer, llm.model if llm else "none"),
                    experiment.system(config.workload, system.edge_profile, system.cloud_profile, config.seed),
                    TaskGenerator(config.workload, experiment.requirements, config.seed),
                    label=label,
                    policy=policy,
                    cell="fig5",
                    episodes=learning.episodes,
                    on_episode=on_episode,
                )
            )
    try:
        return list(await asyncio.gather(*jobs))
    finally:
        for scorer in scorers:
            await scorer.aclose()


async def sweep_runs(experiment: Experiment, on_point: Callable[[SweepPoint], None] | None = None) -> list[SweepPoint]:
    """Panels (d)-(f): service delay under the oracle's decisions, per model pair and sweep point."""
    config = experiment.config
    sweeps, base = config.sweeps, config.workload
    axes: dict[str, tuple[float, ...]] = {
        "users": tuple(float(value) for value in sweeps.users),
        "mean_output_tokens": tuple(float(value) for value in sweeps.mean_output_tokens),
        "quality_share": sweeps.quality_share,
    }
    unused = make_scorer("auto", config.decision.llm_url, config.decision.llm_model)
    points = []
    for pair in sweeps.model_pairs:
        for axis, values in axes.items():
            for value in values:
                workload = base.model_copy(update={axis: int(value) if axis != "quality_share" else value})
                run = await run_episodes(
                    experiment.decision_service(unused, "none"),
                    experiment.system(workload, pair.edge, pair.cloud, config.seed),
                    TaskGenerator(workload, experiment.requirements, config.seed),
                    label=pair.name,
                    policy=SWEEP_POLICY,
                    cell="sweep",
                    episodes=math.ceil(sweeps.tasks_per_point / workload.users),
                )
                points.append(sweep_point(pair.name, axis, value, run))
                if on_point is not None:
                    on_point(points[-1])
    await unused.aclose()
    return points


def sweep_point(pair: str, axis: str, value: float, run: PolicyRun) -> SweepPoint:
    served = run.served
    quality = [item for item in served if item.task.quality_preferred]
    return SweepPoint(
        pair=pair,
        axis=axis,
        value=value,
        mean_delay_s=sum(item.total_s for item in served) / len(served),
        mean_transmission_s=sum(item.transmission_s for item in served) / len(served),
        offload_share=sum(item.action.alpha for item in served) / len(served),
        quality_success=sum(item.quality_met for item in quality) / len(quality) if quality else float("nan"),
        tasks=len(served),
    )
