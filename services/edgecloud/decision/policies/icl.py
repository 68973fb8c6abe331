"""The paper's policy: in-context learning over the experience pool (section III), and its ICL baselines.

``IclPolicy`` (name ``icl``): with probability epsilon a random action (exploration, section III-B);
otherwise the LLM scores " local" and " offload" after the meta-prompt and the argmax is taken (eqs.
5-6). How the meta-prompt is built and the scores compared is the policy's ``IclMethod``
(``icl_method.py``: which examples, which description, calibration); the service's default is chosen
on the consistency grid. Answers are cached by the exact prompt. If the LLM fails or is slower than
the timeout, the decision falls back to the pool's example for the same keywords, else to the rule
"quality-preferred types offload, others stay local"; while the LLM cannot score at all, that fallback
is cached too. The prompt of x is a function of the pool's version and the method alone, so the LLM's
(and the cache's) answers hold until the version or the scorer (model, method) changes: a gateway may
remember them (``remembered_by_version``) and draw exploration itself (``DecisionContext.explore_draw``).

Variants: ``icl_paper`` is the same policy with the paper's method (the whole pool in pool order, the
paper's description, no calibration); ``icl_latest`` (baseline 1) shows the most recent experiences
instead of the replayed pool; ``icl_greedy`` (baseline 2) is ICL without exploration (epsilon = 0).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgecloud.core.vocabulary import Action, DecisionSource, Evaluation, TaskState, rule_action
from edgecloud.decision.cache import CacheKey, DecisionCache
from edgecloud.decision.experience import Experience
from edgecloud.decision.exploration import EpsilonGreedy
from edgecloud.decision.icl_method import PAPER_METHOD, IclMethod
from edgecloud.decision.llm_endpoint import CannotScore
from edgecloud.decision.policies.base import Decision, DecisionContext, Policy, register
from edgecloud.decision.pool import ExperiencePool, PoolNamespace
from edgecloud.decision.prompt import CONTENT_FREE, candidate_completions
from edgecloud.decision.scoring import Scorer, ScoreResult, ScoringError, ScoringPath, argmax

logger = logging.getLogger(__name__)


@dataclass
class IclSetup:
    """What every ICL variant needs: where the pool is, who scores and how, how long to wait, how to explore."""

    pool: ExperiencePool
    namespace: PoolNamespace
    scorer: Scorer
    model: str
    exploration: EpsilonGreedy
    cache: DecisionCache[Decision]
    calibrations: DecisionCache[ScoreResult]
    """Scores of the content-free query, by the examples shown (one LLM call per example set)."""
    llm_timeout_s: float
    method: IclMethod
    scoring: str = ""
    """How candidates are scored (``DecisionSettings.scoring``): part of the scorer's fingerprint."""


@dataclass(frozen=True)
class PromptView:
    """What the LLM reads for one x: the pool version it came from, the examples shown, the exact prompt."""

    pool_version: int
    pool_examples: tuple[Experience, ...]
    shown: tuple[Experience, ...]
    prompt: str

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()


@register
class IclPolicy(Policy):
    name = "icl"
    uses_prompt = True
    remembered_by_version = True

    def __init__(self, setup: IclSetup):
        self.setup = setup
        self._late: asyncio.Future[tuple[Decision, bool]] | None = None  # an LLM call that outlived its timeout
        self._views: dict[TaskState, PromptView] = {}
        self._views_version: int | None = None
        self._pool_examples: tuple[Experience, ...] | None = None

    @property
    def method(self) -> IclMethod:
        return self.setup.method

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        setup = self.setup
        if setup.exploration.explore(context.explore_draw):
            version = await setup.pool.version(setup.namespace)
            return Decision(setup.exploration.random_action(), DecisionSource.EXPLORE, pool_version=version)
        return await self._decide_by_llm(state)

    def epsilon(self) -> float | None:
        return self.setup.exploration.current_epsilon

    def skip(self, steps: int) -> None:
        self.setup.exploration.advance(steps)

    @functools.cached_property
    def _scorer(self) -> str:
        """The model, the method and its empty prompt (the template's text), and the scoring path setting."""
        method = self.method
        identity = "\n".join((self.setup.model, repr(method), method.prompt(None, ()), self.setup.scoring))
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    def scorer(self) -> str | None:
        return self._scorer

    async def _decide_by_llm(self, state: TaskState) -> Decision:
        """The cached answer, or the LLM's within the timeout, else the fallback.

        A slow LLM call is not cancelled at the timeout: it goes on in the background and fills the
        cache, so the next decision for the same prompt is a cache hit. Until that late answer comes,
        uncached decisions fall back at once rather than each waiting the timeout for an LLM that is
        hung or overloaded (one call in flight probes it). When the LLM cannot score at all
        (``CannotScore``), the fallback is cached until the scorer tries the endpoint again, and says so
        (``Decision.valid_for_s``): a caller may remember it as long.
        """
        view = await self.view(state)
        key = CacheKey(self.setup.namespace.prefix, state.key, view.digest, self.setup.model)
        hit = self.setup.cache.get(key)
        if hit is not None:  # the steady state: no task, no timer
            return self._held(hit, key, view) if hit.source is DecisionSource.FALLBACK else self._cached(hit, view)
        if self._late is not None and not self._late.done():
            return fallback_decision(state, view.pool_examples, view.pool_version)
        pending = asyncio.ensure_future(self.setup.cache.get_or_compute(key, lambda: self._score(state, view)))
        pending.add_done_callback(_retrieve_exception)
        try:
            decision, cached = await asyncio.wait_for(asyncio.shield(pending), self.setup.llm_timeout_s)
        except CannotScore as error:
            fallback = fallback_decision(state, view.pool_examples, view.pool_version)
            fallback = replace(fallback, valid_for_s=error.retry_after_s)
            self.setup.cache.put(key, fallback, ttl_s=error.retry_after_s)
            return fallback
        except Exception as error:  # any failure of the LLM path falls back; a decision is always given
            if isinstance(error, TimeoutError):
                self._late = pending
            elif not isinstance(error, ScoringError):
                logger.warning("decision LLM path failed unexpectedly: %s", type(error).__name__)
            return fallback_decision(state, view.pool_examples, view.pool_version)
        return self._cached(decision, view) if cached else decision

    def _held(self, fallback: Decision, key: CacheKey, view: PromptView) -> Decision:
        """A fallback cached while the LLM cannot score, with the rest of its lifetime; it holds only under the pool
        version it was drawn from (another version may show x the same prompt and hold other examples)."""
        remaining = self.setup.cache.remaining_s(key) if fallback.pool_version == view.pool_version else None
        return replace(fallback, valid_for_s=remaining)

    @staticmethod
    def _cached(decision: Decision, view: PromptView) -> Decision:
        """A cached answer for the prompt of ``view``: it holds for the pool version that prompt was built from
        (another version may show x the same examples), which is the version it is given under."""
        return replace(decision, source=DecisionSource.CACHE, pool_version=view.pool_version)

    async def examples(self) -> tuple[int, Sequence[Experience]]:
        """The pool version and the examples the method selects from."""
        snapshot = await self.setup.pool.snapshot(self.setup.namespace)
        return snapshot.version, snapshot.examples

    async def view(self, state: TaskState) -> PromptView:
        """The prompt for ``state`` now; the pool is read once per version and the prompt built once per x.

        The steady state costs one read of the pool version (a Redis GET).
        """
        version = await self.setup.pool.version(self.setup.namespace)
        if version != self._views_version:
            self._views, self._views_version, self._pool_examples = {}, version, None
        cached = self._views.get(state)
        if cached is not None:
            return cached
        if self._pool_examples is None:
            read_version, examples = await self.examples()
            if read_version != version:  # the pool moved between the two reads: build, keep nothing
                return self._build_view(read_version, examples, state)
            self._pool_examples = tuple(examples)
        cached = self._views[state] = self._build_view(version, self._pool_examples, state)
        return cached

    def _build_view(self, version: int, examples: Sequence[Experience], state: TaskState) -> PromptView:
        shown = self.method.shown(examples, state)
        return PromptView(version, tuple(examples), shown, self.method.prompt(state, shown))

    async def _score(self, state: TaskState, view: PromptView) -> Decision:
        candidates = candidate_completions()
        if not self.method.calibrate:
            result = await self.setup.scorer.score(view.prompt, candidates)
            return self._decision(result, self.method.scores(result), view)
        result, content_free = await asyncio.gather(
            self.setup.scorer.score(view.prompt, candidates), self._content_free(view)
        )
        calibrated = result.path is not ScoringPath.CONSTRAINED  # constrained answers carry no probabilities
        return self._decision(result, self.method.scores(result, content_free if calibrated else None), view)

    async def _content_free(self, view: PromptView) -> ScoreResult:
        """The content-free query's scores after the same examples: one LLM call per example set."""
        prompt = self.method.prompt(None, view.shown)
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        key = CacheKey(self.setup.namespace.prefix, CONTENT_FREE, digest, self.setup.model)
        result, _ = await self.setup.calibrations.get_or_compute(
            key, lambda: self.setup.scorer.score(prompt, candidate_completions())
        )
        return result

    @staticmethod
    def _decision(result: ScoreResult, scores: dict[Action, float], view: PromptView) -> Decision:
        by_name = {action.value: score for action, score in scores.items()}
        return Decision(argmax(scores), DecisionSource.LLM, by_name, view.pool_version, result.path.value)


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
class PaperIclPolicy(IclPolicy):
    """ICL exactly as section III describes it: the paper's method, whatever the service's default is."""

    name = "icl_paper"

    def __init__(self, setup: IclSetup):
        super().__init__(replace(setup, method=PAPER_METHOD))


@register
class GreedyIclPolicy(IclPolicy):
    """Baseline 2: in-context learning without exploration; every decision is the LLM's."""

    name = "icl_greedy"

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        return await self._decide_by_llm(state)

    def epsilon(self) -> float | None:
        return 0.0


@register
class LatestIclPolicy(IclPolicy):
    """Baseline 1: the most recent experiences (Good and Bad) are what the method selects from, not the pool.

    They change with every experience, not only with the pool version, so the prompt is built anew for
    every decision (its digest still keys the cache).
    """

    name = "icl_latest"
    remembered_by_version = False  # its prompt changes with every experience

    def __init__(self, setup: IclSetup, latest_count: int = 10):
        super().__init__(setup)
        self.latest_count = latest_count

    async def examples(self) -> tuple[int, Sequence[Experience]]:
        version = await self.setup.pool.version(self.setup.namespace)
        latest = await self.setup.pool.latest(self.setup.namespace, self.latest_count)
        return version, list(reversed(latest))

    async def view(self, state: TaskState) -> PromptView:
        return self._build_view(*await self.examples(), state)
