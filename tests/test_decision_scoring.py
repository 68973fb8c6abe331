"""Scoring candidates over the OpenAI API: each path's parsing, auto fallback, errors (fake endpoint seam).

The same scorers against real vLLM: ``test_decision_vllm.py``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

import httpx
import pytest

from edgecloud.core.vocabulary import Action
from edgecloud.decision.llm_endpoint import CannotScore
from edgecloud.decision.prompt import candidate_completions
from edgecloud.decision.scoring import (
    FLOOR_MARGIN,
    SCORER_KINDS,
    AutoScorer,
    CachedPromptLogprobScorer,
    ConstrainedAnswerScorer,
    OpenAIEndpoint,
    PathUnsupported,
    PromptLogprobScorer,
    ScoringError,
    ScoringPath,
    TopLogprobScorer,
    UnparseableAnswer,
    candidate_token_span,
    common_prefix_length,
    logprob_contexts,
    make_scorer,
    map_top_logprobs,
    parse_constrained_answer,
)

CANDIDATES = candidate_completions()
PROMPT = "Keywords: (chat, 1-128) | Decision:"
BASE_URL = "http://llm.test/v1"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeEndpoint:
    """An ``httpx.MockTransport`` answering each route with a handler; records every request."""

    def __init__(self, **routes: Handler) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = request.url.path.removeprefix("/v1").strip("/").replace("/", "_")
        handler = self.routes.get(route)
        if handler is None:
            return httpx.Response(404, json={"error": {"message": "Not Found"}})
        return handler(request)

    def bodies(self) -> list[dict]:
        return [json.loads(request.content) for request in self.requests]

    def scorer(self, kind: str, api_key: str | None = None):
        return make_scorer(kind, BASE_URL, "test-model", api_key=api_key, timeout_s=5.0, transport=self.transport)

    def endpoint(self) -> OpenAIEndpoint:
        return OpenAIEndpoint(BASE_URL, "test-model", timeout_s=5.0, transport=self.transport)


def echo_choice(index: int, pieces: list[tuple[str, float | None]]) -> dict:
    tokens = [token for token, _ in pieces]
    return {
        "index": index,
        "text": "".join(tokens),
        "logprobs": {
            "tokens": tokens,
            "token_logprobs": [value for _, value in pieces],
            "text_offset": [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))],
            "top_logprobs": [None] * len(tokens),
        },
        "finish_reason": "length",
    }


PROMPT_PIECES: list[tuple[str, float | None]] = [
    ("Keywords", None),
    (": (", -1.0),
    ("chat", -2.0),
    (", ", -0.5),
    ("1-128", -3.0),
    (") |", -0.25),
    (" Decision", -0.1),
    (":", -0.2),
]


def completions_with(*choices: dict) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": list(choices), "usage": {"completion_tokens": 1}})

    return handler


def chat_with(top: list[tuple[str, float]] | None = None, content: str | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        logprobs = None
        if top is not None:
            logprobs = {
                "content": [
                    {
                        "token": top[0][0],
                        "logprob": top[0][1],
                        "top_logprobs": [{"token": t, "logprob": v} for t, v in top],
                    }
                ]
            }
        message = {"role": "assistant", "content": content if content is not None else (top[0][0] if top else "")}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message, "logprobs": logprobs}]})

    return handler


def status(code: int, message: str = "nope") -> Handler:
    return lambda request: httpx.Response(code, json={"error": {"message": message, "code": code}})


# --- prompt_logprobs by echo -------------------------------------------------------------------


async def test_echo_sums_the_candidate_tokens_in_one_batched_request():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" local", -0.7)]),
            # " offload" split into three tokens: all of them count.
            echo_choice(1, [*PROMPT_PIECES, (" off", -0.3), ("lo", -0.2), ("ad", -0.1)]),
        )
    )
    scorer = PromptLogprobScorer(fake.endpoint())
    result = await scorer.score(PROMPT, CANDIDATES)
    await scorer.aclose()

    assert (result.path, result.method, result.requests) == (ScoringPath.PROMPT_LOGPROBS, "echo", 1)
    assert len(fake.requests) == 1
    assert result.scores[Action.LOCAL] == pytest.approx(-0.7)
    assert result.scores[Action.OFFLOAD] == pytest.approx(-0.6)
    assert result.action is Action.OFFLOAD
    assert result.completion_tokens == 1
    body = fake.bodies()[0]
    assert body["prompt"] == [PROMPT + " local", PROMPT + " offload"]
    assert body["echo"] is True and body["max_tokens"] == 0 and body["temperature"] == 0
    assert body["logprobs"] >= 0 and body["model"] == "test-model"


async def test_echo_choices_are_matched_by_index_not_order():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(1, [*PROMPT_PIECES, (" offload", -5.0)]),
            echo_choice(0, [*PROMPT_PIECES, (" local", -1.0)]),
        )
    )
    result = await PromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)
    assert result.scores == {Action.LOCAL: -1.0, Action.OFFLOAD: -5.0}
    assert result.action is Action.LOCAL


def test_span_ignores_a_bos_token_and_a_generated_token():
    tokens = ["<s>", "Keywords", ": (", "x", " Decision", ":", " off", "load", " the"]
    prompt = "Keywords: (x Decision:"
    assert candidate_token_span(tokens, prompt, " offload") == (6, 8)


def test_span_includes_a_token_merging_the_prompt_end_with_the_candidate():
    tokens = ["Keywords", " Decision", ": local"]
    assert candidate_token_span(tokens, "Keywords Decision:", " local") == (2, 3)


def test_span_of_an_echo_that_is_not_the_prompt_is_unsupported():
    with pytest.raises(PathUnsupported):
        candidate_token_span(["Sure", "!"], "Keywords Decision:", " local")


def test_common_prefix_length():
    assert common_prefix_length([["a", ":", " local"], ["a", ":", " off", "load"]]) == 2
    assert common_prefix_length([["a", ":", " off"], ["a", ":", " off", "load"]], limit=2) == 2
    assert common_prefix_length([[1, 2], [3]]) == 0


async def test_echo_with_a_merge_scores_the_same_span_for_every_candidate():
    # Only " local" merged with the prompt's ":"; both are scored from where the echoes differ: the
    # same text (": local" / ": offload") after the same tokens.
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES[:-1], (": local", -4.0)]),
            echo_choice(1, [*PROMPT_PIECES, (" offload", -1.0)]),
        )
    )
    result = await PromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)
    assert result.scores[Action.LOCAL] == pytest.approx(-4.0)
    assert result.scores[Action.OFFLOAD] == pytest.approx(-0.2 - 1.0)


async def test_echo_keeps_a_first_token_the_candidates_share():
    candidates = {Action.LOCAL: " off", Action.OFFLOAD: " offload"}
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" off", -0.5)]),
            echo_choice(1, [*PROMPT_PIECES, (" off", -0.5), ("load", -0.25)]),
        )
    )
    result = await PromptLogprobScorer(fake.endpoint()).score(PROMPT, candidates)
    assert result.scores == {Action.LOCAL: -0.5, Action.OFFLOAD: -0.75}


async def test_echo_without_logprobs_in_the_answer_is_unsupported():
    choice = {"index": 0, "text": PROMPT + " local", "logprobs": None}
    fake = FakeEndpoint(completions=completions_with(choice, {**choice, "index": 1}))
    with pytest.raises(PathUnsupported):
        await PromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)


async def test_echo_with_a_missing_choice_is_malformed():
    fake = FakeEndpoint(completions=completions_with(echo_choice(0, [*PROMPT_PIECES, (" local", -0.7)])))
    with pytest.raises(ScoringError, match="2 choice"):
        await PromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)


# --- prompt_logprobs by token ids (vLLM) -------------------------------------------------------


class ToyVllm:
    """/tokenize and token-id /v1/completions with ``logprob_token_ids``, like vLLM, over a toy vocabulary.

    Words are tokens (with their leading space); " offload" is two tokens, " off" + "load". The
    log-probability of token t after a context is ``logprob(context, t)``.
    """

    def __init__(self, logprob: Callable[[tuple[int, ...], int], float], honour_ids: bool = True) -> None:
        self.vocab: dict[str, int] = {}
        self.logprob = logprob
        self.honour_ids = honour_ids

    def id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab) + 1)

    def tokenize_text(self, text: str) -> list[int]:
        pieces = re.findall(r"\s?[^\s]+", text)
        return [self.id(part) for piece in pieces for part in ([" off", "load"] if piece == " offload" else [piece])]

    def tokenize(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        tokens = self.tokenize_text(body["prompt"])
        return httpx.Response(200, json={"count": len(tokens), "max_model_len": 2048, "tokens": tokens})

    def completions(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        choices = []
        for index, context in enumerate(body["prompt"]):
            assert isinstance(context, list), "token-id prompts"
            wanted = body["logprob_token_ids"]
            if self.honour_ids:
                top = {f"token_id:{token}": self.logprob(tuple(context), token) for token in wanted}
            else:
                top = {"the": -0.1}
            logprobs = {"tokens": ["x"], "token_logprobs": [-0.1], "top_logprobs": [top], "text_offset": [0]}
            choices.append({"index": index, "text": "x", "logprobs": logprobs, "finish_reason": "length"})
        usage = {"prompt_tokens": 10, "completion_tokens": len(choices), "total_tokens": 10 + len(choices)}
        return httpx.Response(200, json={"choices": choices, "usage": usage})


async def test_token_ids_score_each_candidate_token_after_its_token_context():
    toy = ToyVllm(lambda context, token: -float(len(context)) / 100 - token / 1000)
    fake = FakeEndpoint(tokenize=toy.tokenize, completions=toy.completions)
    scorer = CachedPromptLogprobScorer(fake.endpoint())
    result = await scorer.score(PROMPT, CANDIDATES)

    prompt_ids = toy.tokenize_text(PROMPT)
    n = len(prompt_ids)
    local, off, load = toy.id(" local"), toy.id(" off"), toy.id("load")
    assert result.scores[Action.LOCAL] == pytest.approx(-n / 100 - local / 1000)
    assert result.scores[Action.OFFLOAD] == pytest.approx((-n / 100 - off / 1000) + (-(n + 1) / 100 - load / 1000))
    assert (result.path, result.method, result.requests, result.completion_tokens) == (
        ScoringPath.PROMPT_LOGPROBS,
        "token_ids",
        1,
        2,
    )
    routes = [request.url.path for request in fake.requests]
    assert routes.count("/tokenize") == 3 and routes.count("/v1/completions") == 1
    body = fake.bodies()[-1]
    # Two contexts: the prompt (for " local" and " off"), the prompt + " off" (for "load").
    assert body["prompt"] == [prompt_ids, [*prompt_ids, off]]
    assert sorted(body["logprob_token_ids"]) == sorted({local, off, load})
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["return_tokens_as_token_ids"] is True


def test_contexts_start_where_a_merged_tokenization_differs():
    # Prompt [1, 2, 3]; " local" merges with the prompt's last token (30); " offload" does not (40, 41).
    contexts, targets = logprob_contexts([1, 2, 3], [[1, 2, 30], [1, 2, 3, 40, 41]])
    assert contexts == [[1, 2], [1, 2, 3], [1, 2, 3, 40]]
    assert targets == [[(0, 30)], [(0, 3), (1, 40), (2, 41)]]


def test_contexts_reject_a_candidate_without_tokens():
    with pytest.raises(ScoringError, match="no token"):
        logprob_contexts([1, 2, 3], [[1, 2, 3], [1, 2, 3, 4]])


async def test_token_ids_without_a_tokenize_route_are_unsupported_before_any_llm_request():
    fake = FakeEndpoint(completions=status(500))
    with pytest.raises(PathUnsupported) as caught:
        await CachedPromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)
    assert caught.value.requests == 0
    assert all(request.url.path == "/tokenize" for request in fake.requests)


async def test_token_ids_ignored_by_the_endpoint_are_unsupported():
    toy = ToyVllm(lambda context, token: -1.0, honour_ids=False)
    fake = FakeEndpoint(tokenize=toy.tokenize, completions=toy.completions)
    with pytest.raises(PathUnsupported, match="return_tokens_as_token_ids"):
        await CachedPromptLogprobScorer(fake.endpoint()).score(PROMPT, CANDIDATES)


async def test_prompt_logprobs_kind_falls_back_from_token_ids_to_echo():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" local", -0.7)]), echo_choice(1, [*PROMPT_PIECES, (" offload", -0.9)])
        )
    )
    scorer = fake.scorer("prompt_logprobs")
    first = await scorer.score(PROMPT, CANDIDATES)
    assert (first.path, first.method, first.requests) == (ScoringPath.PROMPT_LOGPROBS, "echo", 1)
    await scorer.score(PROMPT, CANDIDATES)
    assert [request.url.path for request in fake.requests].count("/tokenize") == 3  # only the first call probed


# --- top_logprobs ------------------------------------------------------------------------------


def test_top_logprobs_sum_every_token_that_starts_a_candidate():
    alternatives = [("Local", math.log(0.5)), (" off", math.log(0.2)), ("lo", math.log(0.1)), ("o", math.log(0.05))]
    scores = map_top_logprobs(alternatives, CANDIDATES)
    assert scores[Action.LOCAL] == pytest.approx(math.log(0.6))
    assert scores[Action.OFFLOAD] == pytest.approx(math.log(0.25))


def test_top_logprobs_ignore_empty_and_unrelated_tokens():
    alternatives = [(" ", -0.1), ("The", -1.0), ("local", -2.0), ("offloading", -3.0)]
    scores = map_top_logprobs(alternatives, CANDIDATES)
    assert scores[Action.LOCAL] == pytest.approx(-2.0)
    # "offloading" is longer than the candidate word: it does not start "offload"; the candidate gets the floor.
    assert scores[Action.OFFLOAD] == pytest.approx(-3.0 - FLOOR_MARGIN)


def test_unseen_candidate_gets_a_floor_below_every_returned_logprob():
    alternatives = [("local", -0.01), ("The", -6.0), ("A", -9.0)]
    scores = map_top_logprobs(alternatives, CANDIDATES)
    assert scores[Action.OFFLOAD] < -9.0
    assert math.isfinite(scores[Action.OFFLOAD])


def test_no_candidate_among_the_alternatives_is_unparseable():
    with pytest.raises(UnparseableAnswer) as caught:
        map_top_logprobs([("The", -0.1), ("Sure", -2.0)], CANDIDATES)
    assert caught.value.answer == "The"


async def test_top_logprobs_request_and_result():
    fake = FakeEndpoint(chat_completions=chat_with([(" offload", -0.2), ("local", -1.9)]))
    scorer = fake.scorer("top_logprobs")
    assert isinstance(scorer, TopLogprobScorer)
    result = await scorer.score(PROMPT, CANDIDATES)
    assert result.path is ScoringPath.TOP_LOGPROBS and result.requests == 1
    assert result.action is Action.OFFLOAD
    assert result.scores == {Action.LOCAL: pytest.approx(-1.9), Action.OFFLOAD: pytest.approx(-0.2)}
    body = fake.bodies()[0]
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["temperature"] == 0


async def test_top_logprobs_without_logprobs_is_unsupported():
    fake = FakeEndpoint(chat_completions=chat_with(None, content="local"))
    with pytest.raises(PathUnsupported):
        await fake.scorer("top_logprobs").score(PROMPT, CANDIDATES)


# --- constrained -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "action"),
    [("local", Action.LOCAL), (" Offload.", Action.OFFLOAD), ("LOCAL\n", Action.LOCAL), ("offload", Action.OFFLOAD)],
)
def test_strict_parsing_accepts_exactly_one_candidate_word(answer, action):
    assert parse_constrained_answer(answer, CANDIDATES) is action


@pytest.mark.parametrize("answer", ["local because", "local because...", "", "maybe", "local..", "Offload!", "loc"])
def test_strict_parsing_rejects_anything_else(answer):
    with pytest.raises(UnparseableAnswer) as caught:
        parse_constrained_answer(answer, CANDIDATES)
    assert caught.value.answer == answer


async def test_constrained_scores_the_answer_zero_and_the_other_minus_infinity():
    fake = FakeEndpoint(chat_completions=chat_with(content=" Offload."))
    scorer = fake.scorer("constrained")
    assert isinstance(scorer, ConstrainedAnswerScorer)
    result = await scorer.score(PROMPT, CANDIDATES)
    assert result.scores == {Action.LOCAL: -math.inf, Action.OFFLOAD: 0.0}
    assert result.action is Action.OFFLOAD and result.path is ScoringPath.CONSTRAINED
    body = fake.bodies()[0]
    assert body["temperature"] == 0 and body["max_tokens"] <= 3 and "logprobs" not in body


async def test_constrained_free_text_raises_with_the_raw_answer():
    fake = FakeEndpoint(chat_completions=chat_with(content="local because"))
    with pytest.raises(UnparseableAnswer) as caught:
        await fake.scorer("constrained").score(PROMPT, CANDIDATES)
    assert caught.value.answer == "local because"


# --- auto --------------------------------------------------------------------------------------


async def test_auto_uses_prompt_logprobs_when_the_endpoint_has_them():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" local", -0.1)]), echo_choice(1, [*PROMPT_PIECES, (" offload", -3.0)])
        ),
        chat_completions=status(500),
    )
    scorer = fake.scorer("auto")
    result = await scorer.score(PROMPT, CANDIDATES)
    assert (result.path, result.action, result.requests) == (ScoringPath.PROMPT_LOGPROBS, Action.LOCAL, 1)
    assert result.method == "echo"  # no /tokenize here: not vLLM


async def test_auto_uses_token_ids_on_a_vllm_like_endpoint():
    toy = ToyVllm(lambda context, token: -1.0 if token == toy.id(" local") else -0.2)
    fake = FakeEndpoint(tokenize=toy.tokenize, completions=toy.completions, chat_completions=status(500))
    result = await fake.scorer("auto").score(PROMPT, CANDIDATES)
    assert (result.path, result.method, result.requests) == (ScoringPath.PROMPT_LOGPROBS, "token_ids", 1)
    assert result.scores == {Action.LOCAL: -1.0, Action.OFFLOAD: pytest.approx(-0.4)}
    assert result.action is Action.OFFLOAD


@pytest.mark.parametrize("code", [400, 404, 422])
async def test_auto_falls_back_to_top_logprobs_and_remembers_it(code):
    fake = FakeEndpoint(completions=status(code), chat_completions=chat_with([("offload", -0.1), ("local", -2.5)]))
    scorer = fake.scorer("auto")
    assert isinstance(scorer, AutoScorer)
    first = await scorer.score(PROMPT, CANDIDATES)
    assert (first.path, first.action, first.requests) == (ScoringPath.TOP_LOGPROBS, Action.OFFLOAD, 2)
    second = await scorer.score(PROMPT, CANDIDATES)
    assert (second.path, second.requests) == (ScoringPath.TOP_LOGPROBS, 1)
    assert [request.url.path for request in fake.requests] == [
        *["/tokenize"] * 3,
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]
    assert scorer.current.path is ScoringPath.TOP_LOGPROBS


async def test_auto_falls_back_to_constrained_when_no_logprobs_at_all():
    calls: list[dict] = []

    def chat(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        if body.get("logprobs"):
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return chat_with(content="local")(request)

    fake = FakeEndpoint(chat_completions=chat)  # no /completions at all: 404
    scorer = fake.scorer("auto")
    first = await scorer.score(PROMPT, CANDIDATES)
    assert (first.path, first.action, first.requests) == (ScoringPath.CONSTRAINED, Action.LOCAL, 3)
    second = await scorer.score(PROMPT, CANDIDATES)
    assert (second.path, second.requests) == (ScoringPath.CONSTRAINED, 1)
    assert len(fake.requests) == 3 + 4  # three /tokenize probes, then three paths, then the remembered one


async def test_auto_treats_an_answer_without_logprobs_as_unsupported():
    plain = {"index": 0, "text": "local", "logprobs": None}
    fake = FakeEndpoint(
        completions=completions_with(plain, {**plain, "index": 1}),
        chat_completions=chat_with([("local", -0.3)]),
    )
    result = await fake.scorer("auto").score(PROMPT, CANDIDATES)
    assert result.path is ScoringPath.TOP_LOGPROBS and result.requests == 2


async def test_auto_does_not_fall_back_or_forget_on_a_server_error():
    responses = iter([httpx.Response(503, json={"error": {"message": "overloaded"}})])

    def completions(request: httpx.Request) -> httpx.Response:
        return next(responses, None) or completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" local", -0.1)]), echo_choice(1, [*PROMPT_PIECES, (" offload", -3.0)])
        )(request)

    fake = FakeEndpoint(completions=completions, chat_completions=chat_with([("offload", -0.1)]))
    scorer = fake.scorer("auto")
    with pytest.raises(ScoringError, match="HTTP 503") as caught:
        await scorer.score(PROMPT, CANDIDATES)
    assert not isinstance(caught.value, PathUnsupported)
    assert [request.url.path for request in fake.requests].count("/v1/completions") == 1
    result = await scorer.score(PROMPT, CANDIDATES)
    assert result.path is ScoringPath.PROMPT_LOGPROBS


async def test_auto_raises_cannot_score_when_even_constrained_is_unsupported():
    fake = FakeEndpoint()  # every route 404
    with pytest.raises(CannotScore) as raised:
        await fake.scorer("auto").score(PROMPT, CANDIDATES)
    assert isinstance(raised.value.__cause__, PathUnsupported)
    assert len(fake.requests) == 3 + 3


def simulator_like() -> FakeEndpoint:
    """An endpoint like the LLM simulator: no /tokenize, completions without log-probabilities, chat text."""
    return FakeEndpoint(
        completions=lambda request: httpx.Response(
            200,
            json={"choices": [{"index": i, "text": "Sure"} for i in range(len(json.loads(request.content)["prompt"]))]},
        ),
        chat_completions=chat_with(None, content="Here is a fun fact about weekends"),
    )


async def test_auto_remembers_an_endpoint_that_cannot_score_and_retries_later():
    fake = simulator_like()
    now = [0.0]
    scorer = AutoScorer(
        OpenAIEndpoint(BASE_URL, "m", transport=fake.transport),
        SCORER_KINDS["auto"],
        retry_after_s=60.0,
        clock=lambda: now[0],
    )
    with pytest.raises(CannotScore) as first:
        await scorer.score(PROMPT, CANDIDATES)
    assert isinstance(first.value.__cause__, UnparseableAnswer)
    probed = len(fake.requests)
    assert probed == 3 + 1 + 1 + 1  # three /tokenize, echo, top_logprobs, constrained
    now[0] = 59.0
    with pytest.raises(CannotScore) as remembered:
        await scorer.score(PROMPT, CANDIDATES)
    assert remembered.value.retry_after_s == pytest.approx(1.0)
    assert len(fake.requests) == probed  # not asked again
    now[0] = 60.0
    with pytest.raises(CannotScore):
        await scorer.score(PROMPT, CANDIDATES)
    assert len(fake.requests) == 2 * probed  # every path tried again after the wait


# --- HTTP and errors ---------------------------------------------------------------------------


async def test_api_key_is_sent_as_bearer_only_when_given():
    fake = FakeEndpoint(chat_completions=chat_with(content="local"))
    await fake.scorer("constrained", api_key="sk-secret").score(PROMPT, CANDIDATES)
    await fake.scorer("constrained").score(PROMPT, CANDIDATES)
    assert fake.requests[0].headers["authorization"] == "Bearer sk-secret"
    assert "authorization" not in fake.requests[1].headers


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (status(500, "engine dead"), "HTTP 500: engine dead"),
        (lambda request: httpx.Response(200, text="<html>"), "not JSON"),
        (lambda request: httpx.Response(200, json=[1, 2]), "not a JSON object"),
        (lambda request: httpx.Response(200, json={"object": "chat.completion"}), "no 'choices'"),
        (lambda request: httpx.Response(200, json={"choices": [{"index": 0}]}), "no 'message'"),
    ],
)
async def test_errors_are_scoring_errors_with_a_clear_message(handler, match):
    fake = FakeEndpoint(chat_completions=handler)
    with pytest.raises(ScoringError, match=match):
        await fake.scorer("constrained").score(PROMPT, CANDIDATES)


async def test_transport_errors_and_timeouts_are_scoring_errors():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, name in ((refuse, "ConnectError"), (slow, "ReadTimeout")):
        fake = FakeEndpoint(completions=handler)
        with pytest.raises(ScoringError, match=name) as caught:
            await fake.scorer("auto").score(PROMPT, CANDIDATES)
        assert not isinstance(caught.value, PathUnsupported)


async def test_no_prompt_text_in_info_logs(caplog):
    fake = FakeEndpoint(completions=status(404), chat_completions=chat_with([("local", -0.1)]))
    with caplog.at_level("INFO", logger="edgecloud.decision.scoring"):
        await fake.scorer("auto", api_key="sk-secret").score(PROMPT, CANDIDATES)
    assert caplog.records
    assert all(
        "Keywords" not in record.getMessage() and "sk-secret" not in record.getMessage() for record in caplog.records
    )


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="auto"):
        make_scorer("guess", BASE_URL, "m")
