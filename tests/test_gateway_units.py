"""Gateway pieces without a network: timing definitions, routing, error mapping, upstream payloads."""

from __future__ import annotations

import json

import pytest

from edgecloud.core.errors import (
    BadRequestError,
    ModelNotFoundError,
    RelayedError,
    UpstreamError,
    UpstreamUnavailableError,
)
from edgecloud.core.protocol import ChatCompletionRequest, CompletionRequest
from edgecloud.core.sse import SSEEventSplitter, carries_token, carries_usage
from edgecloud.gateway.relay import StreamState, error_from_upstream
from edgecloud.gateway.routing import RouteSelector
from edgecloud.gateway.settings import GatewaySettings, Route
from edgecloud.gateway.timing import RequestTiming


class StepClock:
    """A clock that returns the times it is given, one per call."""

    def __init__(self, *times: float):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def test_tpot_follows_vllm_definition():
    # arrived 0, tokens at 0.5, 0.6, 0.8, 0.9: TTFT 0.5, TPOT (0.9 - 0.5) / (4 - 1)
    timing = RequestTiming(clock=StepClock(0.0, 0.5, 0.6, 0.8, 0.9, 1.0))
    for _ in range(4):
        timing.mark_tokens()
    timing.mark_finished()
    assert timing.ttft == pytest.approx(0.5)
    assert timing.tpot == pytest.approx(0.4 / 3)
    assert timing.inter_token_gaps == pytest.approx([0.1, 0.2, 0.1])
    assert timing.e2e == pytest.approx(1.0)


def test_tpot_uses_backend_token_count_when_chunks_carry_several_tokens():
    timing = RequestTiming(clock=StepClock(0.0, 1.0, 2.0, 3.0))
    timing.mark_tokens()
    timing.mark_tokens()
    timing.completion_tokens = 11
    assert timing.tpot == pytest.approx(1.0 / 10)


def test_tpot_undefined_for_a_single_token():
    timing = RequestTiming(clock=StepClock(0.0, 1.0))
    timing.mark_tokens()
    assert timing.tpot is None


def test_route_selection_precedence():
    routes = RouteSelector(GatewaySettings(edge_model="small", cloud_model="large", default_route=Route.CLOUD))
    assert routes.select("edgecloud-auto", None).route is Route.CLOUD
    assert routes.select("small", None).route is Route.EDGE
    assert routes.select("large", None).route is Route.CLOUD
    assert routes.select("large", "Edge").route is Route.EDGE
    with pytest.raises(ModelNotFoundError):
        routes.select("unknown", None)
    with pytest.raises(BadRequestError):
        routes.select("small", "mars")


def test_models_lists_auto_and_backends():
    ids = [card.id for card in RouteSelector(GatewaySettings(edge_model="a", cloud_model="b")).models()]
    assert ids == ["edgecloud-auto", "a", "b"]


def test_backend_urls_must_be_http():
    with pytest.raises(ValueError, match="http"):
        GatewaySettings(edge_url="ftp://edge")


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (400, {"error": {"message": "too long", "type": "BadRequestError", "param": "messages", "code": 400}},
         RelayedError, 400),
        (404, {"object": "error", "message": "no such model", "type": "NotFoundError", "code": 404}, RelayedError, 404),
        (429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, RelayedError, 429),
        (503, {"error": {"message": "overloaded", "type": "x"}}, UpstreamUnavailableError, 503),
        (500, {"detail": "boom"}, UpstreamError, 502),
        (401, {"error": {"message": "bad key"}}, UpstreamError, 502),
    ],
)  # fmt: skip
def test_upstream_errors_map_to_openai_statuses(status, body, expected, code):
    routes = RouteSelector(GatewaySettings())
    error = error_from_upstream(routes.backends[Route.EDGE], status, json.dumps(body).encode())
    assert isinstance(error, expected)
    assert error.status == code
    assert error.to_response().error.message


def test_upstream_error_that_is_not_json_still_maps():
    routes = RouteSelector(GatewaySettings())
    error = error_from_upstream(routes.backends[Route.CLOUD], 502, b"<html>bad gateway</html>")
    assert error.status == 502
    assert "cloud" in error.message


def test_stream_always_asks_upstream_for_usage():
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    payload = request.to_upstream_payload("backend-model")
    assert payload["model"] == "backend-model"
    assert payload["stream_options"] == {"include_usage": True}
    assert not request.include_usage


def test_upstream_payload_keeps_unknown_fields():
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logit_bias": {"1": 2}, "top_k": 5})
    payload = request.to_upstream_payload("b")
    assert payload["logit_bias"] == {"1": 2}
    assert payload["top_k"] == 5
    assert "stream_options" not in payload


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
        {"model": "m", "messages": "hello"},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "prompt": []},
    ],
)
def test_protocol_rejects_bad_requests(body):
    model = ChatCompletionRequest if "messages" in body else CompletionRequest
    with pytest.raises(ValueError):
        model.model_validate(body)


@pytest.mark.parametrize(
    ("chunk", "token", "usage"),
    [
        (b'{"choices":[{"delta":{"content":"Hi"}}]}', True, False),
        (b'{"choices":[{"delta":{"role":"assistant","content":""}}]}', False, False),
        (b'{"choices":[{"delta":{},"finish_reason":"stop"}]}', False, False),
        (b'{"choices":[{"text": " the"}], "usage": null}', True, False),
        (b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3}}', False, True),
    ],
)
def test_chunks_are_classified_without_parsing(chunk, token, usage):
    assert carries_token(chunk) is token
    assert carries_usage(chunk) is usage


def test_sse_splitter_keeps_partial_events_for_the_next_read():
    splitter = SSEEventSplitter()
    assert splitter.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'data: {"a":1}']
    assert splitter.feed(b":2}\r\n\r\ndata: [DONE]\n\n") == [b'data: {"b":2}', b"data: [DONE]"]
    assert splitter.feed(b"\n\n") == []


def test_stream_state_times_a_batch_of_tokens_once_and_drops_unasked_usage():
    timing = RequestTiming(clock=StepClock(0.0, 1.0))
    state = StreamState(timing, client_wants_usage=False)
    events = [
        b'data: {"choices":[{"delta":{"content":"a"}}]}',
        b'data: {"choices":[{"delta":{"content":"b"}}]}',
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}',
        b"data: [DONE]",
    ]
    forwarded = state.take(events)
    assert b"usage" not in forwarded
    assert forwarded.endswith(b"data: [DONE]\n\n")
    assert forwarded.count(b"\n\n") == 3
    assert state.done and timing.token_chunks == 2 and timing.output_tokens == 2
    assert timing.prompt_tokens == 4
    assert timing.inter_token_gaps == []
