"""The decision service as a real process, with real Redis and the real vLLM edge as decision LLM."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from conftest import start_service
from edgecloud.testbed.processes import free_port
from redis_server import RedisServer
from servers import ServerProcess

pytestmark = pytest.mark.vllm

DECIDE = {"service_type": "summarization", "estimated_tokens": 300}
EXPERIENCE = {**DECIDE, "decision": "local", "transmission_s": 0.05, "generation_s": 4.2, "quality_met": True}


def start_decision_service(log_dir, redis_url: str, llm_url: str, **settings: str) -> ServerProcess:
    defaults = {"llm_model": "smollm2-135m-instruct", "epsilon": "constant:0", "admin_api_key": "test-admin"}
    return start_service("decision", log_dir, redis_url=redis_url, llm_url=llm_url, **{**defaults, **settings})


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("decision-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def decision(vllm_testbed, redis_server, tmp_path_factory):
    # A cold 1,500-token prefill takes ~30 s on the CPU testbed: wait for the LLM rather than fall back.
    server = start_decision_service(
        tmp_path_factory.mktemp("decision"), redis_server.url, vllm_testbed.edge_url, llm_timeout_s="600"
    )
    yield server
    server.stop()


def test_uncached_decision_is_scored_by_the_real_model_then_cached(decision):
    first = httpx.post(f"{decision.base_url}/v1/decisions", json=DECIDE, timeout=700).json()
    assert first["source"] == "llm"
    assert first["scoring_path"] == "prompt_logprobs"
    assert set(first["scores"]) == {"local", "offload"}
    assert all(math.isfinite(score) and score < 0 for score in first["scores"].values())
    assert first["decision"] == max(first["scores"], key=first["scores"].get)
    second = httpx.post(f"{decision.base_url}/v1/decisions", json=DECIDE, timeout=700).json()
    assert (second["source"], second["decision"]) == ("cache", first["decision"])


def test_experiences_land_in_redis_and_change_the_version(decision, redis_server):
    before = httpx.get(f"{decision.base_url}/v1/pool").json()["version"]
    recorded = httpx.post(f"{decision.base_url}/v1/experiences", json=EXPERIENCE).json()
    assert recorded["outcome"] in ("added", "replaced") and not recorded["buffered"]
    pool = httpx.get(f"{decision.base_url}/v1/pool").json()
    assert pool["version"] == before + 1
    assert any(e["service_type"] == "summarization" and e["decision"] == "local" for e in pool["examples"])
    prompt = httpx.get(f"{decision.base_url}/v1/prompt", params=DECIDE).json()["prompt"]
    assert "Keywords: (summarization, 129-512) | Decision: local" in prompt


def test_redis_down_keeps_decisions_flowing_and_buffers_experiences(decision, redis_server):
    httpx.post(f"{decision.base_url}/v1/decisions", json=DECIDE, timeout=700)
    redis_server.stop()
    try:
        answer = httpx.post(f"{decision.base_url}/v1/decisions", json=DECIDE, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["source"] in ("cache", "llm", "fallback")
        buffered = httpx.post(f"{decision.base_url}/v1/experiences", json={**EXPERIENCE, "generation_s": 1.0})
        assert buffered.status_code == 200 and buffered.json()["buffered"]
        assert buffered_gauge(decision) == 1  # was never set: it read 0 whatever waited
    finally:
        redis_server.start()
    # After its retry interval the service tries Redis again and flushes the buffer in order: the
    # better example (1.0 s) recorded while Redis was down is then in the pool.
    deadline = time.monotonic() + 15.0
    while True:
        pool = httpx.get(f"{decision.base_url}/v1/pool").json()
        example = next(e for e in pool["examples"] if e["service_type"] == "summarization")
        if example["generation_s"] == 1.0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the buffered experience never reached Redis: {pool}")
        time.sleep(0.2)
    later = httpx.post(f"{decision.base_url}/v1/experiences", json={**EXPERIENCE, "generation_s": 9.0}).json()
    assert (later["outcome"], later["buffered"]) == ("kept_existing", False)
    assert buffered_gauge(decision) == 0


def buffered_gauge(decision) -> float:
    line = next(
        line
        for line in httpx.get(f"{decision.base_url}/metrics").text.splitlines()
        if line.startswith("edgecloud_decision_buffered_experiences ")
    )
    return float(line.rsplit(" ", 1)[1])


def test_decision_llm_down_falls_back(redis_server, tmp_path):
    dead_llm = f"http://127.0.0.1:{free_port()}/v1"
    server = start_decision_service(tmp_path, redis_server.url, dead_llm, llm_timeout_s="1.0")
    try:
        answer = httpx.post(f"{server.base_url}/v1/decisions", json={**DECIDE, "service_type": "math"}).json()
        assert (answer["source"], answer["decision"]) == ("fallback", "offload")
        assert answer["latency_ms"] < 1500
    finally:
        server.stop()
