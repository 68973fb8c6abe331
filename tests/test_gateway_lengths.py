"""The output-length estimator: max_tokens, then the median of observed lengths, then the prior; shared by
replicas through a real Redis, and still answering (from memory, quickly) while that Redis is down."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from edgecloud.core.vocabulary import ServiceType
from edgecloud.gateway.lengths import (
    EstimateSource,
    LengthEstimate,
    OutputLengthEstimator,
    estimation_error,
    median_tokens,
)
from edgecloud.testbed.processes import free_port
from redis_server import RedisServer

PRIORS = {service_type: 1000 for service_type in ServiceType}
CHAT = ServiceType.CHAT
# A request must never wait long for Redis: the estimator's own bound is 2 x 50 ms; leave room for a loaded CI.
FAST_S = 0.5

T = TypeVar("T")


def estimator(url: str | None, prefix: str, **options: Any) -> OutputLengthEstimator:
    return OutputLengthEstimator(url, PRIORS, key_prefix=f"test:{prefix}", **options)


@pytest.fixture
async def local() -> AsyncIterator[OutputLengthEstimator]:
    lengths = estimator(None, "local", window=5)
    await lengths.start()
    yield lengths
    await lengths.close()


# --- without Redis -----------------------------------------------------------------------------------


async def test_prior_when_nothing_was_observed(local: OutputLengthEstimator) -> None:
    assert await local.estimate(CHAT, None) == LengthEstimate(1000, EstimateSource.PRIOR)


async def test_max_tokens_wins_and_is_capped() -> None:
    lengths = estimator(None, "cap", max_tokens_cap=4096)
    for tokens in (50, 60, 70):
        await lengths.observe(CHAT, tokens)
    assert await lengths.estimate(CHAT, 300) == LengthEstimate(300, EstimateSource.MAX_TOKENS)
    assert await lengths.estimate(CHAT, 100_000) == LengthEstimate(4096, EstimateSource.MAX_TOKENS)
    assert (await lengths.estimate(CHAT, 0)).source is EstimateSource.OBSERVED  # non-positive: as if absent


async def test_observed_median_after_min_observations(local: OutputLengthEstimator) -> None:
    await local.observe(CHAT, 200)
    await local.observe(CHAT, 220)
    assert (await local.estimate(CHAT, None)).source is EstimateSource.PRIOR
    await local.observe(CHAT, 4000)  # an answer that ran to the limit does not drag the median
    assert await local.estimate(CHAT, None) == LengthEstimate(220, EstimateSource.OBSERVED, 3)
    assert (await local.estimate(ServiceType.MATH, None)).source is EstimateSource.PRIOR  # per type


async def test_window_keeps_the_last_observations(local: OutputLengthEstimator) -> None:
    for tokens in (9000, 9000, 9000, 100, 110, 120, 130, 140):
        await local.observe(CHAT, tokens)
    assert await local.estimate(CHAT, None) == LengthEstimate(120, EstimateSource.OBSERVED, 5)


async def test_zero_length_outputs_are_ignored(local: OutputLengthEstimator) -> None:
    for _ in range(5):
        await local.observe(CHAT, 0)
    assert (await local.estimate(CHAT, None)).source is EstimateSource.PRIOR


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="priors lack service types"):
        OutputLengthEstimator(None, {CHAT: 100})
    with pytest.raises(ValueError, match="at least 1 token"):
        OutputLengthEstimator(None, {**PRIORS, CHAT: 0})
    with pytest.raises(ValueError, match="window"):
        OutputLengthEstimator(None, PRIORS, window=0)
    with pytest.raises(ValueError, match="min_observations"):
        OutputLengthEstimator(None, PRIORS, window=2, min_observations=3)


def test_median_tokens() -> None:
    assert median_tokens([5]) == 5
    assert median_tokens([1, 2, 3, 1000]) == 2  # (2 + 3) / 2 = 2.5 rounds to even
    assert median_tokens([10, 11]) == 10


def test_estimation_error() -> None:
    # 300 vs 200: 100 off, 50%, bins 129-512 both; 300 vs 600: 300 off, 50%, bins differ.
    error = estimation_error([300, 300], [200, 600])
    assert error.count == 2
    assert error.mean_absolute_tokens == 200
    assert error.mean_relative == pytest.approx(0.5)
    assert error.bin_accuracy == 0.5
    assert estimation_error(300, [200, 600]) == error  # one estimate against every observation
    with pytest.raises(ValueError, match="2 estimates for 1 observations"):
        estimation_error([1, 2], [1])
    with pytest.raises(ValueError, match="no observations"):
        estimation_error([], [])


# --- with a real Redis --------------------------------------------------------------------------------


async def redis_list(server: RedisServer, key: str) -> list[int]:
    client = aioredis.Redis(port=server.port)
    try:
        return [int(value) for value in await client.lrange(key, 0, -1)]
    finally:
        await client.aclose()


async def test_replicas_share_observations(shared_server: RedisServer, request: pytest.FixtureRequest) -> None:
    first = estimator(shared_server.url, request.node.name)
    second = estimator(shared_server.url, request.node.name)
    await first.start()
    await second.start()
    try:
        assert first.redis_available and second.redis_available
        assert await second.estimate(CHAT, None) == LengthEstimate(1000, EstimateSource.PRIOR)
        for tokens in (300, 310, 320):
            await first.observe(CHAT, tokens)
        assert await second.estimate(CHAT, None) == LengthEstimate(310, EstimateSource.OBSERVED, 3)
        await second.observe(CHAT, 330)
        await second.observe(CHAT, 340)
        assert await first.estimate(CHAT, None) == LengthEstimate(320, EstimateSource.OBSERVED, 5)
        assert await first.estimate(CHAT, 64) == LengthEstimate(64, EstimateSource.MAX_TOKENS)
        assert (await first.estimate(ServiceType.CODING, None)).source is EstimateSource.PRIOR
        assert await redis_list(shared_server, first.key(CHAT)) == [340, 330, 320, 310, 300]  # newest first
    finally:
        await first.close()
        await second.close()


async def test_redis_window_is_trimmed(shared_server: RedisServer, request: pytest.FixtureRequest) -> None:
    lengths = estimator(shared_server.url, request.node.name, window=4)
    await lengths.start()
    try:
        for tokens in (5000, 5000, 100, 200, 300, 400):
            await lengths.observe(ServiceType.MATH, tokens)
        assert await redis_list(shared_server, lengths.key(ServiceType.MATH)) == [400, 300, 200, 100]
        assert await lengths.estimate(ServiceType.MATH, None) == LengthEstimate(250, EstimateSource.OBSERVED, 4)
    finally:
        await lengths.close()


async def test_foreign_entries_in_the_list_are_skipped(
    shared_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    lengths = estimator(shared_server.url, request.node.name)
    client = aioredis.Redis(port=shared_server.port)
    try:
        await client.lpush(lengths.key(CHAT), 100, "garbage", 200, -5, 300)
        await lengths.start()
        assert await lengths.estimate(CHAT, None) == LengthEstimate(200, EstimateSource.OBSERVED, 3)
    finally:
        await client.aclose()
        await lengths.close()


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


async def test_redis_down_from_the_start_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    lengths = estimator(f"redis://127.0.0.1:{free_port()}/0", "down", retry_interval_s=60)
    with caplog.at_level(logging.WARNING, logger="edgecloud.gateway.lengths"):
        await lengths.start()
        for tokens in (10, 20, 30):
            await lengths.observe(CHAT, tokens)
        estimate, elapsed = await timed(lengths.estimate(CHAT, None))
    assert estimate == LengthEstimate(20, EstimateSource.OBSERVED, 3)
    assert elapsed < FAST_S
    assert not lengths.redis_available
    assert len([record for record in caplog.records if "unreachable" in record.message]) == 1
    await lengths.close()


async def test_redis_killed_midway_then_restarted(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    retry_s = 0.3
    lengths = estimator(own_server.url, request.node.name, retry_interval_s=retry_s)
    other = estimator(own_server.url, request.node.name)  # another replica, to see what reached Redis
    await lengths.start()
    await other.start()
    try:
        for tokens in (100, 110, 120):
            await other.observe(CHAT, tokens)
        assert await lengths.estimate(CHAT, None) == LengthEstimate(110, EstimateSource.OBSERVED, 3)

        own_server.kill()
        with caplog.at_level(logging.WARNING, logger="edgecloud.gateway.lengths"):
            for tokens in (130, 140):
                _, elapsed = await timed(lengths.observe(CHAT, tokens))
                assert elapsed < FAST_S
            for _ in range(20):
                estimate, elapsed = await timed(lengths.estimate(CHAT, None))
                assert elapsed < FAST_S
                # From memory: the window last read from Redis plus this replica's own observations.
                assert estimate == LengthEstimate(120, EstimateSource.OBSERVED, 5)
            await asyncio.sleep(retry_s)  # a retry that fails again is the same outage: no second warning
            assert (await lengths.estimate(CHAT, None)).tokens == 120
        assert not lengths.redis_available
        assert len([record for record in caplog.records if "unreachable" in record.message]) == 1

        own_server.start()
        found_back_by = time.monotonic() + 10.0  # a Redis that has just restarted may answer slowly at first
        while True:
            await asyncio.sleep(retry_s)
            # From memory or from Redis, the same five lengths: none lost, none counted twice.
            assert await lengths.estimate(CHAT, None) == LengthEstimate(120, EstimateSource.OBSERVED, 5)
            if lengths.redis_available or time.monotonic() > found_back_by:
                break
        assert lengths.redis_available
        # The lengths observed during the outage reached Redis, so the other replica sees them too.
        assert await redis_list(own_server, lengths.key(CHAT)) == [140, 130, 120, 110, 100]
        await other.observe(CHAT, 150)
        assert await lengths.estimate(CHAT, None) == LengthEstimate(125, EstimateSource.OBSERVED, 6)
    finally:
        await lengths.close()
        await other.close()


async def test_a_hung_redis_costs_at_most_the_timeout(own_server: RedisServer, request: pytest.FixtureRequest) -> None:
    """A Redis that accepts nothing and answers nothing (SIGSTOP) is cut off by the 50 ms socket timeout."""
    lengths = estimator(own_server.url, request.node.name, retry_interval_s=60)
    await lengths.start()
    for tokens in (700, 800, 900):
        await lengths.observe(CHAT, tokens)
    popen = own_server.process.popen
    assert popen is not None
    os.kill(popen.pid, signal.SIGSTOP)
    try:
        estimate, elapsed = await timed(lengths.estimate(CHAT, None))
        assert estimate == LengthEstimate(800, EstimateSource.OBSERVED, 3)
        assert elapsed < FAST_S
        assert not lengths.redis_available
        _, elapsed = await timed(lengths.estimate(CHAT, None))
        assert elapsed < 0.01  # within the retry interval Redis is not asked at all
    finally:
        os.kill(popen.pid, signal.SIGCONT)
        await lengths.close()


def lose_one_reply(monkeypatch: pytest.MonkeyPatch, lengths: OutputLengthEstimator) -> list[Any]:
    """The next pipeline Redis executes has its reply lost (a timeout after Redis applied it)."""
    client = lengths._client
    assert client is not None
    real_pipeline, lost = client.pipeline, []

    def pipeline_losing_one_reply(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*execute_args: Any, **execute_kwargs: Any) -> Any:
            result = await real_execute(*execute_args, **execute_kwargs)
            if not lost:
                lost.append(result)
                raise TimeoutError("the reply was lost")
            return result

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline_losing_one_reply)
    return lost


async def test_an_observation_whose_reply_was_lost_is_counted_once(
    shared_server: RedisServer, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a push that timed out after Redis applied it was retried, and counted twice (CI, 2026-12-01)."""
    lengths = estimator(shared_server.url, request.node.name, retry_interval_s=0)
    await lengths.start()
    try:
        await lengths.observe(CHAT, 100)
        lost = lose_one_reply(monkeypatch, lengths)
        await lengths.observe(CHAT, 110)  # applied; the reply is lost; it waits to be sent again
        assert lost and not lengths.redis_available
        await lengths.observe(CHAT, 120)  # sent again (skipped by Redis), then this one
        assert await redis_list(shared_server, lengths.key(CHAT)) == [120, 110, 100]
    finally:
        await lengths.close()


async def test_a_push_whose_reply_was_lost_is_not_counted_twice(
    own_server: RedisServer, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted Redis applies the outage's batch but its reply times out: sent again, it is skipped."""
    lengths = estimator(own_server.url, request.node.name, retry_interval_s=0)
    await lengths.start()
    try:
        for tokens in (100, 110, 120):
            await lengths.observe(CHAT, tokens)
        own_server.kill()
        for tokens in (130, 140):
            await lengths.observe(CHAT, tokens)
        own_server.start()
        lost = lose_one_reply(monkeypatch, lengths)
        await lengths.estimate(CHAT, None)  # finds Redis back; the batch went in, its reply did not come
        assert lost and not lengths.redis_available
        await lengths.observe(CHAT, 150)  # sent again, skipped by Redis; then this one
        assert await redis_list(own_server, lengths.key(CHAT)) == [150, 140, 130, 120, 110, 100]
        assert await lengths.estimate(CHAT, None) == LengthEstimate(125, EstimateSource.OBSERVED, 6)
    finally:
        await lengths.close()


async def test_observations_are_pushed_in_batches(shared_server: RedisServer, request: pytest.FixtureRequest) -> None:
    """Fifty requests ending together cost a pipeline or two, not fifty round trips; none lost, none twice."""
    lengths = estimator(shared_server.url, request.node.name, batch_wait_s=0.05)
    await lengths.start()
    client = lengths._client
    assert client is not None
    real_pipeline, pipelines = client.pipeline, []

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(1)
        return real_pipeline(*args, **kwargs)

    try:
        client.pipeline = counted  # type: ignore[method-assign]
        await asyncio.gather(*(lengths.observe(CHAT, 100 + index) for index in range(50)))
        assert len(pipelines) <= 2
        assert await redis_list(shared_server, lengths.key(CHAT)) == [100 + index for index in reversed(range(50))]
        # An estimate does not push a batch on its way: it never waits for more than its own read.
        observing = asyncio.ensure_future(lengths.observe(CHAT, 999))
        await asyncio.sleep(0)
        estimate, elapsed = await timed(lengths.estimate(CHAT, None))
        assert estimate.samples == 50 and elapsed < FAST_S
        await observing
        assert (await lengths.estimate(CHAT, None)).samples == 51
    finally:
        await lengths.close()
