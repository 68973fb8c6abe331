"""The Redis experience pool against a real redis-server: the replay rules of section III-B in Lua agree
with ``replay.replay``, hold under concurrent writers, survive a restart; the resilient wrapper buffers
while Redis is down and flushes when it is back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conftest import until
from edgecloud.core.vocabulary import Action, Evaluation, ReplayOutcome, ServiceType, TaskState
from edgecloud.decision.experience import Experience
from edgecloud.decision.pool import ExperiencePool, InMemoryExperiencePool, OfferResult, PoolNamespace
from edgecloud.decision.redis_pool import RedisExperiencePool
from edgecloud.decision.resilient_pool import UNKNOWN_VERSION, ResilientExperiencePool
from redis_server import RedisServer

STATES = [
    TaskState(ServiceType.CHAT, "1-128"),
    TaskState(ServiceType.MATH, "513-1024"),
    TaskState(ServiceType.CODING, ">2048"),
    TaskState(ServiceType.TRANSLATION, "129-512"),
]


def experience(state: TaskState, reward: float, quality_met: bool = True, source: str = "test") -> Experience:
    return Experience(
        state=state,
        action=Action.LOCAL if reward % 2 < 1 else Action.OFFLOAD,
        reward=reward,
        transmission_s=0.05,
        generation_s=1.5,
        quality_met=quality_met,
        created_at=1_700_000_000.0,
        source=source,
    )


@asynccontextmanager
async def redis_pool(server: RedisServer, **options: object) -> AsyncIterator[RedisExperiencePool]:
    """A pool on its own client: short timeouts and no retries, so a stopped server fails fast."""
    client = redis.Redis(port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        yield RedisExperiencePool(client, **options)  # type: ignore[arg-type]
    finally:
        await client.aclose()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> PoolNamespace:
    return PoolNamespace(cell=request.node.name, policy="icl")


async def offer_both(
    pools: tuple[ExperiencePool, ExperiencePool], namespace: PoolNamespace, offered: Experience
) -> ReplayOutcome:
    """Offer to both pools; they must agree on the outcome and the version."""
    first, second = [await pool.offer(namespace, offered) for pool in pools]
    assert first == second, offered
    return first.outcome


async def assert_same_pools(pools: tuple[ExperiencePool, ExperiencePool], namespace: PoolNamespace) -> None:
    first, second = pools
    assert await first.snapshot(namespace) == await second.snapshot(namespace)
    assert await first.version(namespace) == await second.version(namespace)
    assert await first.latest(namespace, 1000) == await second.latest(namespace, 1000)


async def test_each_rule_agrees_with_replay(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    chat, math = STATES[0], STATES[1]
    steps = [
        (experience(chat, 10.0), ReplayOutcome.ADDED, 1),  # rule 1: new keywords
        (experience(chat, 12.5), ReplayOutcome.REPLACED, 2),  # rule 2: higher reward
        (experience(chat, 3.0), ReplayOutcome.KEPT_EXISTING, 2),  # rule 2: lower reward
        (experience(chat, 12.5, source="tie"), ReplayOutcome.KEPT_EXISTING, 2),  # equal: the stored one stays
        (experience(chat, 99.0, quality_met=False), ReplayOutcome.REJECTED_BAD, 2),  # step 3: constraint violated
        (experience(math, 99.0, quality_met=False), ReplayOutcome.REJECTED_BAD, 2),  # even on new keywords
        (experience(math, -40.0), ReplayOutcome.ADDED, 3),
        (experience(math, 0.1 + 0.2), ReplayOutcome.REPLACED, 4),
        (experience(math, 0.3), ReplayOutcome.KEPT_EXISTING, 4),  # 0.3 < 0.30000000000000004: exact doubles
    ]
    async with redis_pool(shared_server) as pool:
        pools = (pool, InMemoryExperiencePool())
        for offered, outcome, version in steps:
            result = await pool.offer(namespace, offered)
            assert (result.outcome, result.version) == (outcome, version), offered
            assert await pools[1].offer(namespace, offered) == result
        await assert_same_pools(pools, namespace)
        snapshot = await pool.snapshot(namespace)
        assert [(example.state, example.reward, example.evaluation) for example in snapshot.examples] == [
            (chat, 12.5, Evaluation.GOOD),
            (math, 0.1 + 0.2, Evaluation.GOOD),
        ]
        log = await pool.latest(namespace, len(steps))
        assert [entry.evaluation for entry in reversed(log)] == [outcome.evaluation for _, outcome, _ in steps]


async def test_random_sequence_agrees_with_in_memory_pool(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    rng = random.Random(20240607)
    async with redis_pool(shared_server) as pool:
        pools = (pool, InMemoryExperiencePool())
        outcomes = []
        for index in range(300):
            # Rewards from a small grid give ties; uniform ones give near misses.
            reward = rng.choice([rng.uniform(-80, 30), float(rng.randint(-5, 5))])
            offered = experience(rng.choice(STATES), reward, quality_met=rng.random() > 0.2, source=f"offer-{index}")
            outcomes.append(await offer_both(pools, namespace, offered))
        await assert_same_pools(pools, namespace)
    assert set(outcomes) == set(ReplayOutcome)


async def test_concurrent_writers_keep_the_best_example(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    rng = random.Random(7)
    plans = [
        [experience(rng.choice(STATES), rng.uniform(-80, 30), rng.random() > 0.2, f"w{writer}-{n}") for n in range(10)]
        for writer in range(50)
    ]

    async def writer(plan: list[Experience]) -> list[ReplayOutcome]:
        async with redis_pool(shared_server) as pool:
            outcomes = []
            for offered in plan:
                outcomes.append((await pool.offer(namespace, offered)).outcome)
                await asyncio.sleep(0)
            return outcomes

    results = await asyncio.gather(*(writer(plan) for plan in plans))
    offered = [item for plan in plans for item in plan]
    best: dict[TaskState, Experience] = {}
    for item in offered:
        if item.quality_met and (item.state not in best or item.reward > best[item.state].reward):
            best[item.state] = item
    changes = sum(outcome.changes_pool for outcomes in results for outcome in outcomes)
    async with redis_pool(shared_server) as pool:
        snapshot = await pool.snapshot(namespace)
        assert snapshot.examples == tuple(best[state] for state in sorted(best, key=lambda state: state.key))
        assert snapshot.version == changes == await pool.version(namespace)
        assert await pool.client.xlen(f"{namespace.prefix}:log") == len(offered)


async def test_pool_survives_a_restart(own_server: RedisServer, namespace: PoolNamespace) -> None:
    async with redis_pool(own_server) as pool:
        for index, state in enumerate(STATES):
            await pool.offer(namespace, experience(state, float(index)))
            await pool.offer(namespace, experience(state, index + 0.5, quality_met=False))
        before = (await pool.snapshot(namespace), await pool.latest(namespace, 100))
    own_server.kill()  # a crash: only the append-only file survives
    own_server.start()
    async with redis_pool(own_server) as pool:
        assert (await pool.snapshot(namespace), await pool.latest(namespace, 100)) == before
        # The script cache is empty after a restart: the script is loaded again.
        result = await pool.offer(namespace, experience(STATES[0], 50.0))
        assert (result.outcome, result.version) == (ReplayOutcome.REPLACED, before[0].version + 1)


async def test_latest_clear_and_namespaces(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    other = PoolNamespace(cell=namespace.cell, policy="latest")
    async with redis_pool(shared_server) as pool:
        offered = [experience(STATES[index % 2], float(index), source=str(index)) for index in range(5)]
        for item in offered:
            await pool.offer(namespace, item)
        assert [item.source for item in await pool.latest(namespace, 3)] == ["4", "3", "2"]
        assert await pool.latest(namespace, 0) == []
        assert await pool.latest(other, 3) == []
        assert await pool.version(other) == 0

        await pool.offer(other, experience(STATES[2], 1.0))
        version = await pool.version(namespace)
        assert await pool.clear(namespace) == version + 1
        snapshot = await pool.snapshot(namespace)
        assert (snapshot.version, snapshot.examples) == (version + 1, ())
        assert len(await pool.latest(namespace, 100)) == 5  # the log stays
        assert [example.state for example in (await pool.snapshot(other)).examples] == [STATES[2]]
        # After a clear, the rules start again from an empty pool.
        result = await pool.offer(namespace, experience(STATES[0], -100.0))
        assert (result.outcome, result.version) == (ReplayOutcome.ADDED, version + 2)


async def test_log_is_capped(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    async with redis_pool(shared_server, log_length=10) as pool:
        for index in range(300):
            await pool.offer(namespace, experience(STATES[0], float(index % 7)))
        # MAXLEN ~ trims whole stream nodes (100 entries by default): near the cap, never the full 300.
        assert 10 <= await pool.client.xlen(f"{namespace.prefix}:log") <= 110


async def test_resilient_pool_buffers_while_redis_is_down(own_server: RedisServer, namespace: PoolNamespace) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0)
        await pool.offer(namespace, experience(STATES[0], 1.0))
        known = await pool.snapshot(namespace)
        assert not known.stale and known.version == 1

        own_server.stop()
        started = time.monotonic()
        down = [experience(STATES[index % 3], 10.0 + index, source=f"down-{index}") for index in range(6)]
        results = [await pool.offer(namespace, item) for item in down]
        assert time.monotonic() - started < 5
        assert all(result.buffered and result.version == 1 for result in results)
        assert results[0].outcome == ReplayOutcome.REPLACED  # provisional: against the last snapshot seen
        assert (pool.buffered_count, pool.dropped_count, pool.available) == (6, 0, False)
        stale = await pool.snapshot(namespace)
        assert stale.stale and (stale.version, stale.examples) == (known.version, known.examples)
        assert await pool.version(namespace) == 1
        assert [item.source for item in await pool.latest(namespace, 2)] == ["down-5", "down-4"]

        own_server.start()
        assert await pool.version(namespace) == 7  # the flush ran first: each of the six changed the pool
        assert (pool.buffered_count, pool.available) == (0, True)
        snapshot = await pool.snapshot(namespace)
        assert not snapshot.stale
        assert [example.source for example in snapshot.examples] == ["down-3", "down-5", "down-4"]
        assert [item.source for item in await store.latest(namespace, 6)] == [item.source for item in reversed(down)]


async def test_a_quiet_pool_pushes_what_waited_once_the_store_is_back(
    own_server: RedisServer, namespace: PoolNamespace
) -> None:
    """No request comes after the outage: the background flush alone brings the pool up to date."""
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0.2)
        await pool.version(namespace)
        own_server.stop()
        assert (await pool.offer(namespace, experience(STATES[0], 2.0, source="waited"))).buffered
        flusher = asyncio.create_task(pool.keep_flushing())
        try:
            await asyncio.sleep(0.5)  # tries while the store is still down: nothing raises, nothing is lost
            assert (pool.buffered_count, flusher.done()) == (1, False)
            own_server.start()
            deadline = time.monotonic() + 5
            while pool.buffered_count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            flusher.cancel()
        assert (pool.buffered_count, pool.available) == (0, True)
        assert [item.source for item in await store.latest(namespace, 5)] == ["waited"]


async def test_resilient_pool_drops_the_oldest_beyond_its_bound(
    own_server: RedisServer, namespace: PoolNamespace
) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, buffer_size=3, retry_interval_s=0)
        assert (await pool.snapshot(namespace)).version == 0
        own_server.stop()
        assert (await pool.snapshot(namespace)).stale
        for index in range(5):
            assert (await pool.offer(namespace, experience(STATES[0], float(index), source=str(index)))).buffered
        assert (pool.buffered_count, pool.dropped_count) == (3, 2)
        own_server.start()
        assert await pool.flush() == 3
        assert [item.source for item in await store.latest(namespace, 10)] == ["4", "3", "2"]


async def test_resilient_pool_keeps_the_order_of_offers(own_server: RedisServer, namespace: PoolNamespace) -> None:
    """Offers made while a flush runs go behind it: with equal rewards, the first offered stays stored."""
    reference = InMemoryExperiencePool()
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0)
        await pool.version(namespace)
        own_server.stop()
        rng = random.Random(3)
        sequence = [experience(rng.choice(STATES), float(rng.randint(0, 3)), source=f"b{n}") for n in range(100)]
        for item in sequence:
            await pool.offer(namespace, item)
        own_server.start()
        later = [experience(rng.choice(STATES), float(rng.randint(0, 3)), source=f"l{n}") for n in range(20)]
        flushing = asyncio.create_task(pool.snapshot(namespace))  # starts first, flushes the buffer
        results = await asyncio.gather(*(pool.offer(namespace, item) for item in later))
        await flushing
        assert all(result.buffered for result in results)  # all waited behind the flush
        await pool.flush()
        for item in sequence + later:
            await reference.offer(namespace, item)
        assert await store.snapshot(namespace) == await reference.snapshot(namespace)
        assert await store.latest(namespace, 200) == await reference.latest(namespace, 200)


async def test_resilient_pool_waits_before_trying_the_store_again(
    own_server: RedisServer, namespace: PoolNamespace
) -> None:
    now = [0.0]
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=5.0, clock=lambda: now[0])
        assert await pool.version(namespace) == 0
        own_server.stop()
        assert (await pool.offer(namespace, experience(STATES[0], 1.0))).buffered
        own_server.start()
        now[0] = 4.0  # back, but within the interval: the store is not tried
        assert (await pool.offer(namespace, experience(STATES[0], 2.0))).buffered
        assert await pool.version(namespace) == 0 and pool.buffered_count == 2
        now[0] = 5.0
        assert await pool.version(namespace) == 2 and pool.buffered_count == 0


async def test_resilient_pool_without_any_snapshot_seen(own_server: RedisServer, namespace: PoolNamespace) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0)
        own_server.stop()
        snapshot = await pool.snapshot(namespace)
        assert (snapshot.version, snapshot.examples, snapshot.stale) == (UNKNOWN_VERSION, (), True)
        result = await pool.offer(namespace, experience(STATES[1], 1.0, quality_met=False))
        assert (result.outcome, result.version, result.buffered) == (ReplayOutcome.REJECTED_BAD, UNKNOWN_VERSION, True)
        with pytest.raises(redis.ConnectionError):
            await pool.clear(namespace)


async def test_an_experience_with_an_id_is_recorded_once(shared_server: RedisServer, namespace: PoolNamespace) -> None:
    """Offered again (a post whose reply was lost), it changes nothing, and its first result comes back."""
    memory: InMemoryExperiencePool = InMemoryExperiencePool()
    async with redis_pool(shared_server) as store:
        for pool in (store, memory):
            first = dataclasses.replace(experience(STATES[0], 5.0), experience_id="once")
            assert await pool.offer(namespace, first) == OfferResult(ReplayOutcome.ADDED, 1)
            better = dataclasses.replace(experience(STATES[0], 9.0), experience_id="once")  # same id, other content
            assert await pool.offer(namespace, better) == OfferResult(ReplayOutcome.ADDED, 1, duplicate=True)
            assert await pool.version(namespace) == 1
            assert len(await pool.latest(namespace, 10)) == 1  # logged once
            anonymous = experience(STATES[0], 5.0)  # no id: every offer counts, as before
            assert (await pool.offer(namespace, anonymous)).outcome is ReplayOutcome.KEPT_EXISTING
            assert (await pool.offer(namespace, anonymous)).outcome is ReplayOutcome.KEPT_EXISTING
            assert len(await pool.latest(namespace, 10)) == 3


async def test_resilient_pool_buffers_an_experience_once(own_server: RedisServer, namespace: PoolNamespace) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0)
        await pool.version(namespace)
        own_server.stop()
        held = dataclasses.replace(experience(STATES[1], 3.0), experience_id="held")
        first = await pool.offer(namespace, held)
        again = await pool.offer(namespace, held)
        assert first.buffered and not first.duplicate
        assert again.buffered and again.duplicate and again.outcome == first.outcome
        assert pool.buffered_count == 1
        own_server.start()
        assert await pool.version(namespace) == 1  # flushed once
        assert (await pool.offer(namespace, held)).duplicate  # and the store knows it now
        assert len(await store.latest(namespace, 10)) == 1


async def test_a_batch_of_offers_agrees_with_offering_one_at_a_time(
    shared_server: RedisServer, namespace: PoolNamespace
) -> None:
    """``offer_many`` (one pipeline) gives each experience the result one ``offer`` after the other gives, across
    two pools and with an id repeated inside the batch; the batch is one round trip to Redis."""
    rng = random.Random(14)
    other = dataclasses.replace(namespace, policy="random")
    offers = [
        (
            rng.choice((namespace, other)),
            dataclasses.replace(
                experience(rng.choice(STATES), float(rng.randint(-5, 5)), quality_met=rng.random() > 0.2),
                experience_id=f"id-{rng.randint(0, 30)}",
            ),
        )
        for _ in range(80)
    ]
    memory = InMemoryExperiencePool()
    expected = [await memory.offer(pool_of, offered) for pool_of, offered in offers]
    assert any(result.duplicate for result in expected)
    async with redis_pool(shared_server) as pool:
        sent: list[object] = []
        original = pool.client.connection_pool.get_connection

        async def counted(*args: object, **kwargs: object) -> object:
            sent.append(args)
            return await original(*args, **kwargs)

        pool.client.connection_pool.get_connection = counted  # type: ignore[method-assign]
        assert await pool.offer_many(offers) == expected
        assert len(sent) == 1
        for pool_of in (namespace, other):
            assert await pool.snapshot(pool_of) == await memory.snapshot(pool_of)


async def test_resilient_pool_buffers_a_batch_while_redis_is_down(
    own_server: RedisServer, namespace: PoolNamespace
) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0)
        await pool.version(namespace)
        own_server.stop()
        batch = [(namespace, experience(STATES[index], 1.0 + index, source=f"batch-{index}")) for index in range(3)]
        results = await pool.offer_many(batch)
        assert all(result.buffered for result in results) and pool.buffered_count == 3
        own_server.start()
        assert await pool.version(namespace) == 3  # flushed, in order
        assert [item.source for item in await store.latest(namespace, 3)] == ["batch-2", "batch-1", "batch-0"]


async def test_experiences_waiting_at_a_stop_are_spooled_and_sent_first_by_the_next_pool(
    own_server: RedisServer, namespace: PoolNamespace, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    waiting = [dataclasses.replace(experience(STATES[k], 3.0 + k), experience_id=f"w{k}") for k in range(3)]
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0, spool_path=spool)
        await pool.version(namespace)
        own_server.stop()
        for held in waiting:
            assert (await pool.offer(namespace, held)).buffered
        await pool.close()  # the store still down: the spool keeps them
    assert len(spool.read_text().splitlines()) == 3
    own_server.start()
    async with redis_pool(own_server) as store:
        restarted = ResilientExperiencePool(store, retry_interval_s=0, spool_path=spool)
        assert restarted.buffered_count == 3 and len(spool.read_text().splitlines()) == 3  # kept until stored
        later = dataclasses.replace(experience(STATES[0], 1.0), experience_id="later")
        await restarted.offer(namespace, later)  # the spooled ones reach the store before it
        logged = await store.latest(namespace, 10)
        assert [e.experience_id for e in reversed(logged)] == ["w0", "w1", "w2", "later"]
        assert [(e.state, e.reward) for e in reversed(logged)][:3] == [(e.state, e.reward) for e in waiting]
        await restarted.close()
    assert not spool.exists()  # nothing left to keep


async def test_a_crash_while_the_store_is_down_loses_only_what_came_since_the_last_try(
    own_server: RedisServer, namespace: PoolNamespace, tmp_path: Path
) -> None:
    """No ``close``: the file ``keep_flushing`` keeps current brings what waited to the next pool, and goes once the
    store has it."""
    spool = tmp_path / "spool.jsonl"
    waiting = [dataclasses.replace(experience(STATES[k], 3.0 + k), experience_id=f"c{k}") for k in range(3)]
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0.1, spool_path=spool)
        await pool.version(namespace)
        own_server.stop()
        flusher = asyncio.create_task(pool.keep_flushing())
        try:
            for held in waiting[:2]:
                assert (await pool.offer(namespace, held)).buffered
            await until(lambda: spool.exists() and len(spool.read_text().splitlines()) == 2)
            assert (await pool.offer(namespace, waiting[2])).buffered
            await until(lambda: len(spool.read_text().splitlines()) == 3)  # appended at the next try
        finally:
            flusher.cancel()  # the crash: no close, no spool at a stop
    own_server.start()
    async with redis_pool(own_server) as store:
        restarted = ResilientExperiencePool(store, retry_interval_s=0.1, spool_path=spool)
        assert restarted.buffered_count == 3
        own_server.stop()
        flusher = asyncio.create_task(restarted.keep_flushing())
        try:
            await until(spool.exists)  # the store down again: kept again
            own_server.start()
            await until(lambda: restarted.buffered_count == 0 and not spool.exists())  # flushed: the copy goes
        finally:
            flusher.cancel()
        logged = await store.latest(namespace, 10)
        assert [e.experience_id for e in reversed(logged)] == ["c0", "c1", "c2"]


async def test_a_stop_with_the_store_back_flushes_instead_of_spooling(
    own_server: RedisServer, namespace: PoolNamespace, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0, spool_path=spool)
        await pool.version(namespace)
        own_server.stop()
        await pool.offer(namespace, experience(STATES[1], 3.0))
        own_server.start()
        await pool.close()
        assert pool.buffered_count == 0 and not spool.exists()
        assert len(await store.latest(namespace, 10)) == 1


async def test_an_unreadable_spool_file_is_set_aside_and_the_pool_starts(
    shared_server: RedisServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    good = {"cell": "c", "policy": "icl", "experience": experience(STATES[0], 2.0).to_json()}
    spool.write_text(json.dumps(good) + "\nnot json\n")
    async with redis_pool(shared_server) as store:
        pool = ResilientExperiencePool(store, spool_path=spool)
    assert pool.buffered_count == 1  # what could be read, kept in the file again until it is stored
    assert len(spool.read_text().splitlines()) == 1
    assert (tmp_path / "spool.jsonl.unreadable").read_text().endswith("not json\n")


async def test_a_spool_that_cannot_be_written_is_logged_not_raised(
    own_server: RedisServer, namespace: PoolNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_pool(own_server) as store:
        pool = ResilientExperiencePool(store, retry_interval_s=0, spool_path=tmp_path / "missing" / "spool.jsonl")
        await pool.version(namespace)
        own_server.stop()
        await pool.offer(namespace, experience(STATES[1], 3.0))
        await pool.close()  # the stop goes on
    assert "1 experiences not handed on; the spool file" in caplog.text and "lost" in caplog.text
