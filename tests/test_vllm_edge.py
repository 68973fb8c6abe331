"""End to end through the README's first command: the official openai client, the gateway, real vLLM."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest

from conftest import VLLM_PYTHON
from edgecloud.core.metrics import REQUEST_LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, TTFT_BUCKETS

pytestmark = pytest.mark.vllm

EDGE_MODEL = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Name one colour of the sky."}]


@pytest.fixture(scope="module")
def client(vllm_testbed) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_testbed.gateway_url, api_key="unused", max_retries=0, timeout=120)


def test_testbed_answers_the_demo_prompt_from_real_vllm(vllm_testbed):
    text = vllm_testbed.text()
    assert "edge-llm (vLLM CPU) healthy" in text
    answer = next(line for line in text.splitlines() if "[testbed] answer:" in line)
    assert len(answer.split("answer:", 1)[1].strip()) > 0
    measured = next(line for line in text.splitlines() if "[testbed] measured:" in line)
    # The decision service's LLM (this vLLM, warmed up at start) decides the very first prompt in time: no
    # fallback (the seeded first exploration draw does not explore). With an empty pool it answers local.
    assert "decision=llm" in measured, measured
    assert f"route=edge model={EDGE_MODEL}" in measured or "route=cloud model=gpt-4o-cloud" in measured
    assert "TTFT=" in measured and "TPOT=" in measured
    # The testbed waited for the decision LLM's warm-up before its first request.
    assert httpx.get(f"{vllm_testbed.decision_url}/health").json()["llm_warm_up"] == "ready"


def test_chat_non_streaming(client):
    raw = client.chat.completions.with_raw_response.create(model=EDGE_MODEL, messages=PROMPT, max_tokens=12)
    completion = raw.parse()
    assert raw.headers["x-route"] == "edge"
    assert raw.headers["x-backend-model"] == EDGE_MODEL
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0
    assert completion.choices[0].message.content
    assert 0 < completion.usage.completion_tokens <= 12


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model=EDGE_MODEL, messages=PROMPT, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 12


def test_chat_streaming_without_usage_gets_none(client):
    chunks = list(client.chat.completions.create(model=EDGE_MODEL, messages=PROMPT, max_tokens=6, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


def test_completions_streaming_and_not(client):
    completion = client.completions.create(model=EDGE_MODEL, prompt="The sky is", max_tokens=8, logprobs=2)
    assert completion.choices[0].text
    assert completion.choices[0].logprobs is not None
    stream = client.completions.create(
        model=EDGE_MODEL, prompt="The sky is", max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 0


def test_prompt_over_the_context_length_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=EDGE_MODEL, prompt="sky " * 3000, max_tokens=8)
    assert caught.value.status_code == 400
    assert caught.value.body["message"]


def test_huge_max_tokens_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EDGE_MODEL, messages=PROMPT, max_tokens=1_000_000)
    assert caught.value.body["param"] == "max_tokens"


def test_gateway_and_vllm_metrics_after_traffic(vllm_testbed, client):
    client.chat.completions.create(model=EDGE_MODEL, messages=PROMPT, max_tokens=4, stream=True).close()
    gateway = httpx.get(vllm_testbed.gateway_url.removesuffix("/v1") + "/metrics").text
    assert f'edgecloud_gateway_requests_total{{model="{EDGE_MODEL}",outcome="success",route="edge",' in gateway
    assert "edgecloud_gateway_time_to_first_token_seconds_bucket" in gateway
    vllm = httpx.get(vllm_testbed.edge_url.removesuffix("/v1") + "/metrics").text
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:num_requests_running"):
        assert name in vllm


def test_histogram_buckets_are_vllms():
    """Our buckets must stay vLLM's, so one dashboard reads the gateway and the backend alike."""
    script = (
        "import json; from vllm.v1.metrics import buckets as b; print(json.dumps([b.TIME_TO_FIRST_TOKEN_BUCKETS,"
        " b.INTER_TOKEN_LATENCY_BUCKETS, b.REQUEST_LATENCY_BUCKETS]))"
    )
    output = subprocess.run([str(VLLM_PYTHON), "-c", script], capture_output=True, text=True, check=True).stdout
    ttft, itl, e2e = json.loads(output.strip().splitlines()[-1])
    assert list(TTFT_BUCKETS) == ttft
    assert list(TOKEN_LATENCY_BUCKETS) == itl
    assert list(REQUEST_LATENCY_BUCKETS) == e2e
