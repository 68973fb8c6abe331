"""Per-key budgets and permissions through two gateway replicas that share one Redis (issue 12)."""

from __future__ import annotations

import hashlib
import time

import httpx
import openai
import pytest

from conftest import start_gateway, start_simulator

LIMITED, THRIFTY, PLAIN = "limited-key", "thrifty-key", "plain-key"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, live_redis):
    logs = tmp_path_factory.mktemp("limits")
    keys_file = logs / "client-keys.yaml"
    keys_file.write_text(
        "keys:\n"
        f"  limited:\n    sha256: {sha256(LIMITED)}\n    requests_per_minute: 3\n    may_pin_route: false\n"
        f"  thrifty:\n    sha256: {sha256(THRIFTY)}\n    tokens_per_minute: 40\n"
    )
    edge, edge_url = start_simulator(logs, "zero")
    settings = {"edge_url": edge_url, "edge_model": "zero", "classify_prompts": "false", "api_keys": f'["{PLAIN}"]',
                "client_keys_file": str(keys_file), "limits_redis_url": live_redis.url}  # fmt: skip
    started = [start_gateway(logs, **settings) for _ in range(2)]
    try:
        yield [url for _, url in started]
    finally:
        for gateway, _ in started:
            gateway.stop()
        edge.stop()


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_a_keys_request_budget_holds_across_replicas(replicas):
    if time.time() % 60 > 55:  # the window turns over within the test: wait for the next one
        time.sleep(61 - time.time() % 60)
    for index in range(3):
        client(replicas[index % 2], LIMITED).chat.completions.create(model="edgecloud-auto", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client(replicas[1], LIMITED).chat.completions.create(model="edgecloud-auto", messages=MESSAGES)
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert refused.value.body["code"] == "rate_limit_exceeded" and "limited" in refused.value.body["message"]
    # Another key's budget is its own; a key of GATEWAY_API_KEYS has the defaults (none here).
    client(replicas[0], PLAIN).chat.completions.create(model="edgecloud-auto", messages=MESSAGES)


def test_a_keys_token_budget_counts_prompt_and_completion(replicas):
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    thrifty = client(replicas[0], THRIFTY)
    spent = 0
    with pytest.raises(openai.RateLimitError):
        for _ in range(10):
            usage = thrifty.chat.completions.create(model="edgecloud-auto", messages=MESSAGES, max_tokens=16).usage
            spent += usage.prompt_tokens + usage.completion_tokens
            time.sleep(0.2)  # the spend is recorded just after the answer
    assert 40 <= spent < 40 + 16 + 20  # refused at the first request after the budget was used up


def test_a_key_may_be_denied_the_routing_headers(replicas):
    response = httpx.post(
        f"{replicas[0]}/v1/chat/completions",
        json={"model": "edgecloud-auto", "messages": MESSAGES},
        headers={"authorization": f"Bearer {PLAIN}", "x-route": "edge"},
    )
    assert response.status_code == 200  # by default a key may pin
    pinned = httpx.post(
        f"{replicas[1]}/v1/chat/completions",
        json={"model": "zero", "messages": MESSAGES},
        headers={"authorization": f"Bearer {LIMITED}"},
    )
    assert pinned.status_code == 403 and pinned.json()["error"]["code"] == "header_not_permitted"
    wrong = httpx.post(f"{replicas[0]}/v1/chat/completions", json={"model": "edgecloud-auto", "messages": MESSAGES},
                       headers={"authorization": f"Bearer {sha256(LIMITED)}"})  # fmt: skip
    assert wrong.status_code == 401  # the file's hash is not a key
