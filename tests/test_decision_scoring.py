"""Scoring candidates over the OpenAI API: each path's parsing, auto fallback, errors (fake endpoint seam).

The same scorers against real vLLM: ``test_decision_vllm.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import httpx
import pytest

from edgecloud.decision.keywords import Action
from edgecloud.decision.prompt import candidate_completions
from edgecloud.decision.scoring import (
    FLOOR_MARGIN,
    AutoScorer,
    ConstrainedAnswerScorer,
    PathUnsupported,
    PromptLogprobScorer,
    ScoringError,
    ScoringPath,
    TopLogprobScorer,
    UnparseableAnswer,
    candidate_token_span,
    common_start,
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
        route = request.url.path.removeprefix("/v1/").replace("/", "_")
        handler = self.routes.get(route)
        if handler is None:
            return httpx.Response(404, json={"error": {"message": "Not Found"}})
        return handler(request)

    def bodies(self) -> list[dict]:
        return [json.loads(request.content) for request in self.requests]

    def scorer(self, kind: str, api_key: str | None = None):
        return make_scorer(kind, BASE_URL, "test-model", api_key=api_key, timeout_s=5.0, transport=self.transport)


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


# --- prompt_logprobs ---------------------------------------------------------------------------


async def test_prompt_logprobs_sums_the_candidate_tokens_in_one_batched_request():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES, (" local", -0.7)]),
            # " offload" split into three tokens: all of them count.
            echo_choice(1, [*PROMPT_PIECES, (" off", -0.3), ("lo", -0.2), ("ad", -0.1)]),
        )
    )
    scorer = fake.scorer("prompt_logprobs")
    assert isinstance(scorer, PromptLogprobScorer)
    result = await scorer.score(PROMPT, CANDIDATES)
    await scorer.aclose()

    assert result.path is ScoringPath.PROMPT_LOGPROBS
    assert result.requests == 1 and len(fake.requests) == 1
    assert result.scores[Action.LOCAL] == pytest.approx(-0.7)
    assert result.scores[Action.OFFLOAD] == pytest.approx(-0.6)
    assert result.action is Action.OFFLOAD
    body = fake.bodies()[0]
    assert body["prompt"] == [PROMPT + " local", PROMPT + " offload"]
    assert body["echo"] is True and body["max_tokens"] == 0 and body["temperature"] == 0
    assert body["logprobs"] >= 0 and body["model"] == "test-model"


async def test_prompt_logprobs_choices_are_matched_by_index_not_order():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(1, [*PROMPT_PIECES, (" offload", -5.0)]),
            echo_choice(0, [*PROMPT_PIECES, (" local", -1.0)]),
        )
    )
    result = await fake.scorer("prompt_logprobs").score(PROMPT, CANDIDATES)
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


def test_common_start_moves_back_to_where_a_merge_makes_the_sequences_differ():
    merged = ["Keywords", " Decision", ": local"]
    unmerged = ["Keywords", " Decision", ":", " offload"]
    firsts = [candidate_token_span(merged, "Keywords Decision:", " local")[0], 3]
    # Scored from index 2 on in both: the same text (": local" vs ": offload") after the same tokens.
    assert common_start([merged, unmerged], firsts) == 2


def test_common_start_keeps_a_shared_first_candidate_token():
    # Candidates sharing their first token (" off" of " off" and " offload"): that token is scored in both.
    assert common_start([["a", ":", " off"], ["a", ":", " off", "load"]], [2, 2]) == 2


async def test_prompt_logprobs_with_a_merge_scores_the_same_span_for_every_candidate():
    fake = FakeEndpoint(
        completions=completions_with(
            echo_choice(0, [*PROMPT_PIECES[:-1], (": local", -4.0)]),
            echo_choice(1, [*PROMPT_PIECES, (" offload", -1.0)]),
        )
    )
    result = await fake.scorer("prompt_logprobs").score(PROMPT, CANDIDATES)
    assert result.scores[Action.LOCAL] == pytest.approx(-4.0)
    assert result.scores[Action.OFFLOAD] == pytest.approx(-0.2 - 1.0)


async def test_prompt_logprobs_without_logprobs_in_the_answer_is_unsupported():
    choice = {"index": 0, "text": PROMPT + " local", "logprobs": None}
    fake = FakeEndpoint(completions=completions_with(choice, {**choice, "index": 1}))
    with pytest.raises(PathUnsupported):
        await fake.scorer("prompt_logprobs").score(PROMPT, CANDIDATES)


async def test_prompt_logprobs_with_a_missing_choice_is_malformed():
    fake = FakeEndpoint(completions=completions_with(echo_choice(0, [*PROMPT_PIECES, (" local", -0.7)])))
    with pytest.raises(ScoringError, match="2 choice"):
        await fake.scorer("prompt_logprobs").score(PROMPT, CANDIDATES)


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


@pytest.mark.parametrize("answer", ["local because", "local because...", "", "maybe", "local.." , "Offload!", "loc"])
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
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]
    assert scorer.path is ScoringPath.TOP_LOGPROBS


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
    assert len(fake.requests) == 4


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
    assert len(fake.requests) == 1
    result = await scorer.score(PROMPT, CANDIDATES)
    assert result.path is ScoringPath.PROMPT_LOGPROBS


async def test_auto_raises_when_even_constrained_is_unsupported():
    fake = FakeEndpoint()  # every route 404
    with pytest.raises(PathUnsupported):
        await fake.scorer("auto").score(PROMPT, CANDIDATES)
    assert len(fake.requests) == 3


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
    assert all("Keywords" not in record.getMessage() and "sk-secret" not in record.getMessage() for record in caplog.records)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="auto"):
        make_scorer("guess", BASE_URL, "m")
