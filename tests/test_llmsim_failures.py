"""Failure injection: seeded draws, and what a client sees over real HTTP at rate 1.0."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import openai
import pytest

from edgecloud.core.errors import RateLimitError, UpstreamUnavailableError
from edgecloud.llmsim.failures import FailureInjector, FailureRates
from servers import ServerProcess

CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}


def test_injector_draws_are_seeded_and_follow_the_rates() -> None:
    def outcomes(seed: int) -> list[str]:
        injector = FailureInjector(FailureRates(rate_limited=0.2, unavailable=0.3), random.Random(seed))
        results = []
        for _ in range(2000):
            try:
                injector.check_admission()
                results.append("ok")
            except RateLimitError:
                results.append("429")
            except UpstreamUnavailableError:
                results.append("503")
        return results

    first = outcomes(1)
    assert first == outcomes(1)
    assert first.count("429") / 2000 == pytest.approx(0.2, abs=0.03)
    assert first.count("503") / 2000 == pytest.approx(0.3, abs=0.03)


def test_disconnect_point_leaves_at_least_one_token_out() -> None:
    injector = FailureInjector(FailureRates(disconnect=1.0), random.Random(0))
    cuts = [injector.disconnect_after(10) for _ in range(500)]
    assert all(cut is not None and 1 <= cut <= 9 for cut in cuts)
    assert injector.disconnect_after(1) == 0
    assert FailureInjector(FailureRates(), random.Random(0)).disconnect_after(10) is None
    with pytest.raises(ValueError, match="must be in"):
        FailureRates(disconnect=1.5)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("llmsim-failures")
    base = {"LLMSIM_PORT": "{port}", "LLMSIM_MODEL": "sim", "LLMSIM_LOG_LEVEL": "warning"}
    variants = {
        "429": {"LLMSIM_PROFILE": "zero", "LLMSIM_FAIL_429_RATE": "1.0"},
        "503": {"LLMSIM_PROFILE": "zero", "LLMSIM_FAIL_503_RATE": "1.0"},
        "cut": {"LLMSIM_PROFILE": "llama-3.1-8b-h100", "LLMSIM_FAIL_DISCONNECT_RATE": "1.0"},
    }
    started = {
        name: ServerProcess("edgecloud.llmsim", env={**base, **env}, log_path=logs / f"{name}.log").start()
        for name, env in variants.items()
    }
    try:
        for process in started.values():
            process.wait_ready()
        yield started
    finally:
        for process in started.values():
            process.stop()


def test_rate_limit_injection_is_a_429_with_an_openai_body(servers: dict[str, ServerProcess]) -> None:
    response = httpx.post(servers["429"].base_url + "/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    client = openai.OpenAI(base_url=servers["429"].base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]


def test_unavailable_injection_is_a_503_with_an_openai_body(servers: dict[str, ServerProcess]) -> None:
    response = httpx.post(servers["503"].base_url + "/v1/completions", json={"model": "sim", "prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "overloaded"
    client = openai.OpenAI(base_url=servers["503"].base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="sim", prompt="x")


def test_disconnect_injection_cuts_the_stream_before_done(servers: dict[str, ServerProcess]) -> None:
    url = servers["cut"].base_url + "/v1/chat/completions"
    received = b""
    body = {**CHAT, "stream": True}
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():  # the error comes while reading
            received += chunk
    assert b"[DONE]" not in received
    assert 1 <= received.count(b'"content":') - 1 < 40  # some tokens arrived (the first event is the role)
    complete = httpx.post(url, json=CHAT)  # a request that does not stream is not cut
    assert complete.status_code == 200
    assert complete.json()["usage"]["completion_tokens"] == 40
