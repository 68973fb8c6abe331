"""The paper's policy: in-context learning over the experience pool (section III), and its two ICL baselines.

``IclPolicy`` (name ``icl``): with probability epsilon a random action (exploration, section III-B);
otherwise the LLM scores " local" and " offload" after the meta-prompt built from the pool's examples
(one best example per keyword combination, prioritized replay) and the argmax is taken (eqs. 5-6).
Answers are cached by (x, pool version, model). If the LLM fails or is slower than the timeout, the
decision falls back to the pool's example for the same keywords, else to the rule "quality-preferred
types offload, others stay local".

Baselines of section III-B: ``icl_latest`` (baseline 1) shows the most recent experiences as examples
instead of the replayed pool; ``icl_greedy`` (baseline 2) is ICL without exploration (epsilon = 0).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgecloud.decision.cache import CacheKey, DecisionCache
from edgecloud.decision.experience import Evaluation, Experience
from edgecloud.decision.exploration import EpsilonGreedy
from edgecloud.decision.keywords import TaskState, rule_action
from edgecloud.decision.policies.base import Decision, DecisionContext, DecisionSource, Policy, register
from edgecloud.decision.pool import ExperiencePool, PoolNamespace
from edgecloud.decision.prompt import candidate_completions, render_meta_prompt
from edgecloud.decision.scoring import Scorer, ScoringError

logger = logging.getLogger(__name__)


@dataclass
class IclSetup:
    """What every ICL variant needs: where the pool is, who scores, how long to wait, how to explore."""

    pool: ExperiencePool
    namespace: PoolNamespace
    scorer: Scorer
    model: str
    exploration: EpsilonGreedy
    cache: DecisionCache[Decision]
    llm_timeout_s: float


@register
class IclPolicy(Policy):
    name = "icl"

    def __init__(self, setup: IclSetup):
        self.setup = setup

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        setup = self.setup
        if setup.exploration.explore():
            version = await setup.pool.version(setup.namespace)
            return Decision(setup.exploration.random_action(), DecisionSource.EXPLORE, pool_version=version)
        return await self._decide_by_llm(state)

    async def _decide_by_llm(self, state: TaskState) -> Decision:
        """The cached answer, or the LLM's within the timeout, else the fallback.

        A slow LLM call is not cancelled at the timeout: it goes on in the background and fills the
        cache, so the next decision for the same x and pool version is a cache hit. On a CPU edge the
        first prompt of a pool version takes long to prefill; the ones after it reuse vLLM's prefix cache.
        """
        key = await self.cache_key(state)
        hit = self.setup.cache.get(key)
        if hit is not None:  # the steady state: no task, no timer
            return replace(hit, source=DecisionSource.CACHE)
        pending = asyncio.ensure_future(self.setup.cache.get_or_compute(key, lambda: self._score(state)))
        pending.add_done_callback(_retrieve_exception)
        try:
            decision, cached = await asyncio.wait_for(asyncio.shield(pending), self.setup.llm_timeout_s)
        except Exception as error:  # any failure of the LLM path falls back; a decision is always given
            if not isinstance(error, ScoringError | TimeoutError):
                logger.warning("decision LLM path failed unexpectedly: %s", type(error).__name__)
            version, examples = await self.examples()
            return fallback_decision(state, examples, version)
        return replace(decision, source=DecisionSource.CACHE) if cached else decision

    async def cache_key(self, state: TaskState) -> CacheKey:
        """(x, pool version, model): what the LLM's answer at temperature 0 depends on."""
        version = await self.setup.pool.version(self.setup.namespace)
        return CacheKey(self.setup.namespace.prefix, state.key, version, self.setup.model)

    async def examples(self) -> tuple[int, Sequence[Experience]]:
        """The pool version and the examples the meta-prompt shows."""
        snapshot = await self.setup.pool.snapshot(self.setup.namespace)
        return snapshot.version, snapshot.examples

    async def meta_prompt(self, state: TaskState) -> str:
        _, examples = await self.examples()
        return render_meta_prompt(state, examples)

    async def _score(self, state: TaskState) -> Decision:
        version, examples = await self.examples()
        result = await self.setup.scorer.score(render_meta_prompt(state, examples), candidate_completions())
        scores = {action.value: score for action, score in result.scores.items()}
        return Decision(result.action, DecisionSource.LLM, scores, version, result.path.value)


def _retrieve_exception(task: asyncio.Future[tuple[Decision, bool]]) -> None:
    """A background scoring that failed after its caller fell back is not an unhandled error."""
    if not task.cancelled():
        task.exception()


def fallback_decision(state: TaskState, examples: Sequence[Experience], version: int | None) -> Decision:
    """The pool's Good example for the same keywords, else the rule; marked ``fallback``."""
    for example in examples:
        if example.state == state and example.evaluation is Evaluation.GOOD:
            return Decision(example.action, DecisionSource.FALLBACK, pool_version=version)
    return Decision(rule_action(state), DecisionSource.FALLBACK, pool_version=version)


@register
class GreedyIclPolicy(IclPolicy):
    """Baseline 2: in-context learning without exploration; every decision is the LLM's."""

    name = "icl_greedy"

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        return await self._decide_by_llm(state)


@register
class LatestIclPolicy(IclPolicy):
    """Baseline 1: the most recent experiences as examples, not the replayed pool.

    The examples change with every experience, not only with the pool version, so the cache key
    is the hash of the examples shown instead of the version.
    """

    name = "icl_latest"

    def __init__(self, setup: IclSetup, latest_count: int = 10):
        super().__init__(setup)
        self.latest_count = latest_count

    async def examples(self) -> tuple[int, Sequence[Experience]]:
        version = await self.setup.pool.version(self.setup.namespace)
        latest = await self.setup.pool.latest(self.setup.namespace, self.latest_count)
        return version, list(reversed(latest))

    async def cache_key(self, state: TaskState) -> CacheKey:
        version, examples = await self.examples()
        digest = hashlib.sha256("\n".join(example.to_json() for example in examples).encode()).hexdigest()
        return CacheKey(f"{self.setup.namespace.prefix}:latest:{digest}", state.key, version, self.setup.model)
