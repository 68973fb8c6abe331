"""The ICL policy's method options: retrieval and order, the description's switches, candidate scores,
contextual calibration, the prompt-keyed cache, and the fallback while the LLM cannot score.

The scorer is a seam (it reads the prompt as a rule would); the same policy against the real vLLM is
in ``test_decision_vllm.py`` and the consistency benchmark (``benchmarks/decision_consistency.py``).
"""

from __future__ import annotations

import math

import pytest

from edgecloud.core.vocabulary import Action, ServiceType, TaskState, keyword_grid
from edgecloud.core.wire import DecisionRequest, WarmUp
from edgecloud.decision.experience import Experience
from edgecloud.decision.icl_method import PAPER_METHOD, CandidateScore, IclMethod
from edgecloud.decision.llm_endpoint import CannotScore
from edgecloud.decision.pool import InMemoryExperiencePool, PoolNamespace
from edgecloud.decision.prompt import CONTENT_FREE, PAPER_TEXT, PromptText, render_meta_prompt
from edgecloud.decision.retrieval import ExampleSelection, keyword_distance, select_examples
from edgecloud.decision.scoring import ScoreResult, ScoringError, ScoringPath
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings

CHAT_SHORT = TaskState.of(ServiceType.CHAT, 64)
NO_NAMES = PromptText(name_candidates=False, quality_hint=True)


def example(state: TaskState, action: Action, reward: float = 10.0) -> Experience:
    return Experience(state, action, reward, 0.1, 5.0, quality_met=True)


# --- retrieval --------------------------------------------------------------------------------------


def test_keyword_distance_counts_bins_then_type_then_class():
    math_short = TaskState.of(ServiceType.MATH, 64)
    assert keyword_distance(CHAT_SHORT, CHAT_SHORT) == 0
    assert keyword_distance(CHAT_SHORT, TaskState.of(ServiceType.CHAT, 300)) == 1
    assert keyword_distance(CHAT_SHORT, TaskState.of(ServiceType.CHAT, 5000)) == 4
    assert keyword_distance(CHAT_SHORT, TaskState.of(ServiceType.TRANSLATION, 64)) == 2  # same class
    assert keyword_distance(CHAT_SHORT, math_short) == 4  # other class
    assert keyword_distance(math_short, TaskState.of(ServiceType.CODING, 300)) == 3
    assert all(keyword_distance(a, b) == keyword_distance(b, a) for a in keyword_grid() for b in keyword_grid())


def test_nearest_k_shows_the_nearest_last_and_the_pool_method_everything():
    pool = sorted((example(state, Action.LOCAL) for state in keyword_grid()), key=lambda item: item.state.key)
    shown = select_examples(pool, CHAT_SHORT, ExampleSelection.NEAREST, 3)
    assert [item.state for item in shown][-1] == CHAT_SHORT
    distances = [keyword_distance(CHAT_SHORT, item.state) for item in shown]
    assert distances == sorted(distances, reverse=True) and distances == [2, 1, 0]
    assert select_examples(pool, CHAT_SHORT, ExampleSelection.POOL, 3) == tuple(pool)
    assert select_examples(pool[:2], CHAT_SHORT, ExampleSelection.NEAREST, 5) == tuple(
        reversed(sorted(pool[:2], key=lambda item: keyword_distance(CHAT_SHORT, item.state)))
    )


def test_of_equally_near_examples_the_later_one_is_shown():
    older = example(CHAT_SHORT, Action.OFFLOAD, reward=1.0)
    newer = example(CHAT_SHORT, Action.LOCAL, reward=2.0)
    assert select_examples([older, newer], CHAT_SHORT, ExampleSelection.NEAREST, 1) == (newer,)


# --- the description's switches ----------------------------------------------------------------------


def test_the_paper_text_names_the_answers_and_ours_does_not():
    paper = render_meta_prompt(CHAT_SHORT, [], PAPER_TEXT)
    ours = render_meta_prompt(CHAT_SHORT, [], NO_NAMES)
    assert '("local")' in paper and "Reply with one word only: local or offload." in paper
    assert "local" not in ours.replace("(chat, 1-128)", "") and "offload" not in ours
    assert "quality-preferred types" in ours
    assert "quality-preferred" not in render_meta_prompt(CHAT_SHORT, [], PromptText(False, False))
    assert render_meta_prompt(None, [], NO_NAMES).endswith(f"Keywords: ({CONTENT_FREE}, {CONTENT_FREE}) | Decision:")


# --- candidate scores and calibration ----------------------------------------------------------------


def result(tokens: dict[Action, tuple[float, ...]]) -> ScoreResult:
    scores = {action: math.fsum(values) for action, values in tokens.items()}
    best = max(scores, key=scores.__getitem__)
    return ScoreResult(scores, ScoringPath.PROMPT_LOGPROBS, best, 1, "token_ids", token_logprobs=tokens)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (CandidateScore.SUM, {Action.LOCAL: -1.0, Action.OFFLOAD: -1.5}),
        (CandidateScore.FIRST_TOKEN, {Action.LOCAL: -1.0, Action.OFFLOAD: -0.5}),
        (CandidateScore.MEAN, {Action.LOCAL: -1.0, Action.OFFLOAD: -0.75}),
    ],
)
def test_candidate_scores_from_token_logprobs(score, expected):
    method = IclMethod(ExampleSelection.NEAREST, 1, NO_NAMES, score, calibrate=False)
    measured = result({Action.LOCAL: (-1.0,), Action.OFFLOAD: (-0.5, -1.0)})
    assert method.scores(measured) == pytest.approx(expected)


def test_calibration_subtracts_the_content_free_scores():
    """Zhao et al.'s diagonal correction in log space: the content-free query's bias is taken out."""
    method = IclMethod(ExampleSelection.NEAREST, 1, NO_NAMES, CandidateScore.SUM, calibrate=True)
    query = result({Action.LOCAL: (-2.0,), Action.OFFLOAD: (-0.5, -0.1)})
    content_free = result({Action.LOCAL: (-4.0,), Action.OFFLOAD: (-0.2, -0.1)})
    assert method.scores(query, content_free) == pytest.approx({Action.LOCAL: 2.0, Action.OFFLOAD: -0.3})


# --- the policy ---------------------------------------------------------------------------------------


class RuleScorer:
    """Answers as the last example shown says (a perfect copier), 'offload' when there is none; counts prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.cannot_score: CannotScore | None = None

    async def score(self, prompt, candidates):
        self.prompts.append(prompt)
        if self.cannot_score is not None:
            raise self.cannot_score
        shown = [line for line in prompt.splitlines() if line.startswith("Keywords:") and "| Reward:" in line]
        action = Action.LOCAL if shown and "Decision: local" in shown[-1] else Action.OFFLOAD
        if CONTENT_FREE in prompt.splitlines()[-1]:
            action = Action.OFFLOAD  # a content-free query leans to offload, as SmolLM2 does
        chosen, other = -0.1, -2.0
        local = chosen if action is Action.LOCAL else other
        return result({Action.LOCAL: (local,), Action.OFFLOAD: (chosen + other - local, 0.0)})  # offload: 2 tokens

    async def aclose(self):
        return None


def service(scorer: RuleScorer, **settings) -> DecisionService:
    config = DecisionSettings(epsilon="constant:0", llm_timeout_s=5.0, **settings)
    return DecisionService(config, InMemoryExperiencePool(), scorer)


def decide(state: TaskState, policy: str = "icl") -> DecisionRequest:
    tokens = {"1-128": 64, "129-512": 300, "513-1024": 800, "1025-2048": 1500, ">2048": 3000}[state.token_bin]
    return DecisionRequest(service_type=state.service_type, estimated_tokens=tokens, policy=policy)


async def offer(decisions: DecisionService, policy: str, *examples: Experience) -> None:
    for item in examples:
        await decisions.pool.offer(PoolNamespace("cell-0", policy), item)


async def test_the_shipped_method_shows_the_nearest_example_and_its_cache_survives_unrelated_pool_changes():
    scorer = RuleScorer()
    decisions = service(scorer)
    math_long = TaskState.of(ServiceType.MATH, 1500)
    await offer(decisions, "icl", example(CHAT_SHORT, Action.LOCAL), example(math_long, Action.OFFLOAD))
    first = await decisions.decide(decide(CHAT_SHORT))
    assert (first.decision, first.source.value) == (Action.LOCAL, "llm")
    assert "(math, 1025-2048)" not in scorer.prompts[-1]  # one example shown: the nearest
    await offer(decisions, "icl", example(math_long, Action.OFFLOAD, reward=20.0))  # a new pool version
    again = await decisions.decide(decide(CHAT_SHORT))
    assert again.source.value == "cache" and len(scorer.prompts) == 1  # chat's prompt did not change
    await offer(decisions, "icl", example(CHAT_SHORT, Action.OFFLOAD, reward=20.0))
    changed = await decisions.decide(decide(CHAT_SHORT))
    assert (changed.decision, changed.source.value) == (Action.OFFLOAD, "llm") and len(scorer.prompts) == 2


async def test_the_paper_method_shows_the_whole_pool_with_the_paper_text():
    scorer = RuleScorer()
    decisions = service(scorer)
    examples = [example(state, Action.LOCAL) for state in keyword_grid()[:6]]
    await offer(decisions, "icl_paper", *examples)
    await decisions.decide(decide(CHAT_SHORT, "icl_paper"))
    assert scorer.prompts[-1] == render_meta_prompt(
        CHAT_SHORT, sorted(examples, key=lambda item: item.state.key), PAPER_TEXT
    )
    assert decisions.policy(PoolNamespace("cell-0", "icl_paper")).method == PAPER_METHOD  # type: ignore[attr-defined]


async def test_calibration_costs_one_call_per_example_set_and_none_in_steady_state():
    scorer = RuleScorer()
    decisions = service(scorer, icl_calibrate=True)
    await offer(decisions, "icl", example(CHAT_SHORT, Action.LOCAL))
    answer = await decisions.decide(decide(CHAT_SHORT))
    assert len(scorer.prompts) == 2 and CONTENT_FREE in scorer.prompts[1].splitlines()[-1]
    # query: local -0.1 vs offload -2.0; content-free: local -2.0 vs offload -0.1 -> local by 3.8 nats
    assert answer.scores == pytest.approx({"local": 1.9, "offload": -1.9})
    translation = TaskState.of(ServiceType.TRANSLATION, 64)  # its nearest example is the same one
    await decisions.decide(decide(translation))
    assert len(scorer.prompts) == 3  # the query only: the content-free scores of that example set are cached
    await decisions.decide(decide(CHAT_SHORT))
    assert len(scorer.prompts) == 3
    shown = await decisions.prompt(decide(CHAT_SHORT))
    assert shown.content_free_prompt is not None and shown.content_free_prompt.endswith("(N/A, N/A) | Decision:")


async def test_while_the_llm_cannot_score_the_fallback_is_cached_for_its_prompt():
    scorer = RuleScorer()
    decisions = service(scorer)
    await offer(decisions, "icl", example(CHAT_SHORT, Action.OFFLOAD))
    scorer.cannot_score = CannotScore("a simulator", retry_after_s=60.0)
    first = await decisions.decide(decide(CHAT_SHORT))
    assert (first.decision, first.source.value) == (Action.OFFLOAD, "fallback")  # the pool's example
    coding = await decisions.decide(decide(TaskState.of(ServiceType.CODING, 64)))
    assert (coding.decision, coding.source.value) == (Action.OFFLOAD, "fallback")  # the rule: no own example
    asked = len(scorer.prompts)
    repeat = [await decisions.decide(decide(CHAT_SHORT)) for _ in range(20)]
    assert {(item.decision, item.source.value) for item in repeat} == {(Action.OFFLOAD, "fallback")}
    assert len(scorer.prompts) == asked  # answered from the cache, not by asking again
    await offer(decisions, "icl", example(CHAT_SHORT, Action.LOCAL, reward=50.0))
    changed = await decisions.decide(decide(CHAT_SHORT))
    assert (changed.decision, changed.source.value) == (Action.LOCAL, "fallback")  # a new example set


class FlakyScorer(RuleScorer):
    """Down for the first ``down`` calls (an LLM still starting), then a copier."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    async def score(self, prompt, candidates):
        if len(self.prompts) < self.down:
            self.prompts.append(prompt)
            raise ScoringError("connection refused")
        return await super().score(prompt, candidates)


async def test_warm_up_waits_for_an_llm_that_is_starting_and_stops_at_one_that_cannot_score():
    starting = FlakyScorer(down=2)
    warming = service(starting)
    assert warming.warm_up_state == WarmUp.WARMING
    await warming.warm_up(retry_every_s=0.01, give_up_after_s=5.0)
    assert len(starting.prompts) == 3  # two refused, then the empty prompt was scored
    assert starting.prompts[-1] == DecisionSettings().icl_method().prompt(None, ())
    assert warming.warm_up_state == WarmUp.READY
    unable = RuleScorer()
    unable.cannot_score = CannotScore("a simulator", retry_after_s=60.0)
    cannot = service(unable)
    await cannot.warm_up(retry_every_s=0.01, give_up_after_s=5.0)
    assert len(unable.prompts) == 1
    assert cannot.warm_up_state == WarmUp.CANNOT_SCORE
    never = FlakyScorer(down=10**6)
    gave_up = service(never)
    await gave_up.warm_up(retry_every_s=0.01, give_up_after_s=0.05)
    assert 1 <= len(never.prompts) <= 10  # gave up within its window
    assert gave_up.warm_up_state == WarmUp.GAVE_UP
