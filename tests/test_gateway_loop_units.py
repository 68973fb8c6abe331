"""The gateway's loop pieces in-process: joining measurements into experiences, the decision fallback."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgecloud.core.vocabulary import Action, ServiceType
from edgecloud.core.wire import AirReport
from edgecloud.gateway.decisions import GATEWAY_FALLBACK, BackendHealth, DecisionClient
from edgecloud.gateway.experiences import ExperienceWriter, ServedRequest
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.settings import GatewaySettings, Route
from edgecloud.testbed.processes import free_port


def served(request_id: str, generation_s: float = 2.0) -> ServedRequest:
    return ServedRequest(
        request_id=request_id,
        service_type=ServiceType.CHAT,
        estimated_tokens=100,
        action=Action.LOCAL,
        source="llm",
        generation_s=generation_s,
        quality_met=True,
        route="edge",
        model="m",
    )


def writer(**settings: object) -> tuple[ExperienceWriter, GatewayMetrics]:
    """A writer whose decision service is a closed port: experiences stay queued, so the join can be inspected."""
    metrics = GatewayMetrics()
    config = GatewaySettings(decision_url=f"http://127.0.0.1:{free_port()}", **settings)
    return ExperienceWriter(config, metrics), metrics


def queued(experiences: ExperienceWriter) -> list[tuple[str, float]]:
    return [(pending.body.request_id or "", pending.body.transmission_s) for pending in experiences.waiting()]


def test_measurements_are_joined_by_request_id_in_either_order():
    experiences, _ = writer()
    experiences.served(served("a"), over_the_air=True)
    assert queued(experiences) == []  # waits for the air interface's half
    experiences.air_report(AirReport(request_id="a", transmission_s=0.4))
    experiences.air_report(AirReport(request_id="b", transmission_s=0.7))  # the report may come first
    experiences.served(served("b"), over_the_air=True)
    assert queued(experiences) == [("a", 0.4), ("b", 0.7)]


def test_a_request_without_air_interface_has_no_transmission_time():
    experiences, _ = writer()
    experiences.served(served("wired"), over_the_air=False)
    assert queued(experiences) == [("wired", 0.0)]


def test_a_missing_air_report_drops_the_experience_and_counts_it():
    experiences, metrics = writer(air_report_timeout_s=0.01)
    experiences.served(served("lost"), over_the_air=True)
    time.sleep(0.02)
    experiences._expire(experiences._waiting_for_air, time.monotonic(), "dropped_no_air_report")
    assert queued(experiences) == []
    assert metrics.experiences.labels("dropped_no_air_report")._value.get() == 1


def test_overflow_drops_the_oldest_and_counts_it():
    experiences, metrics = writer(experience_queue_size=2)
    for request_id in ("1", "2", "3"):
        experiences.served(served(request_id), over_the_air=False)
    assert [request_id for request_id, _ in queued(experiences)] == ["2", "3"]
    assert metrics.experiences.labels("dropped_overflow")._value.get() == 1


async def test_experiences_wait_while_the_decision_service_is_down():
    experiences, _ = writer()
    await experiences.start()
    try:
        experiences.served(served("kept"), over_the_air=False)
        await asyncio.sleep(0.3)
        assert queued(experiences) == [("kept", 0.0)]  # still there, to be retried
    finally:
        await experiences.close()


async def test_a_stop_while_the_decision_service_is_down_counts_what_is_lost_and_takes_its_bound():
    experiences, metrics = writer(experience_stop_timeout_s=0.5)
    await experiences.start()
    for request_id in ("x", "y"):
        experiences.served(served(request_id), over_the_air=False)
    started = time.monotonic()
    await experiences.close()
    assert time.monotonic() - started < 0.5 + 0.5
    assert metrics.experiences.labels("dropped_at_stop")._value.get() == 2
    assert queued(experiences) == []


async def test_a_stop_while_the_decision_service_is_down_spools_what_waits_for_the_next_start(tmp_path):
    spool = tmp_path / "gateway-spool.jsonl"
    experiences, metrics = writer(experience_stop_timeout_s=0.2, experience_spool=spool)
    await experiences.start()
    experiences.served(served("x"), over_the_air=False)
    experiences.air_report(AirReport(request_id="y", transmission_s=0.3))
    experiences.served(served("y"), over_the_air=True)
    await experiences.close()
    assert metrics.experiences.labels("spooled_at_stop")._value.get() == 2
    assert metrics.experiences.labels("dropped_at_stop")._value.get() == 0
    assert len(spool.read_text().splitlines()) == 2
    restarted, _ = writer(experience_spool=spool)
    await restarted.start()
    try:
        assert queued(restarted) == [("x", 0.0), ("y", 0.3)]
        assert len(spool.read_text().splitlines()) == 2  # kept until they are posted
        assert [pending.route for pending in restarted.waiting()] == ["edge", "edge"]
    finally:
        await restarted.close()  # the service still down: kept again, in the same file
    assert len(spool.read_text().splitlines()) == 2


async def test_decision_client_falls_back_to_the_rule_when_the_service_is_down():
    client = DecisionClient(GatewaySettings(decision_url=f"http://127.0.0.1:{free_port()}", decision_timeout_s=1))
    await client.start()
    try:
        coding = await client.decide(ServiceType.CODING, 300)
        chat = await client.decide(ServiceType.CHAT, 300)
    finally:
        await client.close()
    assert (coding.route, coding.source) == (Route.CLOUD, GATEWAY_FALLBACK)
    assert (chat.route, chat.source) == (Route.EDGE, GATEWAY_FALLBACK)
    assert coding.latency_s < 1


def test_backend_health_routes_around_a_failed_backend_for_a_while():
    health = BackendHealth(down_for_s=60)
    health.failed(Route.EDGE)
    assert health.is_down(Route.EDGE) and not health.is_down(Route.CLOUD)
    health.succeeded(Route.EDGE)
    assert not health.is_down(Route.EDGE)
    assert not BackendHealth(down_for_s=0).is_down(Route.EDGE)


@pytest.mark.parametrize("url", ["", None])
def test_no_decision_service_configured_means_no_experiences(url):
    experiences = ExperienceWriter(GatewaySettings(decision_url=url), GatewayMetrics())
    experiences.served(served("x"), over_the_air=False)
    assert queued(experiences) == []
