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


def experience_lines(testbed) -> list[str]:
    """The gateway's experience counters, every outcome (what a failure shows)."""
    metrics = httpx.get(testbed.gateway_url.removesuffix("/v1") + "/metrics").text
    return [line for line in metrics.splitlines() if line.startswith("edgecloud_gateway_experiences_total")]


def taken_experiences(testbed) -> float:
    """The gateway's count of experiences the decision service took (Good or Bad): stored in Redis, or held until
    Redis answers again (a Redis call past its deadline on the two busy cores; the service flushes them later)."""
    names = [f'edgecloud_gateway_experiences_total{{outcome="{outcome}"}} ' for outcome in ("stored", "buffered")]
    lines = experience_lines(testbed)
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if any(line.startswith(name) for name in names))


def log_lines(testbed, *needles: str) -> list[str]:
    """The services' log lines that mention any of ``needles``."""
    lines = []
    for log in sorted((testbed.state_dir / "logs").glob("*.log")):
        lines += [
            f"{log.name}: {line}"
            for line in log.read_text(errors="replace").splitlines()
            if any(n in line for n in needles)
        ]
    return lines


def test_real_prompts_go_around_the_loop_with_real_vllm(vllm_testbed):
    users = openai.OpenAI(base_url=vllm_testbed.air_url, api_key="unused", max_retries=0, timeout=180)
    taken_before = taken_experiences(vllm_testbed)
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
    # Every answer became an experience (generation measured at the gateway, transmission over the air),
    # taken by the decision service. Only Good ones enter the pool: SmolLM2 meets no quality requirement,
    # so answers it served are logged and rejected (the paper's replay, section III-B).
    deadline = time.monotonic() + 30
    while taken_experiences(vllm_testbed) < taken_before + len(PROMPTS) and time.monotonic() < deadline:
        time.sleep(0.5)
    diagnosis = [*experience_lines(vllm_testbed), *log_lines(vllm_testbed, "experience", "air report", "WARNING")]
    assert taken_experiences(vllm_testbed) >= taken_before + len(PROMPTS), "\n".join(diagnosis[-60:])
    assert all(example["generation_s"] > 0 for example in pool(vllm_testbed)["examples"])
