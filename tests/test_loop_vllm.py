"""The README's first command, the whole loop with real vLLM deciding and generating at the edge.

The testbed runs Redis, vLLM (SmolLM2) at the edge, the cloud simulator, the decision service (whose
LLM is the same vLLM), the gateway and the air interface. Prompts go in over the air with the
official openai client; the decision service answers from its LLM, its cache or its fallback while
a cold prompt is being scored (a cold 1,500-token prefill takes ~35 s on this CPU).
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.vllm

PROMPTS = {
    "math": "What is 17 multiplied by 23? Explain briefly.",
    "translation": "Translate into French: 'Where is the train station?'",
    "chat": "Hello! How are you doing today?",
}


def pool(testbed) -> dict:
    return httpx.get(
        f"{testbed.decision_url}/v1/pool",
        params={"cell": "cell-0", "policy": "icl"},
        headers=testbed.key("DECISION_SERVICE_API_KEY"),
    ).json()


def test_real_prompts_go_around_the_loop_with_real_vllm(vllm_testbed):
    users = openai.OpenAI(base_url=vllm_testbed.air_url, api_key="unused", max_retries=0, timeout=180)
    version_before = pool(vllm_testbed)["version"]
    for expected_type, prompt in PROMPTS.items():
        raw = users.chat.completions.with_raw_response.create(
            model="edgecloud-auto",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            stream=True,
            user="vllm-loop",
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        headers = raw.headers
        assert text.strip()
        assert headers["x-service-type"] == expected_type
        assert headers["x-decision-source"] in {"llm", "explore", "cache", "fallback"}
        expected_model = {"edge": "smollm2-135m-instruct", "cloud": "gpt-4o-cloud"}[headers["x-route"]]
        assert headers["x-backend-model"] == expected_model
    deadline = time.monotonic() + 30
    while pool(vllm_testbed)["version"] <= version_before and time.monotonic() < deadline:
        time.sleep(0.5)
    examples = pool(vllm_testbed)["examples"]
    assert pool(vllm_testbed)["version"] > version_before
    # The experiences carry measured delays: generation from the gateway, transmission from the air.
    assert all(example["generation_s"] > 0 for example in examples)
    metrics = httpx.get(vllm_testbed.gateway_url.removesuffix("/v1") + "/metrics").text
    assert 'edgecloud_gateway_experiences_total{outcome="stored"}' in metrics
