"""The live loop faces the paper's trade-off and learns it: the testbed's paper mode, real vLLM deciding.

``scripts/testbed --paper``: the paper's profiles generate (the simulator as Llama-3-8B at the edge, as
GPT-4o in the cloud), so the edge meets the regular types' quality and is faster, while only the cloud
meets the quality-preferred types'; the decision service's LLM is the real vLLM (SmolLM2-135M) with
the shipped ICL method. Mixed traffic goes in over the air with the official openai client; the
measured delays come back as experiences. After 200 requests the decisions the LLM made (not the
explorations) must be the best action for their state by the mean rewards measured in the same run.

Exploration: the test runs a fresh pool with epsilon falling from 1 to the service's default 0.1 over
the first 150 decisions (an operator's choice for a new cell). The test needs both actions measured in
every state; with 0.1 from the start a state sees its other action about 2.5 times in 200 requests, and
none at all in about 8 % of the state-actions (seen once with 0.5 falling over 100 decisions).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import redis.asyncio as redis

from conftest import running_testbed
from edgecloud.core.vocabulary import Action, ServiceType, TaskState
from edgecloud.decision.pool import PoolNamespace
from edgecloud.decision.redis_pool import RedisExperiencePool

pytestmark = pytest.mark.vllm

REQUESTS = 200
LAST = 50
REQUIRED_AGREEMENT = 0.9
CONCURRENCY = 8
MAX_TOKENS = 100  # one output-length bin (1-128) per type: four keyword states
EPSILON = "linear:1.0:0.1:150"
PROMPTS = {
    ServiceType.CHAT: "Hi! Any ideas for a relaxed Sunday afternoon?",
    ServiceType.SUMMARIZATION: "Summarize in two sentences: the city council met on Monday and agreed to extend "
    "the tram line to the airport by 2028, funded by a regional grant and a small ticket surcharge.",
    ServiceType.MATH: "Solve for x: 3x + 7 = 25. Show the steps.",
    ServiceType.CODING: "Write a Python function that returns the n-th Fibonacci number iteratively.",
}
START_TIMEOUT_S = 300.0
EXPERIENCES_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def paper_testbed(vllm_testbed, tmp_path_factory):
    """``--paper`` with the session's vLLM as its decision LLM (one vLLM on 2 cores is enough)."""
    env = {"TESTBED_DECISION_LLM_URL": vllm_testbed.edge_url, "DECISION_EPSILON": EPSILON}
    with running_testbed(tmp_path_factory.mktemp("paper-testbed"), "--paper", env=env, timeout_s=START_TIMEOUT_S) as tb:
        yield tb


def send(client: openai.OpenAI, index: int, service_type: ServiceType) -> dict:
    raw = client.chat.completions.with_raw_response.create(
        model="edgecloud-auto",
        messages=[{"role": "user", "content": PROMPTS[service_type]}],
        max_tokens=MAX_TOKENS,
        stream=True,
        user=f"learner-{index % CONCURRENCY}",
        extra_headers={"x-service-type": service_type.value},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    headers = raw.headers
    return {
        "index": index,
        "state": TaskState.of(service_type, MAX_TOKENS),
        "action": Action.LOCAL if headers["x-route"] == "edge" else Action.OFFLOAD,
        "source": headers["x-decision-source"],
        "retried": "x-retried-from" in headers,
        "text": text,
    }


async def measured_experiences(redis_url: str, expected: int) -> list:
    """Every experience the decision service recorded (its audit log), once the count stops growing."""
    client = redis.from_url(redis_url)
    pool, namespace = RedisExperiencePool(client), PoolNamespace("cell-0", "icl")
    deadline, count, experiences = time.monotonic() + EXPERIENCES_TIMEOUT_S, -1, []
    while time.monotonic() < deadline:
        experiences = await pool.latest(namespace, 10 * expected)
        if len(experiences) >= expected and len(experiences) == count:
            break
        count = len(experiences)
        await asyncio.sleep(2.0)
    await client.aclose()
    return experiences


def test_mixed_live_traffic_teaches_the_pool_the_trade_off(paper_testbed):
    client = openai.OpenAI(base_url=paper_testbed.air_url, api_key="unused", max_retries=0, timeout=120)
    draw = random.Random(5)
    plan = [draw.choice(list(PROMPTS)) for _ in range(REQUESTS)]
    with ThreadPoolExecutor(CONCURRENCY) as workers:
        served = list(workers.map(lambda item: send(client, *item), enumerate(plan)))
    assert all(item["text"].strip() for item in served)

    experiences = asyncio.run(measured_experiences(paper_testbed.redis_url, REQUESTS))
    assert len(experiences) >= 0.95 * REQUESTS  # every served request came back as an experience (+ the demo)
    rewards: dict[tuple[TaskState, Action], list[float]] = {}
    for experience in experiences:
        rewards.setdefault((experience.state, experience.action), []).append(experience.reward)
    states = {item["state"] for item in served}
    seen = Counter((item["state"].key, item["source"], item["action"].value) for item in served)
    best, mean_rewards = {}, {}
    for state in states:
        measured = [action for action in Action if (state, action) in rewards]
        means = mean_rewards[state.key] = {action: statistics.fmean(rewards[state, action]) for action in measured}
        assert set(means) == set(Action), f"{state.key}: both actions must be measured, got {means}; served {seen}"
        best[state] = max(means, key=means.__getitem__)
    # The mode faces the paper's trade-off: the edge wins regular tasks, the cloud's quality the others.
    assert {state.key: best[state] for state in states} == {
        state.key: Action.OFFLOAD if state.service_type.quality_preferred else Action.LOCAL for state in states
    }

    decided = [item for item in served if item["source"] != "explore" and not item["retried"]]
    last = decided[-LAST:]
    agree = sum(item["action"] is best[item["state"]] for item in last) / len(last)
    sources = {source: sum(item["source"] == source for item in last) for source in {i["source"] for i in last}}
    print(f"\n[learning] {agree:.0%} of the last {len(last)} LLM decisions are the best ({sources}); {mean_rewards}")
    assert agree >= REQUIRED_AGREEMENT, f"{agree:.0%} of the last {len(last)} decisions are the best ({sources})"
    pool = httpx.get(
        f"{paper_testbed.decision_url}/v1/pool", headers=paper_testbed.key("DECISION_SERVICE_API_KEY")
    ).json()["examples"]
    kept = {TaskState(ServiceType(e["service_type"]), e["token_bin"]): Action(e["decision"]) for e in pool}
    assert {state: kept.get(state) for state in states} == best  # prioritized replay kept the best of each
