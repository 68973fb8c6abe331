"""The compose testbed for real: each profile brought up in containers, prompts sent through the air interface.

Marked ``containers`` (the default run leaves it out: it builds images and starts about eight containers). Run:

    .venv/bin/python -m pytest -m containers tests/test_compose_live.py -v

It needs Docker or podman (docs/deployment.md). ``scripts/compose-testbed`` builds the images, makes the
services' keys and waits until every container is healthy; the test sends chat completions with the official
``openai`` client, checks the answer and the headers the air interface and the gateway add, and checks that
Prometheus scrapes every service. The project is taken down afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from edgecloud.core.headers import (
    BACKEND_MODEL_HEADER,
    CHANNEL_BACKHAUL_MS_HEADER,
    CHANNEL_USER_HEADER,
    DECISION_SOURCE_HEADER,
    QUALITY_MET_HEADER,
    ROUTE_HEADER,
    SERVICE_TYPE_HEADER,
    USER_ID_HEADER,
)

sys.path.insert(0, str(ROOT / "benchmarks"))
from container_faults import engine_base_url, engine_client, find_container, network_url

pytestmark = pytest.mark.containers

SCRIPT = ROOT / "scripts" / "compose-testbed"
AIR_URL = "http://127.0.0.1:8080/v1"  # docker-compose.yml publishes the air interface on 8080
PROMETHEUS_URL = "http://127.0.0.1:9090"
UP_TIMEOUT_S = 1800  # building the vLLM image from nothing takes ~8 min here, its first start ~2 min more
SCRAPE_WAIT_S = 60.0  # Prometheus scrapes every 5 s (deploy/prometheus/prometheus.yml)
JOBS = {"channel-emulator", "gateway", "decision", "edge-llm", "cloud-llm"}
EDGE_MODEL = {"sim": "meta-llama/Meta-Llama-3-8B-Instruct", "cpu": "smollm2-135m-instruct"}
CLOUD_MODEL = "gpt-4o"
PROJECT = "edgecloud"  # scripts/compose-testbed's project
SPOOLED_ANSWERS = 5
EXPERIENCE_WAIT_S = 60.0  # an answer's experience reaches the decision service after its air report
RECREATE_TIMEOUT_S = 300
BUFFERED_METRIC = "edgecloud_decision_buffered_experiences"  # decision/metrics.py
QUEUED_METRIC = "edgecloud_gateway_experience_queue"  # gateway/metrics.py
STORED_METRIC = "edgecloud_gateway_experiences_total"


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def sample(engine: Any, service: str, name: str, **labels: str) -> float:
    """One sample of ``service``'s /metrics, read on its container's address (0 if it has not been set yet)."""
    url = network_url(find_container(engine, PROJECT, service))
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = [
        value
        for family in text_string_to_metric_families(text)
        for sample_name, sample_labels, value, *_ in family.samples
        if sample_name == name and all(sample_labels.get(key) == wanted for key, wanted in labels.items())
    ]
    return values[0] if values else 0.0


def ask(client: openai.OpenAI, user: str) -> None:
    client.chat.completions.create(
        model="edgecloud-auto",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
        extra_headers={USER_ID_HEADER: user, SERVICE_TYPE_HEADER: "chat"},
    )


def compose_testbed(*args: str, timeout: float) -> None:
    result = subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(result.stdout[-4000:], result.stderr[-4000:])
    assert result.returncode == 0, f"compose-testbed {' '.join(args)} failed:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module", params=["sim", "cpu"])
def profile(request: pytest.FixtureRequest) -> Iterator[str]:
    if not (shutil.which("docker") or shutil.which("podman")):
        pytest.skip("no container engine (Docker or podman)")
    compose_testbed("up", request.param, timeout=UP_TIMEOUT_S)
    try:
        yield request.param
    finally:
        compose_testbed("down", timeout=300)


@pytest.fixture(scope="module")
def client(profile: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=AIR_URL, api_key="not-checked", timeout=120, max_retries=0)


def test_a_streamed_chat_answer_through_the_air_interface(client, profile):
    with client.chat.completions.with_streaming_response.create(
        model="edgecloud-auto",
        messages=[{"role": "user", "content": "Tell me about the sea in two sentences."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={USER_ID_HEADER: "alice", SERVICE_TYPE_HEADER: "chat"},
    ) as response:
        headers = response.headers
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert text.strip() and 0 < usage.completion_tokens <= 16
    assert headers[CHANNEL_USER_HEADER].startswith("alice@key:")  # the user, within its API key's namespace
    assert headers[ROUTE_HEADER] in ("edge", "cloud")
    assert headers[BACKEND_MODEL_HEADER] == (EDGE_MODEL[profile] if headers[ROUTE_HEADER] == "edge" else CLOUD_MODEL)
    assert headers[SERVICE_TYPE_HEADER] == "chat"
    assert headers[DECISION_SOURCE_HEADER]
    assert headers[QUALITY_MET_HEADER] in ("true", "false")
    # The backhaul delay of eq. (1) is paid by offloaded answers only.
    assert (float(headers[CHANNEL_BACKHAUL_MS_HEADER]) > 0) is (headers[ROUTE_HEADER] == "cloud")


def test_unlabelled_and_pinned_requests_are_classified_and_routed(client, profile):
    unlabelled = client.chat.completions.with_raw_response.create(
        model="edgecloud-auto",
        messages=[{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}],
        max_tokens=16,
        extra_headers={USER_ID_HEADER: "bob"},
    )
    assert unlabelled.headers[SERVICE_TYPE_HEADER] == "coding"
    assert unlabelled.parse().choices[0].message.content
    pinned = client.chat.completions.with_raw_response.create(
        model=CLOUD_MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
        extra_headers={USER_ID_HEADER: "bob"},
    )
    assert pinned.headers[ROUTE_HEADER] == "cloud" and pinned.headers[BACKEND_MODEL_HEADER] == CLOUD_MODEL


def test_bad_input_gets_an_openai_shaped_error(client, profile):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="edgecloud-auto", messages=[], max_tokens=4)
    assert refused.value.status_code == 400 and isinstance(refused.value.body, dict)


def test_prometheus_scrapes_every_service(client, profile):
    """Every job up, and the gateway's requests of the tests above counted (within a few scrapes)."""
    query = {"query": "sum(edgecloud_gateway_requests_total)"}
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        targets = httpx.get(f"{PROMETHEUS_URL}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        result = httpx.get(f"{PROMETHEUS_URL}/api/v1/query", params=query, timeout=10).json()["data"]["result"]
        counted = float(result[0]["value"][1]) if result else 0.0
        if (health == dict.fromkeys(JOBS, "up") and counted >= 1) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == dict.fromkeys(JOBS, "up"), health
    assert counted >= 1, "the gateway's requests reached Prometheus"


def replaced_while_down(client: openai.OpenAI, engine: Any, down: str, replaced: str, waiting_metric: str) -> float:
    """``down`` stopped: answers are served and their experiences wait in ``replaced`` (``waiting_metric``); its
    container replaced, the new one must read them back from its spool volume. ``down`` is started again;
    returns how many waited."""
    stopped = find_container(engine, PROJECT, down)
    stopped.stop()
    try:
        for index in range(SPOOLED_ANSWERS):
            ask(client, f"spool-{replaced}-{index}")
        assert wait_until(lambda: sample(engine, replaced, waiting_metric) >= SPOOLED_ANSWERS, EXPERIENCE_WAIT_S)
        held = sample(engine, replaced, waiting_metric)
        compose_testbed("recreate", replaced, timeout=RECREATE_TIMEOUT_S)
        replacement = find_container(engine, PROJECT, replaced)
        assert f"read {held:g} experiences spooled by the last run" in replacement.logs().decode()
        return held
    finally:
        stopped.start()


def test_experiences_waiting_for_redis_survive_the_decision_containers_replacement(client, profile):
    """Redis stopped: the decision service holds the answers' experiences; its container replaced, the new one reads
    them from the spool on the decision-spool volume; Redis back, they go to the pool without another request."""
    engine = engine_client(engine_base_url(None))
    replaced_while_down(client, engine, "redis", "decision", BUFFERED_METRIC)

    def pushed() -> bool:
        return sample(engine, "decision", BUFFERED_METRIC) == 0

    assert wait_until(pushed, EXPERIENCE_WAIT_S), "experiences still held after Redis came back"


def test_experiences_waiting_for_the_decision_service_survive_the_gateways_replacement(client, profile):
    """The decision service stopped: the gateway queues the answers' experiences; its container replaced, the one
    that stops writes them to the gateway-spool volume, and the new one posts them once the service is back."""
    engine = engine_client(engine_base_url(None))
    held = replaced_while_down(client, engine, "decision", "gateway", QUEUED_METRIC)

    def posted() -> bool:
        return sample(engine, "gateway", STORED_METRIC, outcome="stored") >= held

    assert wait_until(posted, EXPERIENCE_WAIT_S), "the spooled experiences were not posted"
