"""The one app shell (``core.server``) under all four services, in-process: the same liveness and metrics
routes, the same ingress (arrival stamp, body limit in the OpenAI error shape) and the same command line.

Each service is built by its own ``create_app`` with default settings; no lifespan runs, so nothing is
started (the decision service gets an in-memory pool instead of Redis). The same limits over real HTTP,
through the whole stack, are in ``test_security_live.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from edgecloud.channel import app as channel_app
from edgecloud.channel.settings import ChannelSettings
from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.decision import app as decision_app
from edgecloud.decision.policies.base import live_policy_names
from edgecloud.decision.pool import InMemoryExperiencePool
from edgecloud.decision.settings import DecisionSettings
from edgecloud.gateway import app as gateway_app
from edgecloud.gateway.relay import UpstreamClient
from edgecloud.gateway.settings import GatewaySettings
from edgecloud.llmsim import app as llmsim_app
from edgecloud.llmsim.settings import LLMSimSettings

SMALLEST_BODY_LIMIT = 1024  # ServerSettings.max_body_bytes allows no less
OVERSIZED = b'{"model": "m", "prompt": "' + b"a" * (4 * SMALLEST_BODY_LIMIT) + b'"}'
CHUNK_BYTES = 256
JSON = {"content-type": "application/json"}
METRICS_KEY = "scrape-key"
ARRIVAL_PATH = "/test-arrival"


@dataclass(frozen=True)
class Service:
    module: ModuleType  # its app.py: create_app, COMMAND_LINE, main
    build: Callable[..., FastAPI]  # its app, from settings fields
    body_path: str  # a route that reads a JSON body
    health: dict[str, Any]  # its whole /health answer


SERVICES = {
    "gateway": Service(
        gateway_app,
        lambda **fields: gateway_app.create_app(GatewaySettings(**fields)),
        "/v1/chat/completions",
        {"status": "ok"},
    ),
    "channel": Service(
        channel_app,
        lambda **fields: channel_app.create_app(ChannelSettings(**fields)),
        "/v1/chat/completions",
        {"status": "ok"},
    ),
    "decision": Service(
        decision_app,
        lambda **fields: decision_app.create_app(DecisionSettings(**fields), pool=InMemoryExperiencePool()),
        "/v1/experiences",
        # No lifespan runs here, so the decision LLM's warm-up never started.
        {"status": "ok", "policies": live_policy_names(), "llm_warm_up": "warming"},
    ),
    "llmsim": Service(
        llmsim_app,
        lambda **fields: llmsim_app.create_app(LLMSimSettings(profile="zero", **fields)),
        "/v1/chat/completions",
        {"status": "ok", "profile": "zero", "running": 0, "waiting": 0},
    ),
}
every_service = pytest.mark.parametrize("service", SERVICES.values(), ids=SERVICES.keys())


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


def assert_openai_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert f"larger than {SMALLEST_BODY_LIMIT} bytes" in error["message"]


@every_service
async def test_health_answers_with_the_services_own_fields_and_metrics_are_prometheus_text(service):
    async with client_of(service.build()) as client:
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    assert health.status_code == 200 and health.json() == service.health
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


@every_service
async def test_metrics_need_the_metrics_key_when_one_is_set_and_health_stays_public(service):
    async with client_of(service.build(metrics_api_key=METRICS_KEY)) as client:
        refused = await client.get("/metrics")
        scraped = await client.get("/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"})
        health = await client.get("/health")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert scraped.status_code == 200
    assert health.status_code == 200


@every_service
async def test_a_declared_oversized_body_is_refused_with_an_openai_413(service):
    async with client_of(service.build(max_body_bytes=SMALLEST_BODY_LIMIT)) as client:
        assert_openai_413(await client.post(service.body_path, content=OVERSIZED, headers=JSON))


@every_service
async def test_a_chunked_oversized_body_is_cut_with_an_openai_413(service):
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(OVERSIZED), CHUNK_BYTES):
            yield OVERSIZED[start : start + CHUNK_BYTES]

    async with client_of(service.build(max_body_bytes=SMALLEST_BODY_LIMIT)) as client:
        request = client.build_request("POST", service.body_path, content=chunks(), headers=JSON)
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        assert_openai_413(await client.send(request))


@every_service
async def test_every_request_is_stamped_on_arrival(service):
    app = service.build()

    @app.get(ARRIVAL_PATH)
    async def arrival(request: Request) -> dict[str, float]:
        return {"arrived": request.state.arrived}

    async with client_of(app) as client:
        before = time.perf_counter()
        arrived = (await client.get(ARRIVAL_PATH)).json()["arrived"]
        after = time.perf_counter()
    assert before <= arrived <= after


@every_service
def test_every_service_takes_the_listen_flags(service):
    command_line = service.module.COMMAND_LINE
    argv = ["--host", "0.0.0.0", "--port", "9000", "--log-level", "debug"]
    assert command_line.overrides(argv) == {"host": "0.0.0.0", "port": 9000, "log_level": "debug"}


@every_service
def test_invalid_settings_end_main_with_the_reason(service):
    with pytest.raises(SystemExit, match=rf"^{service.module.COMMAND_LINE.prog}: invalid settings\n.*\nport\n"):
        service.module.main(["--port", "0"])


async def test_pooled_client_connections_are_dropped_before_uvicorn_closes_them() -> None:
    """A pooled connection reused just as the server closes it fails the request: every client of ours drops
    idle connections before uvicorn's keep-alive (our services and vLLM) ends them."""
    assert uvicorn.Config(app=None).timeout_keep_alive > IDLE_CLIENT_CONNECTION_S
    upstream = UpstreamClient(GatewaySettings())
    await upstream.start()
    try:
        assert upstream._pool is not None and upstream._pool.idle_timeout_s == IDLE_CLIENT_CONNECTION_S
    finally:
        await upstream.close()
