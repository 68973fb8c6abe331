"""The gateway's memory of decisions and its batched experiences, against a real decision service and a real Redis.

The decision service runs in this process (its app under uvicorn, on a real port) with a fake LLM (a seam that
counts its calls) and its real Redis pool; the gateway's ``DecisionClient`` and ``ExperienceWriter`` reach it over
HTTP and read the pool's version and scorer from the same Redis, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import until
from edgecloud.core.headers import DECISION_LATENCY_MS_HEADER, DECISION_SOURCE_HEADER, ROUTE_HEADER
from edgecloud.core.protocol import ChatCompletionRequest
from edgecloud.core.redis_guard import redis_client
from edgecloud.core.vocabulary import Action, ServiceType
from edgecloud.core.wire import pool_scorer_key, pool_version_key
from edgecloud.decision.app import create_app
from edgecloud.decision.llm_endpoint import CannotScore
from edgecloud.decision.pool import PoolNamespace
from edgecloud.decision.redis_pool import RedisExperiencePool
from edgecloud.decision.resilient_pool import ResilientExperiencePool
from edgecloud.decision.scoring import ScoringError
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings
from edgecloud.gateway.decision_memory import DecisionMemory
from edgecloud.gateway.decisions import GATEWAY_FALLBACK, DecisionClient
from edgecloud.gateway.experiences import ExperienceWriter, ServedRequest
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.service import Endpoint, GatewayService, RequestHints
from edgecloud.gateway.settings import GatewaySettings, Route
from edgecloud.testbed.processes import free_port
from redis_server import RedisServer
from test_decision_service import FakeScorer
from test_gateway_attempts import COMPLETION, answer, backend

CHAT = ServiceType.CHAT
# A memory hit is a Redis read and a dict lookup; leave room for a loaded CI machine.
HIT_S = 0.05


@dataclass
class Decider:
    """A decision service on a real port, and what a test looks at."""

    url: str
    service: DecisionService
    scorer: FakeScorer
    redis_url: str
    cell: str

    @property
    def namespace(self) -> PoolNamespace:
        return PoolNamespace(self.cell, "icl")

    def decisions_seen(self) -> float:
        """Decisions the service itself made (every source)."""
        return sum(sample.value for sample in _samples(self.service.metrics.decisions, "_total"))

    def explorations_seen(self) -> float:
        return sum(
            sample.value
            for sample in _samples(self.service.metrics.decisions, "_total")
            if sample.labels["source"] == "explore"
        )


def _samples(metric: Any, suffix: str) -> list[Any]:
    return [sample for family in metric.collect() for sample in family.samples if sample.name.endswith(suffix)]


@contextlib.asynccontextmanager
async def decision_service(redis_url: str, port: int | None = None, **settings: Any) -> AsyncIterator[Decider]:
    """The decision service's app on a free (or the given) port, over the real Redis pool at ``redis_url``."""
    port = port or free_port()
    config = DecisionSettings(
        **{"redis_url": redis_url, "epsilon": "constant:0", "llm_timeout_s": 0.5, "redis_retry_interval_s": 0.2,
           **settings}
    )  # fmt: skip
    client = redis_client(redis_url, config.redis_timeout_s)
    pool = ResilientExperiencePool(  # as the service's create_app builds it
        RedisExperiencePool(client), timeout_s=config.redis_timeout_s, retry_interval_s=config.redis_retry_interval_s
    )
    scorer = FakeScorer()
    app = create_app(config, pool=pool, scorer=scorer)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the decision service did not start"
            await asyncio.sleep(0.01)
        yield Decider(f"http://127.0.0.1:{port}", app.state.service, scorer, redis_url, "")
    finally:
        server.should_exit = True
        await serving
        await app.state.service.close()
        await client.aclose()


def gateway_settings(decider: Decider, **settings: Any) -> GatewaySettings:
    decider.cell = decider.cell or f"t{uuid.uuid4().hex[:12]}"
    return GatewaySettings(
        decision_url=decider.url,
        decision_redis_url=decider.redis_url,
        cell=decider.cell,
        decision_timeout_s=2.0,
        redis_timeout_s=0.5,  # a loaded CI machine may take longer than the 50 ms default to connect
        redis_retry_interval_s=0.2,
        **settings,
    )


@contextlib.asynccontextmanager
async def decision_client(decider: Decider, **settings: Any) -> AsyncIterator[tuple[DecisionClient, GatewayMetrics]]:
    metrics = GatewayMetrics()
    client = DecisionClient(gateway_settings(decider, **settings), metrics)
    await client.start()
    try:
        yield client, metrics
    finally:
        await client.close()


def memory_count(metrics: GatewayMetrics, outcome: str) -> float:
    return metrics.decision_memory.labels(outcome)._value.get()


async def add_example(decider: Decider, service_type: ServiceType, decision: Action, generation_s: float) -> int:
    """An experience that changes the pool (a new example): the pool's version moves."""
    body = {
        "service_type": service_type.value, "estimated_tokens": 300, "cell": decider.cell, "decision": decision.value,
        "transmission_s": 0.1, "generation_s": generation_s, "quality_met": True,
    }  # fmt: skip
    async with httpx.AsyncClient() as http:
        answer = (await http.post(f"{decider.url}/v1/experiences", json=body)).json()
    assert answer["pool_changed"], answer
    return answer["pool_version"]


# --- the memory --------------------------------------------------------------------------------


async def test_a_steady_state_decision_is_answered_from_memory(shared_server: RedisServer) -> None:
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, metrics):
        first = await client.decide(CHAT, 300)
        assert (first.route, first.source, first.pool_version) == (Route.EDGE, "llm", 0)
        seen = decider.decisions_seen()
        for _ in range(20):
            again = await client.decide(CHAT, 300)
            assert (again.route, again.source, again.pool_version) == (Route.EDGE, "cache", 0)
            assert again.latency_s < HIT_S  # the real wait: a Redis read, no round trip to the service
        assert decider.decisions_seen() == seen  # the decision service was not asked again
        assert decider.scorer.calls == 1
        assert memory_count(metrics, "hit") == 20
        # Another x is not remembered: it is asked (and remembered in turn).
        other = await client.decide(CHAT, 3000)
        assert other.source == "llm" and decider.scorer.calls == 2
        # The hits were steps of the service's exploration schedule: reported with that request.
        policy = decider.service.policy(decider.namespace)
        assert policy.setup.exploration.step == 22  # type: ignore[attr-defined]
        assert client.memory is not None and client.memory.unreported == 0


async def test_a_new_pool_version_invalidates_the_memory(shared_server: RedisServer) -> None:
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, _):
        assert (await client.decide(CHAT, 300)).source == "llm"
        assert (await client.decide(CHAT, 300)).source == "cache"
        decider.scorer.preferred = Action.OFFLOAD  # the LLM reads the new pool differently
        version = await add_example(decider, CHAT, Action.OFFLOAD, 5.0)
        assert version == 1
        fresh = await client.decide(CHAT, 300)
        assert (fresh.route, fresh.source, fresh.pool_version) == (Route.CLOUD, "llm", 1)
        assert decider.scorer.calls == 2
        remembered = await client.decide(CHAT, 300)
        assert (remembered.route, remembered.source, remembered.pool_version) == (Route.CLOUD, "cache", 1)
        assert decider.scorer.calls == 2
        # A change anywhere in the pool is a new version: the memory asks again (the service's own cache, keyed by
        # the exact prompt, may still answer).
        seen = decider.decisions_seen()
        await add_example(decider, ServiceType.CODING, Action.OFFLOAD, 6.0)
        assert (await client.decide(CHAT, 300)).pool_version == 2
        assert decider.decisions_seen() == seen + 1


async def test_answers_of_another_scorer_are_not_used(shared_server: RedisServer) -> None:
    """A decision service restarted with another model or method announces another scorer fingerprint."""
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, metrics):
        assert (await client.decide(CHAT, 300)).source == "llm"
        assert (await client.decide(CHAT, 300)).source == "cache"
        assert memory_count(metrics, "hit") == 1
        redis = redis_client(decider.redis_url, 0.5)
        try:
            assert await redis.get(pool_scorer_key(decider.cell, "icl"))  # announced by the service
            await redis.set(pool_scorer_key(decider.cell, "icl"), "another-scorer")
            seen = decider.decisions_seen()
            for _ in range(3):
                await client.decide(CHAT, 300)
            assert decider.decisions_seen() == seen + 3  # each asked again: what is remembered is the old scorer's
            assert memory_count(metrics, "hit") == 1
            off = memory_count(metrics, "off")  # the first decision, before the service announced its scorer
            await redis.delete(pool_scorer_key(decider.cell, "icl"))  # no scorer announced: nothing is trusted
            await client.decide(CHAT, 300)
            assert memory_count(metrics, "off") == off + 1
        finally:
            await redis.aclose()


async def test_fallbacks_and_explorations_are_not_remembered(shared_server: RedisServer) -> None:
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, _):
        decider.scorer.failure = ScoringError("connection refused")
        for _ in range(3):
            assert (await client.decide(ServiceType.CODING, 300)).source == "fallback"
        assert decider.scorer.calls == 3  # every one asked the service, which asked its LLM
        decider.scorer.failure = None
        decider.scorer.delay_s = 1.0  # slower than the service's 0.5 s LLM timeout: its fallback answers
        assert (await client.decide(CHAT, 300)).source == "fallback"
        assert client.memory is not None and len(client.memory) == 0
        await asyncio.sleep(1.0)  # the late answer filled the service's cache: a scored answer, now remembered
        assert (await client.decide(CHAT, 300)).source == "cache"
        assert len(client.memory) == 1
    exploring = decision_service(shared_server.url, epsilon="constant:1.0")
    async with exploring as decider, decision_client(decider) as (client, _):
        answers = [await client.decide(CHAT, 300) for _ in range(10)]
        assert {answer.source for answer in answers} == {"explore"}
        assert client.memory is not None and len(client.memory) == 0


async def test_a_fallback_while_the_llm_cannot_score_is_remembered_until_the_service_tries_it_again(
    shared_server: RedisServer,
) -> None:
    """A decision LLM that cannot score (a simulator) gets the pool's example from the service for every x; the
    gateway keeps it, as the service's cache does, only until the service tries the LLM again."""
    retry_s = 0.6
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, metrics):
        decider.scorer.failure = CannotScore("no way to score", retry_after_s=retry_s)
        first = await client.decide(CHAT, 300)
        assert (first.source, first.pool_version) == ("fallback", 0)
        seen = decider.decisions_seen()
        for _ in range(5):
            again = await client.decide(CHAT, 300)
            assert (again.route, again.source, again.pool_version) == (first.route, "fallback", 0)
        assert decider.decisions_seen() == seen  # answered by the gateway, said to be a fallback
        assert memory_count(metrics, "hit") == 5 and decider.scorer.calls == 1
        # A new pool version forgets it like any remembered answer.
        await add_example(decider, ServiceType.CODING, Action.OFFLOAD, 6.0)
        assert (await client.decide(CHAT, 300)).pool_version == 1
        assert decider.decisions_seen() == seen + 1
        # Once its time is up the service is asked, tries its LLM again, and now it scores.
        decider.scorer.failure = None
        await asyncio.sleep(retry_s)
        scored = await client.decide(CHAT, 300)
        assert scored.source == "llm" and decider.scorer.calls == 3
        assert (await client.decide(CHAT, 300)).source == "cache"


async def test_exploration_keeps_its_probability_on_memory_hits(shared_server: RedisServer) -> None:
    """With epsilon 0.2 a fifth of the decisions explore, hits or not, and the service draws every random action."""
    count, epsilon = 1000, 0.2
    exploring = decision_service(shared_server.url, epsilon=f"constant:{epsilon}", seed=3)
    async with exploring as decider, decision_client(decider) as (client, metrics):
        assert client.memory is not None
        client.memory.rng.seed(11)
        answers = [await client.decide(CHAT, 300) for _ in range(count)]
        last = await client.decide(ServiceType.MATH, 300)  # reports the last hits
    explored = sum(answer.source == "explore" for answer in answers)
    spread = 4 * (epsilon * (1 - epsilon) / count) ** 0.5  # four standard deviations of the share
    assert abs(explored / count - epsilon) < spread, explored
    assert memory_count(metrics, "hit") > count / 2  # most decisions were hits
    # Every exploration happened at the service (its audit and metrics see them), and every decision was a
    # step of its schedule.
    assert decider.explorations_seen() == explored + (last.source == "explore")
    policy = decider.service.policy(decider.namespace)
    assert policy.setup.exploration.step == count + 1  # type: ignore[attr-defined]
    assert {answer.route for answer in answers if answer.source == "explore"} == {Route.EDGE, Route.CLOUD}


async def test_the_memory_is_off_while_the_pools_redis_is_down(own_server: RedisServer) -> None:
    async with decision_service(own_server.url) as decider, decision_client(decider) as (client, metrics):
        assert (await client.decide(CHAT, 300)).source == "llm"
        assert (await client.decide(CHAT, 300)).source == "cache"
        assert memory_count(metrics, "hit") == 1
        own_server.kill()
        seen, off = decider.decisions_seen(), memory_count(metrics, "off")
        for _ in range(3):
            answer = await client.decide(CHAT, 300)
            assert answer.route is Route.EDGE  # the service answers from its own cache and last pool seen
        assert decider.decisions_seen() == seen + 3  # not from the gateway's memory: its version cannot be read
        assert memory_count(metrics, "hit") == 1 and memory_count(metrics, "off") == off + 3
        assert client.memory is not None and not client.memory.available
        own_server.start()
        deadline = asyncio.get_running_loop().time() + 10
        while memory_count(metrics, "hit") == 1:
            assert asyncio.get_running_loop().time() < deadline, "the memory did not come back with Redis"
            await asyncio.sleep(0.25)
            await client.decide(CHAT, 300)
        assert client.memory.available


async def test_the_memory_can_be_turned_off(shared_server: RedisServer) -> None:
    async with decision_service(shared_server.url) as decider:
        async with decision_client(decider, decision_memory=False) as (client, _):
            assert client.memory is None
            sources = [(await client.decide(CHAT, 300)).source for _ in range(3)]
        assert sources == ["llm", "cache", "cache"]  # the service's own cache
        assert decider.decisions_seen() == 3


async def test_a_remembered_answer_stands_when_the_service_is_down_for_an_exploration(
    shared_server: RedisServer,
) -> None:
    async with contextlib.AsyncExitStack() as gateway:
        service = contextlib.AsyncExitStack()
        decider = await service.enter_async_context(decision_service(shared_server.url, epsilon="constant:0.5"))
        client, metrics = await gateway.enter_async_context(decision_client(decider))
        assert client.memory is not None
        while not len(client.memory):
            await client.decide(CHAT, 300)
        await service.aclose()  # the decision service is gone; the pool's Redis still answers
        client.memory.rng.seed(0)
        sources = [(await client.decide(CHAT, 300)).source for _ in range(20)]
    # No exploration can happen without the service: the remembered answer stands, never the gateway's rule.
    assert set(sources) == {"cache"}
    assert GATEWAY_FALLBACK not in sources
    assert memory_count(metrics, "explore") > 0


async def test_a_memory_hit_says_cache_and_its_real_wait_in_the_headers(shared_server: RedisServer) -> None:
    async with (
        decision_service(shared_server.url) as decider,
        backend(answer(200, COMPLETION)) as edge_url,
        backend(answer(200, COMPLETION)) as cloud_url,
    ):
        settings = gateway_settings(
            decider, edge_url=edge_url, cloud_url=cloud_url, classify_prompts=False, lengths_redis_url=None,
            limits_redis_url=None,
        )  # fmt: skip
        gateway = GatewayService(settings, GatewayMetrics())
        await gateway.start()
        try:
            request = ChatCompletionRequest(model="edgecloud-auto", messages=[{"role": "user", "content": "hi"}])
            hints = RequestHints(service_type="chat")
            first = (await gateway.generate(Endpoint.CHAT, request, hints)).headers
            second = (await gateway.generate(Endpoint.CHAT, request, hints)).headers
        finally:
            await gateway.close()
    assert (first[DECISION_SOURCE_HEADER], first[ROUTE_HEADER]) == ("llm", "edge")
    assert (second[DECISION_SOURCE_HEADER], second[ROUTE_HEADER]) == ("cache", "edge")
    assert 0 < float(second[DECISION_LATENCY_MS_HEADER]) < HIT_S * 1000
    assert decider.decisions_seen() == 1


# --- batched experiences -------------------------------------------------------------------------


def served(index: int) -> ServedRequest:
    return ServedRequest(
        request_id=f"req-{index:04d}", service_type=CHAT, estimated_tokens=300, action=Action.LOCAL, source="llm",
        generation_s=1.0 + index / 1000, quality_met=True, route="edge", model="m",
    )  # fmt: skip


async def logged_request_ids(redis_url: str, namespace: PoolNamespace) -> list[str]:
    pool = RedisExperiencePool(redis_client(redis_url, 0.5))
    try:
        return [experience.request_id for experience in reversed(await pool.latest(namespace, 10_000))]
    finally:
        await pool.aclose()


async def wait_until_sent(writer: ExperienceWriter, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while writer.queued:
        assert asyncio.get_running_loop().time() < deadline, f"{writer.queued} experiences still wait"
        await asyncio.sleep(0.05)


async def test_batches_keep_the_order_and_lose_nothing_while_the_service_is_down_and_back(
    shared_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, count = free_port(), 250
    cell = f"t{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(decision_url=f"http://127.0.0.1:{port}", cell=cell, experience_batch_wait_s=0.01)
    metrics = GatewayMetrics()
    writer = ExperienceWriter(settings, metrics)
    monkeypatch.setattr("edgecloud.gateway.experiences.RETRY_INTERVAL_S", 0.2)
    await writer.start()
    try:
        for index in range(count):  # the decision service is not there yet
            writer.served(served(index), over_the_air=False)
        await asyncio.sleep(0.5)
        assert writer.queued == count
        async with decision_service(shared_server.url, port=port) as decider:
            batches: list[int] = []
            record_batch = decider.service.record_batch

            async def counted(batch: Any) -> Any:
                batches.append(len(batch.experiences))
                return await record_batch(batch)

            monkeypatch.setattr(decider.service, "record_batch", counted)
            await wait_until_sent(writer)
            for index in range(count, count + 30):  # and while it is up
                writer.served(served(index), over_the_air=False)
            await wait_until_sent(writer)
    finally:
        await writer.close()
    ids = await logged_request_ids(shared_server.url, PoolNamespace(cell, "icl"))
    assert ids == [f"req-{index:04d}" for index in range(count + 30)]  # all, once each, in order
    assert sum(batches) == count + 30 and len(batches) <= 6  # a few posts, not one per request
    assert max(batches) == settings.experience_batch_size
    assert metrics.experiences.labels("stored")._value.get() == count + 30


async def test_a_batch_whose_reply_was_lost_is_sent_again_and_not_counted_twice(
    shared_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    cell = f"t{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(decision_url=f"http://127.0.0.1:{port}", cell=cell)
    monkeypatch.setattr("edgecloud.gateway.experiences.RETRY_INTERVAL_S", 0.1)
    writer = ExperienceWriter(settings, GatewayMetrics())
    async with decision_service(shared_server.url, port=port) as decider:
        record_batch, posts = decider.service.record_batch, []

        async def recorded_then_failed(batch: Any) -> Any:
            answer = await record_batch(batch)
            posts.append([experience.experience_id for experience in batch.experiences])
            if len(posts) == 1:
                raise RuntimeError("the reply is lost after the experiences were recorded")
            return answer

        monkeypatch.setattr(decider.service, "record_batch", recorded_then_failed)
        for index in range(5):
            writer.served(served(index), over_the_air=False)
        await writer.start()
        try:
            await wait_until_sent(writer)
        finally:
            await writer.close()
        duplicates = [
            sample.value
            for sample in _samples(decider.service.metrics.experiences, "_total")
            if sample.labels["outcome"] == "duplicate"
        ]
    assert len(posts) == 2 and posts[0] == posts[1]  # the same batch, the same ids
    assert duplicates == [5.0]
    ids = await logged_request_ids(shared_server.url, PoolNamespace(cell, "icl"))
    assert ids == [f"req-{index:04d}" for index in range(5)]


async def test_what_waits_at_a_stop_is_posted_before_the_gateway_goes(shared_server: RedisServer) -> None:
    port = free_port()
    cell = f"t{uuid.uuid4().hex[:12]}"
    # A batch wait longer than the test: only the stop sends them.
    settings = GatewaySettings(decision_url=f"http://127.0.0.1:{port}", cell=cell, experience_batch_wait_s=60)
    metrics = GatewayMetrics()
    writer = ExperienceWriter(settings, metrics)
    async with decision_service(shared_server.url, port=port):
        await writer.start()
        for index in range(7):
            writer.served(served(index), over_the_air=False)
        await asyncio.sleep(0.1)
        await writer.close()
    ids = await logged_request_ids(shared_server.url, PoolNamespace(cell, "icl"))
    assert ids == [f"req-{index:04d}" for index in range(7)]
    assert metrics.experiences.labels("stored")._value.get() == 7
    assert metrics.experiences.labels("dropped_at_stop")._value.get() == 0


async def test_what_a_stop_could_not_post_is_posted_by_the_next_start(shared_server: RedisServer, tmp_path) -> None:
    """The decision service down at the gateway's stop: the spool file carries the experiences to the next one."""
    port, spool = free_port(), tmp_path / "gateway-spool.jsonl"
    cell = f"t{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(
        decision_url=f"http://127.0.0.1:{port}", cell=cell, experience_stop_timeout_s=0.5, experience_spool=spool
    )
    stopped = ExperienceWriter(settings, GatewayMetrics())
    await stopped.start()
    for index in range(4):
        stopped.served(served(index), over_the_air=False)
    await stopped.close()
    assert len(spool.read_text().splitlines()) == 4
    metrics = GatewayMetrics()
    started = ExperienceWriter(settings, metrics)
    async with decision_service(shared_server.url, port=port):
        await started.start()
        try:
            await wait_until_sent(started)
        finally:
            await started.close()
    assert await logged_request_ids(shared_server.url, PoolNamespace(cell, "icl")) == [
        f"req-{index:04d}" for index in range(4)
    ]
    assert metrics.experiences.labels("stored")._value.get() == 4 and not spool.exists()


async def test_a_crash_while_the_decision_service_is_down_loses_only_the_last_retry_intervals(
    shared_server: RedisServer, tmp_path
) -> None:
    """No stop, no stop-time spool: the file kept current at each failed post carries what waited to the next start,
    and goes once the service has stored it."""
    port, spool = free_port(), tmp_path / "gateway-spool.jsonl"
    cell = f"t{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(decision_url=f"http://127.0.0.1:{port}", cell=cell, experience_spool=spool)
    crashed = ExperienceWriter(settings, GatewayMetrics())
    await crashed.start()
    for index in range(3):
        crashed.served(served(index), over_the_air=False)
    await until(lambda: spool.exists() and len(spool.read_text().splitlines()) == 3)
    crashed.served(served(3), over_the_air=False)  # appended at the next retry, a second later
    await until(lambda: len(spool.read_text().splitlines()) == 4)
    for task in crashed._tasks:  # the crash: the tasks end, nothing posts or writes at a stop
        task.cancel()
    assert crashed._session is not None
    await crashed._session.close()
    metrics = GatewayMetrics()
    started = ExperienceWriter(settings, metrics)
    await started.start()
    try:
        assert started.queued == 4
        await until(spool.exists)  # read back at the start and kept until posted
        async with decision_service(shared_server.url, port=port):
            await wait_until_sent(started)
            assert not spool.exists()  # all stored: the copy goes
    finally:
        await started.close()
    assert await logged_request_ids(shared_server.url, PoolNamespace(cell, "icl")) == [
        f"req-{index:04d}" for index in range(4)
    ]
    assert metrics.experiences.labels("stored")._value.get() == 4


async def test_the_pool_version_key_is_the_one_the_decision_service_moves(shared_server: RedisServer) -> None:
    """The contract: the gateway reads the key the decision service increments (core.wire.pool_version_key)."""
    async with decision_service(shared_server.url) as decider, decision_client(decider) as (client, _):
        version = await add_example(decider, CHAT, Action.LOCAL, 3.0)
        redis = redis_client(decider.redis_url, 0.5)
        try:
            assert int(await redis.get(pool_version_key(decider.cell, "icl"))) == version
        finally:
            await redis.aclose()
        await client.decide(CHAT, 300)
        assert client.memory is not None
        view = await client.memory.view()
        assert view is not None and view.version == version


@contextlib.asynccontextmanager
async def memory_on_a_pool(
    server: RedisServer, version: int, scorer: str, *, timeout_s: float
) -> AsyncIterator[DecisionMemory]:
    """A started ``DecisionMemory`` on a fresh pool whose version and scorer are set in ``server``."""
    cell = f"memory-{uuid.uuid4().hex[:8]}"
    async with redis_client(server.url, 1.0) as redis:
        await redis.mset({pool_version_key(cell, "icl"): version, pool_scorer_key(cell, "icl"): scorer})
    memory = DecisionMemory(server.url, cell, "icl", timeout_s=timeout_s, retry_interval_s=5.0)
    await memory.start()
    try:
        yield memory
    finally:
        await memory.close()


async def test_decisions_in_flight_together_share_one_version_read(shared_server: RedisServer) -> None:
    """Under load one MGET answers every decision that needs the view meanwhile; a decision whose client left (its
    task cancelled) does not cancel the read the others wait for."""
    async with memory_on_a_pool(shared_server, 4, "scorer-a", timeout_s=1.0) as memory:
        assert memory._client is not None
        reads = 0
        mget = memory._client.mget

        async def counted_mget(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)  # a read slow enough for the others to arrive during it
            return await mget(*args, **kwargs)

        memory._client.mget = counted_mget  # type: ignore[method-assign]
        leaving = asyncio.create_task(memory.view())
        staying = [asyncio.create_task(memory.view()) for _ in range(20)]
        await asyncio.sleep(0.01)
        leaving.cancel()
        views = await asyncio.gather(*staying)
        assert reads == 1 and leaving.cancelled()
        assert {(view.version, view.scorer) for view in views if view is not None} == {(4, "scorer-a")}
        assert all(view is not None for view in views)
        await memory.view()  # the read is over: the next decision reads anew
        assert reads == 2


async def test_the_version_read_has_a_budget_of_its_own(shared_server: RedisServer) -> None:
    """The memory reads with GATEWAY_DECISION_MEMORY_TIMEOUT_S, not the 50 ms of the gateway's other Redis calls (which
    expired on most reads of a saturated gateway, BENCHMARKS.md), and a read whose reply waited behind a busy loop
    for longer than 50 ms still gives its view."""
    settings = GatewaySettings(decision_url="http://127.0.0.1:9/v1", decision_redis_url=shared_server.url)
    assert settings.decision_memory_timeout_s > 0.12 > settings.redis_timeout_s
    client = DecisionClient(settings, GatewayMetrics())
    assert client.memory is not None and client.memory._guard.timeout_s == settings.decision_memory_timeout_s
    async with memory_on_a_pool(shared_server, 2, "scorer-b", timeout_s=settings.decision_memory_timeout_s) as memory:
        reading = asyncio.create_task(memory.view())
        await asyncio.sleep(0)  # the MGET is sent
        time.sleep(0.12)  # the event loop busy: the reply waits in the socket
        view = await reading
        assert view is not None and (view.version, view.scorer) == (2, "scorer-b")
        assert memory.available
