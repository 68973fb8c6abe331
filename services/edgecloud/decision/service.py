"""The decision service as a plain library: decide, record experiences, show the pool and the prompt.

One policy object per (cell, policy name), built on first use; a policy whose answers hold for a pool
version announces its scorer's fingerprint in the pool (once per process, again until it succeeds), so a
gateway that remembers decisions knows whose answers it holds (docs/decision.md, "The gateway's memory").
The HTTP shell (``app.py``) and the virtual-time experiments call the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from redis.asyncio import Redis

from edgecloud.core.errors import BadRequestError
from edgecloud.core.reward import RewardParams, reward
from edgecloud.core.vocabulary import DecisionSource, TaskState
from edgecloud.core.wire import (
    DecisionRequest,
    DecisionResponse,
    ExperienceBatch,
    ExperienceBatchResponse,
    ExperienceRequest,
    ExperienceResponse,
    TaskFields,
    WarmUp,
)
from edgecloud.decision.cache import DecisionCache
from edgecloud.decision.experience import Experience
from edgecloud.decision.exploration import EpsilonGreedy, make_schedule
from edgecloud.decision.llm_endpoint import CannotScore, ScoringError
from edgecloud.decision.metrics import DecisionMetrics
from edgecloud.decision.policies.base import (
    EXPERIMENT_ONLY,
    POLICY_REGISTRY,
    Decision,
    DecisionContext,
    Policy,
    live_policy_names,
)
from edgecloud.decision.policies.icl import IclPolicy, IclSetup, LatestIclPolicy
from edgecloud.decision.pool import ExperiencePool, OfferResult, PoolNamespace, PoolSnapshot
from edgecloud.decision.prompt import candidate_completions
from edgecloud.decision.protocol import ExampleView, PoolResponse, PromptResponse
from edgecloud.decision.resilient_pool import ResilientExperiencePool
from edgecloud.decision.scoring import Scorer, ScoreResult
from edgecloud.decision.settings import DecisionSettings

logger = logging.getLogger(__name__)

# Ours: how often and how long the start-up warm-up tries an LLM that is not up yet (vLLM compiles for
# about 2 minutes on 2 cores when the testbed starts it beside this service).
WARM_UP_RETRY_S = 1.0
WARM_UP_WINDOW_S = 900.0


class DecisionService:
    def __init__(
        self,
        settings: DecisionSettings,
        pool: ExperiencePool,
        scorer: Scorer,
        metrics: DecisionMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        experiment: bool = False,
        redis_client: Redis | None = None,
    ):
        """``experiment=True`` also builds the policies only experiments can run (the oracle); ``redis_client``
        (the pool's, if it has one) is closed with the service."""
        self.settings = settings
        self.pool = pool
        self.scorer = scorer
        self.metrics = metrics or DecisionMetrics()
        self.clock = clock
        self.reward_params = RewardParams(settings.target_delay_s, settings.quality_penalty)
        self.cache: DecisionCache[Decision] = DecisionCache(settings.cache_entries)
        self.calibrations: DecisionCache[ScoreResult] = DecisionCache(settings.cache_entries)
        self.experiment = experiment
        self.warm_up_state = WarmUp.WARMING
        self._redis_client = redis_client
        self._warm_up: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._policies: dict[PoolNamespace, Policy] = {}
        self._sized_at: dict[PoolNamespace, int] = {}  # the pool version the pool-size gauge was read at
        self._announced: set[PoolNamespace] = set()

    async def start(self) -> None:
        """Warm the LLM up in the background, so the service answers (``GET /health``) at once; push the
        experiences that waited for the store as soon as it is back, whether or not requests come."""
        self._warm_up = asyncio.create_task(self.warm_up())
        if isinstance(self.pool, ResilientExperiencePool):
            self._flusher = asyncio.create_task(self.pool.keep_flushing())

    async def close(self) -> None:
        for task in (self._warm_up, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.scorer.aclose()
        if isinstance(self.pool, ResilientExperiencePool):
            await self.pool.close()  # before its Redis client closes: a last flush, else the spool
        if self._redis_client is not None:
            await self._redis_client.aclose()

    @staticmethod
    def policy_names() -> list[str]:
        return live_policy_names()

    def policy(self, namespace: PoolNamespace) -> Policy:
        if namespace not in self._policies:
            self._policies[namespace] = self._build_policy(namespace)
        return self._policies[namespace]

    def _build_policy(self, namespace: PoolNamespace) -> Policy:
        name = namespace.policy
        if name not in POLICY_REGISTRY or (name in EXPERIMENT_ONLY and not self.experiment):
            raise BadRequestError(
                f"Unknown policy {name!r}: choose one of {self.policy_names()}.", param="policy", code="unknown_policy"
            )
        policy_class = POLICY_REGISTRY[name]
        rng = random.Random(f"{self.settings.seed}:{namespace.cell}:{name}")
        if issubclass(policy_class, IclPolicy):
            setup = IclSetup(
                pool=self.pool,
                namespace=namespace,
                scorer=self.scorer,
                model=self.settings.llm_model,
                exploration=EpsilonGreedy(make_schedule(self.settings.epsilon), rng),
                cache=self.cache,
                calibrations=self.calibrations,
                llm_timeout_s=self.settings.llm_timeout_s,
                method=self.settings.icl_method(),
                scoring=self.settings.scoring,
            )
            if issubclass(policy_class, LatestIclPolicy):
                return policy_class(setup, self.settings.latest_examples)
            return policy_class(setup)
        return policy_class.from_service(rng=rng, reward_params=self.reward_params)

    async def decide(self, request: DecisionRequest, context: DecisionContext | None = None) -> DecisionResponse:
        """Decide for x; ``context`` carries what only an experiment knows (the oracle's true outcomes).

        ``request.remembered`` decisions a gateway answered from its memory count as steps of the policy's
        exploration schedule; ``request.explore_draw`` is its draw of exploration for this one.
        """
        started = self.clock()
        namespace = PoolNamespace(request.cell, request.policy)
        state = TaskState.of(request.service_type, request.estimated_tokens)
        policy = self.policy(namespace)
        if request.remembered:
            policy.skip(request.remembered)
            self.metrics.remembered.labels(request.policy).inc(request.remembered)
        scorer = policy.scorer() if policy.remembered_by_version else None
        if scorer is not None and namespace not in self._announced and await self.pool.announce(namespace, scorer):
            self._announced.add(namespace)
        context = replace(context or DecisionContext(), explore_draw=request.explore_draw)
        decision = await policy.choose(state, context)
        latency = self.clock() - started
        self.metrics.decisions.labels(request.policy, decision.source.value, decision.action.value).inc()
        self.metrics.latency.labels(request.policy, decision.source.value).observe(latency)
        version = decision.pool_version
        held = decision.source is DecisionSource.FALLBACK and decision.valid_for_s is not None
        valid = (
            scorer is not None
            and (decision.source in (DecisionSource.LLM, DecisionSource.CACHE) or held)
            and version is not None
            and version >= 0
        )
        return DecisionResponse(
            decision=decision.action,
            source=decision.source,
            scores=decision.scores,
            pool_version=decision.pool_version,
            scoring_path=decision.scoring_path,
            latency_ms=latency * 1000,
            service_type=state.service_type,
            token_bin=state.token_bin,
            policy=request.policy,
            cell=request.cell,
            epsilon=policy.epsilon(),
            valid_for_version=valid,
            valid_for_s=decision.valid_for_s if valid else None,
            scorer=scorer,
        )

    async def record_batch(self, batch: ExperienceBatch) -> ExperienceBatchResponse:
        """Record each experience in order, the pool reached once for the batch; an unknown policy refuses the
        batch before any is recorded."""
        offers = [self._experience(request) for request in batch.experiences]
        results = await self.pool.offer_many([(namespace, experience) for namespace, experience, _ in offers])
        return ExperienceBatchResponse(
            results=[
                await self._recorded(request, namespace, experience, policy, result)
                for request, (namespace, experience, policy), result in zip(
                    batch.experiences, offers, results, strict=True
                )
            ]
        )

    async def record(self, request: ExperienceRequest) -> ExperienceResponse:
        """Turn measured delays into the reward of eq. 10, then apply the replay rules to the pool.

        An experience whose ``experience_id`` the pool recorded before changes nothing (the pool, the policy,
        the metrics) and is answered with its first result, ``duplicate: true``.
        """
        namespace, experience, policy = self._experience(request)
        result = await self.pool.offer(namespace, experience)
        return await self._recorded(request, namespace, experience, policy, result)

    def _experience(self, request: ExperienceRequest) -> tuple[PoolNamespace, Experience, Policy]:
        """The experience a request reports, with its reward (eq. 10), its pool and the pool's policy."""
        namespace = PoolNamespace(request.cell, request.policy)
        policy = self.policy(namespace)
        state = TaskState.of(request.service_type, request.estimated_tokens)
        value = reward(self.reward_params, request.transmission_s, request.generation_s, request.quality_met)
        experience = Experience(
            state=state,
            action=request.decision,
            reward=value,
            transmission_s=request.transmission_s,
            generation_s=request.generation_s,
            quality_met=request.quality_met,
            source=request.source.value if request.source else "",
            request_id=request.request_id or "",
            experience_id=request.experience_id or "",
        )
        return namespace, experience, policy

    async def _recorded(
        self,
        request: ExperienceRequest,
        namespace: PoolNamespace,
        experience: Experience,
        policy: Policy,
        result: OfferResult,
    ) -> ExperienceResponse:
        """What the pool did with an experience, learned by its policy and counted; the answer to its sender."""
        value = experience.reward
        if result.duplicate:
            self.metrics.experiences.labels(request.policy, "duplicate").inc()
            return ExperienceResponse(
                reward=value,
                evaluation=result.evaluation,
                outcome=result.outcome,
                pool_changed=False,
                pool_version=result.version,
                buffered=result.buffered,
                duplicate=True,
            )
        await policy.learn(experience.evaluated(result.evaluation))
        self.metrics.experiences.labels(request.policy, result.outcome.value).inc()
        self.metrics.reward.labels(request.policy, request.decision.value).observe(value)
        if not result.buffered:
            self.metrics.pool_version.labels(request.cell, request.policy).set(result.version)
            # The size changes only with the version (this replica's change or another's): read it then.
            if self._sized_at.get(namespace) != result.version:
                self._record_size(namespace, await self.pool.snapshot(namespace))
        return ExperienceResponse(
            reward=value,
            evaluation=result.evaluation,
            outcome=result.outcome,
            pool_changed=result.outcome.changes_pool and not result.buffered,
            pool_version=result.version,
            buffered=result.buffered,
        )

    def _record_size(self, namespace: PoolNamespace, snapshot: PoolSnapshot) -> None:
        self.metrics.pool_size.labels(namespace.cell, namespace.policy).set(len(snapshot.examples))
        if not snapshot.stale:
            self._sized_at[namespace] = snapshot.version

    async def pool_view(self, cell: str, policy: str) -> PoolResponse:
        namespace = PoolNamespace(cell, policy)
        self.policy(namespace)
        snapshot = await self.pool.snapshot(namespace)
        self._record_size(namespace, snapshot)
        return PoolResponse(
            cell=cell, policy=policy, version=snapshot.version, examples=[ExampleView.of(e) for e in snapshot.examples]
        )

    async def prompt(self, task: TaskFields) -> PromptResponse:
        """The exact meta-prompt the LLM would see now for this x (ICL policies only)."""
        namespace = PoolNamespace(task.cell, task.policy)
        policy = self.policy(namespace)
        if not isinstance(policy, IclPolicy):
            raise BadRequestError(f"Policy {task.policy!r} uses no prompt.", param="policy")
        state = TaskState.of(task.service_type, task.estimated_tokens)
        view = await policy.view(state)
        method = policy.method
        return PromptResponse(
            prompt=view.prompt,
            candidates=list(candidate_completions().values()),
            content_free_prompt=method.prompt(None, view.shown) if method.calibrate else None,
            examples_shown=len(view.shown),
            pool_version=view.pool_version,
            service_type=state.service_type,
            token_bin=state.token_bin,
        )

    async def warm_up(self, retry_every_s: float = WARM_UP_RETRY_S, give_up_after_s: float = WARM_UP_WINDOW_S) -> None:
        """Score the shipped method's empty prompt once, at start-up, so the first request does not wait.

        It fills the LLM's prefix cache with the task description (every prompt starts with it) and lets
        an endpoint that cannot score be found out before any request asks. An LLM that is not up yet (the
        testbed starts vLLM beside this service; it compiles for minutes) is tried again every
        ``retry_every_s`` for ``give_up_after_s``. Failures are only logged; ``warm_up_state`` (shown by
        ``GET /health``) says how it ended, so a testbed can wait for it before its first request.
        """
        method, started, failed_before = self.settings.icl_method(), time.monotonic(), False
        while True:
            try:
                await self.scorer.score(method.prompt(None, ()), candidate_completions())
                self.warm_up_state = WarmUp.READY
                logger.info("decision LLM warmed up after %.1f s", time.monotonic() - started)
                return
            except CannotScore as error:
                self.warm_up_state = WarmUp.CANNOT_SCORE
                logger.info("decision LLM cannot score: %s", error)
                return
            except ScoringError as error:
                if not failed_before:
                    logger.info("decision LLM not answering yet (%s): retrying every %g s", error, retry_every_s)
                    failed_before = True
                if time.monotonic() + retry_every_s > started + give_up_after_s:
                    self.warm_up_state = WarmUp.GAVE_UP
                    logger.info("decision LLM warm-up gave up: %s", error)
                    return
            await asyncio.sleep(retry_every_s)

    async def clear(self, cell: str, policy: str) -> int:
        """Empty a pool (the HTTP shell lets only the admin key ask)."""
        namespace = PoolNamespace(cell, policy)
        self.policy(namespace)
        return await self.pool.clear(namespace)
