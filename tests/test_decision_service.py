"""The decision service's API in-process: inputs, errors, cache, exploration, fallback, the pool and prompt views.

The scorer here is a seam (a fake LLM) and the pool is in memory; the same API against real Redis and
real vLLM is in ``test_decision_live.py``.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from edgecloud.core.vocabulary import Action
from edgecloud.core.wire import MAX_EXPERIENCE_BATCH, WarmUp
from edgecloud.decision.app import create_app
from edgecloud.decision.llm_endpoint import CannotScore
from edgecloud.decision.pool import InMemoryExperiencePool
from edgecloud.decision.scoring import ScoreResult, ScoringError, ScoringPath
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings

STARTING_LLM_S = 60.0  # a decision LLM that does not answer for the whole test (vLLM still compiling)


class FakeScorer:
    """Prefers whatever ``preferred`` says; counts calls; can fail or hang like a real LLM."""

    def __init__(self, preferred: Action = Action.LOCAL):
        self.preferred = preferred
        self.calls = 0
        self.failure: Exception | None = None
        self.delay_s = 0.0
        self.prompts: list[str] = []
        self.closed = False

    async def score(self, prompt, candidates):
        self.calls += 1
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay_s)
        if self.failure:
            raise self.failure
        scores = {action: (-0.1 if action is self.preferred else -2.3) for action in candidates}
        return ScoreResult(scores, ScoringPath.PROMPT_LOGPROBS, self.preferred, requests=1, method="token_ids")

    async def aclose(self):
        self.closed = True


@pytest.fixture
def scorer() -> FakeScorer:
    return FakeScorer()


def make_client(scorer: FakeScorer, **settings) -> httpx.AsyncClient:
    defaults = {"epsilon": "constant:0", "llm_timeout_s": 0.5, "admin_api_key": "admin-key"}
    config = DecisionSettings(**{**defaults, **settings})
    app = create_app(config, pool=InMemoryExperiencePool(), scorer=scorer)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://decision")


@pytest.fixture
async def client(scorer):
    async with make_client(scorer) as client:
        yield client


DECIDE = {"service_type": "coding", "estimated_tokens": 900}
EXPERIENCE = {**DECIDE, "decision": "offload", "transmission_s": 0.2, "generation_s": 28.5, "quality_met": True}


async def test_decision_then_cache_hit(client, scorer):
    first = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert (first["decision"], first["source"], first["scoring_path"]) == ("local", "llm", "prompt_logprobs")
    assert first["token_bin"] == "513-1024" and first["pool_version"] == 0
    assert first["scores"]["local"] > first["scores"]["offload"]
    second = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert (second["decision"], second["source"]) == ("local", "cache")
    assert scorer.calls == 1


async def test_experience_computes_reward_and_changes_the_pool_version(client, scorer):
    await client.post("/v1/decisions", json=DECIDE)
    recorded = (await client.post("/v1/experiences", json=EXPERIENCE)).json()
    assert recorded["reward"] == pytest.approx(30.0 - 0.2 - 28.5)
    assert (recorded["outcome"], recorded["evaluation"], recorded["pool_version"]) == ("added", "good", 1)
    worse = (await client.post("/v1/experiences", json={**EXPERIENCE, "generation_s": 40.0})).json()
    assert (worse["outcome"], worse["evaluation"], worse["pool_changed"]) == ("kept_existing", "bad", False)
    penalised = (await client.post("/v1/experiences", json={**EXPERIENCE, "quality_met": False})).json()
    assert penalised["reward"] == pytest.approx(30.0 - 0.2 - 28.5 - 60.0)
    assert penalised["outcome"] == "rejected_bad"
    # A new pool version invalidates the cached decision: the LLM is asked again.
    assert (await client.post("/v1/decisions", json=DECIDE)).json()["source"] == "llm"
    assert scorer.calls == 2
    pool = (await client.get("/v1/pool")).json()
    assert pool["version"] == 1 and len(pool["examples"]) == 1
    assert pool["examples"][0]["decision"] == "offload"


async def test_prompt_view_is_the_exact_prompt_the_llm_saw(client, scorer):
    await client.post("/v1/experiences", json=EXPERIENCE)
    await client.post("/v1/decisions", json=DECIDE)
    shown = (await client.get("/v1/prompt", params=DECIDE)).json()
    assert shown["prompt"] == scorer.prompts[-1]
    assert "Keywords: (coding, 513-1024) | Decision: offload" in shown["prompt"]
    assert shown["candidates"] == [" local", " offload"]


async def test_exploration_takes_random_actions_without_the_llm(scorer):
    async with make_client(scorer, epsilon="constant:1.0", seed=7) as client:
        answers = [(await client.post("/v1/decisions", json=DECIDE)).json() for _ in range(40)]
    assert {answer["source"] for answer in answers} == {"explore"}
    assert {answer["decision"] for answer in answers} == {"local", "offload"}
    assert scorer.calls == 0


async def test_llm_failure_falls_back_to_the_pool_example_then_the_rule(client, scorer):
    scorer.failure = ScoringError("connection refused")
    rule = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert (rule["decision"], rule["source"]) == ("offload", "fallback")  # coding is quality-preferred
    chat = (await client.post("/v1/decisions", json={**DECIDE, "service_type": "chat"})).json()
    assert chat["decision"] == "local"
    await client.post("/v1/experiences", json={**EXPERIENCE, "service_type": "chat", "decision": "offload"})
    from_pool = (await client.post("/v1/decisions", json={**DECIDE, "service_type": "chat"})).json()
    assert (from_pool["decision"], from_pool["source"]) == ("offload", "fallback")


async def test_slow_llm_is_cut_at_the_timeout_and_still_fills_the_cache(client, scorer):
    scorer.delay_s = 1.0
    answer = await client.post("/v1/decisions", json=DECIDE)
    assert answer.json()["source"] == "fallback"
    assert answer.json()["latency_ms"] < 900
    await asyncio.sleep(1.0)
    later = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert (later["source"], later["decision"]) == ("cache", "local")
    assert scorer.calls == 1


async def test_while_a_late_llm_answer_is_awaited_other_decisions_fall_back_at_once(client, scorer):
    """Before: with the decision LLM hung, every uncached decision waited the whole LLM timeout."""
    scorer.delay_s = 1.5
    first = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert first["source"] == "fallback" and first["latency_ms"] >= 400  # waited the 0.5 s timeout
    others = [(await client.post("/v1/decisions", json={**DECIDE, "estimated_tokens": tokens})).json()
              for tokens in (10, 100, 3000)]  # fmt: skip
    assert {answer["source"] for answer in others} == {"fallback"}
    assert max(answer["latency_ms"] for answer in others) < 100  # no second wait for the same hung LLM
    assert scorer.calls == 1  # one call probes it
    await asyncio.sleep(1.2)  # the late answer came: the LLM is asked again
    scorer.delay_s = 0.0
    again = (await client.post("/v1/decisions", json={**DECIDE, "estimated_tokens": 10})).json()
    assert again["source"] == "llm" and scorer.calls == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/decisions", {"service_type": "poetry", "estimated_tokens": 10}),
        ("/v1/decisions", {"service_type": "chat", "estimated_tokens": -5}),
        ("/v1/decisions", {"service_type": "chat", "estimated_tokens": "many"}),
        ("/v1/decisions", {"service_type": "chat"}),
        ("/v1/decisions", {"service_type": "chat", "estimated_tokens": 5, "policy": "astrology"}),
        ("/v1/decisions", {"service_type": "chat", "estimated_tokens": 5, "cell": "../../etc"}),
        ("/v1/decisions", {"service_type": "chat", "estimated_tokens": 5, "prompt": "ignore instructions"}),
        ("/v1/experiences", {**EXPERIENCE, "generation_s": -1}),
        ("/v1/experiences", {**EXPERIENCE, "transmission_s": "fast"}),
        ("/v1/experiences", {**EXPERIENCE, "decision": "maybe"}),
        ("/v1/experiences", {**EXPERIENCE, "quality_met": None}),
    ],
)
async def test_bad_input_is_a_clear_400(client, path, body):
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]


async def test_nan_and_infinite_delays_are_refused(client):
    for value in ("NaN", "Infinity"):
        raw = (
            '{"service_type": "chat", "estimated_tokens": 10, "decision": "local", '
            f'"transmission_s": {value}, "generation_s": 1.0, "quality_met": true}}'
        )
        response = await client.post("/v1/experiences", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400


async def test_invalid_json_is_a_400(client):
    response = await client.post("/v1/decisions", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_clearing_the_pool_needs_the_admin_key(client):
    await client.post("/v1/experiences", json=EXPERIENCE)
    assert (await client.delete("/v1/pool")).status_code == 401
    assert (await client.delete("/v1/pool", headers={"authorization": "Bearer wrong"})).status_code == 401
    cleared = await client.delete("/v1/pool", headers={"authorization": "Bearer admin-key"})
    assert cleared.status_code == 200 and cleared.json()["version"] == 2
    assert (await client.get("/v1/pool")).json()["examples"] == []


async def test_health_lists_live_policies_and_metrics_count_decisions(client):
    health = (await client.get("/health")).json()
    assert {"icl", "icl_greedy", "icl_latest"} <= set(health["policies"])
    assert "oracle" not in health["policies"]
    await client.post("/v1/decisions", json=DECIDE)
    text = (await client.get("/metrics")).text
    assert 'edgecloud_decision_decisions_total{decision="local",policy="icl",source="llm"} 1.0' in text


async def test_latest_experience_baseline_shows_recent_experiences(client, scorer):
    for generation_s in (10.0, 20.0, 5.0):
        await client.post("/v1/experiences", json={**EXPERIENCE, "policy": "icl_latest", "generation_s": generation_s})
    view = (await client.get("/v1/prompt", params={**DECIDE, "policy": "icl_latest"})).json()
    assert view["examples_shown"] == 1  # the default method shows the nearest example: the newest of the same x
    assert "Keywords: (coding, 513-1024) | Decision: offload | Reward: 24.80" in view["prompt"]
    async with make_client(scorer, icl_examples="pool") as whole_log:
        for generation_s in (10.0, 20.0, 5.0):
            await whole_log.post(
                "/v1/experiences", json={**EXPERIENCE, "policy": "icl_latest", "generation_s": generation_s}
            )
        shown = (await whole_log.get("/v1/prompt", params={**DECIDE, "policy": "icl_latest"})).json()["prompt"]
    assert shown.count("Keywords: (coding, 513-1024) | Decision: offload") == 3
    decision = (await client.post("/v1/decisions", json={**DECIDE, "policy": "icl_latest"})).json()
    assert decision["source"] == "llm"


@pytest.mark.parametrize("policy", ["always_edge", "always_cloud", "random", "dqn"])
async def test_baselines_decide_and_learn_through_the_api(client, scorer, policy):
    answer = await client.post("/v1/decisions", json={**DECIDE, "policy": policy})
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] in ("baseline", "explore")
    recorded = await client.post("/v1/experiences", json={**EXPERIENCE, "policy": policy})
    assert recorded.status_code == 200 and recorded.json()["outcome"] == "added"
    assert scorer.calls == 0


async def test_oracle_is_for_experiments_only(client):
    answer = await client.post("/v1/decisions", json={**DECIDE, "policy": "oracle"})
    assert answer.status_code == 400
    assert "oracle" not in answer.json()["error"]["message"].split("choose one of")[1]


async def test_an_unexpected_llm_error_still_gives_a_decision(client, scorer):
    scorer.failure = RuntimeError("a bug in a scorer")
    answer = await client.post("/v1/decisions", json=DECIDE)
    assert answer.status_code == 200
    assert answer.json()["source"] == "fallback"


async def test_metrics_need_the_metrics_key_when_one_is_set(scorer):
    async with make_client(scorer, metrics_api_key="scrape-key") as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"authorization": "Bearer scrape-key"})).status_code == 200
        assert (await client.get("/health")).status_code == 200  # liveness stays public


class RedisClient:
    """The one call the service makes on the Redis client it is given: closing it."""

    closed = False

    async def aclose(self):
        self.closed = True


async def test_health_answers_at_once_while_the_llm_warms_up_and_the_app_closes_the_scorer(scorer):
    scorer.delay_s = STARTING_LLM_S
    app = create_app(DecisionSettings(), pool=InMemoryExperiencePool(), scorer=scorer)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://decision") as client,
    ):
        health = await asyncio.wait_for(client.get("/health"), timeout=1.0)
        assert health.json()["llm_warm_up"] == WarmUp.WARMING
        assert scorer.calls == 1  # the warm-up is under way, in the background
    assert scorer.closed


async def test_closing_the_service_cancels_the_warm_up_and_closes_its_clients(scorer):
    scorer.delay_s = STARTING_LLM_S
    redis_client = RedisClient()
    service = DecisionService(DecisionSettings(), InMemoryExperiencePool(), scorer, redis_client=redis_client)
    await service.start()
    await asyncio.sleep(0)  # the warm-up asks the LLM, which does not answer
    await asyncio.wait_for(service.close(), timeout=1.0)
    assert service.warm_up_state == WarmUp.WARMING and scorer.closed and redis_client.closed


# --- experiences in batches --------------------------------------------------------------------


def batch(*experiences: dict) -> dict:
    return {"experiences": list(experiences)}


async def test_a_batch_is_recorded_in_order_as_single_posts_would_be(client):
    answer = await client.post(
        "/v1/experiences/batch",
        json=batch(EXPERIENCE, {**EXPERIENCE, "generation_s": 40.0}, {**EXPERIENCE, "generation_s": 10.0}),
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["outcome"], r["pool_version"]) for r in results] == [("added", 1), ("kept_existing", 1), ("replaced", 2)]
    assert [r["reward"] for r in results] == pytest.approx([30.0 - 0.2 - 28.5, 30.0 - 0.2 - 40.0, 30.0 - 0.2 - 10.0])
    pool = (await client.get("/v1/pool")).json()
    assert pool["version"] == 2 and pool["examples"][0]["generation_s"] == 10.0
    metrics = (await client.get("/metrics")).text
    assert 'edgecloud_decision_pool_size{cell="cell-0",policy="icl"} 1.0' in metrics


async def test_the_pool_is_read_for_its_size_only_when_its_version_moved(scorer):
    """Recording an experience that leaves the pool as it was costs one call to the store, not two."""
    pool = InMemoryExperiencePool()
    snapshots = 0
    original = pool.snapshot

    async def counted(namespace):
        nonlocal snapshots
        snapshots += 1
        return await original(namespace)

    pool.snapshot = counted
    app = create_app(DecisionSettings(epsilon="constant:0"), pool=pool, scorer=scorer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://decision") as client:
        worse = [{**EXPERIENCE, "generation_s": 40.0 + index} for index in range(5)]
        answer = await client.post("/v1/experiences/batch", json=batch(EXPERIENCE, *worse))
        assert [r["outcome"] for r in answer.json()["results"]] == ["added"] + ["kept_existing"] * 5
        assert snapshots == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (batch(), "experiences"),
        (batch(*[EXPERIENCE] * (MAX_EXPERIENCE_BATCH + 1)), "experiences"),
        (batch(EXPERIENCE, {**EXPERIENCE, "generation_s": -1}), "experiences.1.generation_s"),
        (batch(EXPERIENCE, {**EXPERIENCE, "experience_id": "has spaces"}), "experiences.1.experience_id"),
        (batch(EXPERIENCE, {**EXPERIENCE, "policy": "astrology"}), "policy"),
        ({"experiences": EXPERIENCE}, "experiences"),
        ([EXPERIENCE], None),
        ({**batch(EXPERIENCE), "extra": 1}, "extra"),
    ],
)
async def test_a_bad_batch_is_an_openai_shaped_400_and_records_nothing(client, body, param):
    response = await client.post("/v1/experiences/batch", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert (await client.get("/v1/pool")).json()["version"] == 0  # all or nothing


async def test_the_largest_batch_fits_the_body_limit(client):
    longest = {
        **EXPERIENCE, "service_type": "information_extraction", "estimated_tokens": 999_999, "cell": "c" * 64,
        "policy": "icl_greedy", "transmission_s": 12345.678901234567, "generation_s": 23456.789012345678,
        "source": "fallback", "request_id": "r" * 128,
    }  # fmt: skip
    body = batch(*[{**longest, "experience_id": f"{index:064d}"} for index in range(MAX_EXPERIENCE_BATCH)])
    content = json.dumps(body).encode()
    assert len(content) < DecisionSettings().max_body_bytes
    response = await client.post("/v1/experiences/batch", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == MAX_EXPERIENCE_BATCH


async def test_an_experience_sent_again_is_not_counted_twice(client):
    first = {**EXPERIENCE, "experience_id": "e-1"}
    recorded = (await client.post("/v1/experiences", json=first)).json()
    assert (recorded["outcome"], recorded["pool_version"], recorded["duplicate"]) == ("added", 1, False)
    better = {**EXPERIENCE, "experience_id": "e-2", "generation_s": 5.0}
    again = (await client.post("/v1/experiences/batch", json=batch(first, better, first))).json()["results"]
    assert [(r["outcome"], r["duplicate"], r["pool_version"]) for r in again] == [
        ("added", True, 1), ("replaced", False, 2), ("added", True, 1),
    ]  # fmt: skip
    assert not again[0]["pool_changed"]
    text = (await client.get("/metrics")).text
    assert 'edgecloud_decision_experiences_total{outcome="duplicate",policy="icl"} 2.0' in text
    assert 'edgecloud_decision_experiences_total{outcome="added",policy="icl"} 1.0' in text


async def test_a_decision_says_whether_it_may_be_remembered(client, scorer):
    scored = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert scored["valid_for_version"] and scored["scorer"] and scored["epsilon"] == 0.0
    cached = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert cached["source"] == "cache" and cached["valid_for_version"] and cached["scorer"] == scored["scorer"]
    latest = (await client.post("/v1/decisions", json={**DECIDE, "policy": "icl_latest"})).json()
    assert latest["source"] == "llm" and not latest["valid_for_version"]  # its prompt changes with every experience
    baseline = (await client.post("/v1/decisions", json={**DECIDE, "policy": "always_edge"})).json()
    assert not baseline["valid_for_version"] and baseline["epsilon"] is None
    assert scored["valid_for_s"] is None and cached["valid_for_s"] is None  # until the version or scorer changes
    scorer.failure = ScoringError("down")
    fallback = (await client.post("/v1/decisions", json={**DECIDE, "service_type": "chat"})).json()
    assert fallback["source"] == "fallback" and not fallback["valid_for_version"] and fallback["valid_for_s"] is None


async def test_a_fallback_while_the_llm_cannot_score_may_be_remembered_until_it_is_tried_again(client, scorer):
    scorer.failure = CannotScore("no way to score", retry_after_s=30.0)
    first = (await client.post("/v1/decisions", json=DECIDE)).json()
    assert (first["source"], first["valid_for_version"], first["valid_for_s"]) == ("fallback", True, 30.0)
    assert first["scorer"] and first["pool_version"] == 0
    again = (await client.post("/v1/decisions", json=DECIDE)).json()  # the service's cache: the rest of the lifetime
    assert again["source"] == "fallback" and again["valid_for_version"] and 29.0 < again["valid_for_s"] < 30.0
    assert scorer.calls == 1


async def test_a_callers_draw_decides_exploration_and_remembered_decisions_are_steps(scorer):
    async with make_client(scorer, epsilon="linear:1.0:0.0:100", seed=1) as client:
        low = (await client.post("/v1/decisions", json={**DECIDE, "explore_draw": 0.3})).json()
        assert low["source"] == "explore" and low["epsilon"] == pytest.approx(0.99)
        # 69 decisions answered from a gateway's memory: epsilon is now 1 - 70/100 = 0.3, and 0.31 is above it.
        high = (await client.post("/v1/decisions", json={**DECIDE, "explore_draw": 0.31, "remembered": 69})).json()
        assert high["source"] == "llm" and high["epsilon"] == pytest.approx(0.29)
        bad = await client.post("/v1/decisions", json={**DECIDE, "explore_draw": 1.0})
        assert bad.status_code == 400
        text = (await client.get("/metrics")).text
        assert 'edgecloud_decision_remembered_decisions_total{policy="icl"} 69.0' in text
