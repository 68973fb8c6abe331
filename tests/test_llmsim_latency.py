"""The latency model, the clocks, the profiles and the engine, in virtual time with seeded randomness."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edgecloud.core.clock import VirtualClock, sleep_until
from edgecloud.llmsim.app import COMMAND_LINE, main
from edgecloud.llmsim.engine import Engine, EngineRequest, RequestTiming
from edgecloud.llmsim.latency import LatencyModel
from edgecloud.llmsim.metrics import EngineMetrics
from edgecloud.llmsim.profiles import DEFAULT_PROFILES_FILE, LatencyProfile, load_profiles, parse_seconds
from edgecloud.llmsim.settings import LLMSimSettings


def profile(**fields: object) -> LatencyProfile:
    values: dict[str, object] = {"name": "test", "source": "test", "ttft": 1.0, "tpot": 0.1, **fields}
    return LatencyProfile(**values)  # type: ignore[arg-type]


# --- profiles and settings -----------------------------------------------------------------------


def test_packaged_profiles_have_the_papers_values_and_sources() -> None:
    profiles = load_profiles()
    assert {"llama-3-8b-edge", "gpt-4o-cloud", "gemma-7b", "gemini-1.5-pro", "llama-2-7b", "llama-2-70b"} <= set(
        profiles
    )
    assert {"llama-3.1-8b-h100", "zero"} <= set(profiles)
    assert profiles["llama-3-8b-edge"].ttft == 0.23
    assert profiles["llama-3-8b-edge"].tpot == pytest.approx(1 / 75)
    assert profiles["gpt-4o-cloud"].ttft == 0.42
    assert profiles["gpt-4o-cloud"].tpot == pytest.approx(1 / 32)
    for name, tokens_per_second in {"gemma-7b": 155, "gemini-1.5-pro": 58, "llama-2-7b": 89, "llama-2-70b": 40}.items():
        assert profiles[name].tpot == pytest.approx(1 / tokens_per_second)
        assert "ASSUMPTION" in profiles[name].assumptions
    assert all(p.source for p in profiles.values())
    zero = profiles["zero"]
    assert zero.is_instant and zero.jitter == 0 and zero.max_num_seqs >= 1024


def test_seconds_parse_numbers_and_fractions() -> None:
    assert parse_seconds("1/75", field="tpot") == pytest.approx(1 / 75)
    assert parse_seconds(0.23, field="ttft") == 0.23
    for bad in ("fast", "1/0", True, None):
        with pytest.raises(ValueError, match="fraction like"):
            parse_seconds(bad, field="tpot")


def test_profile_validation_is_specific(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jitter must be in"):
        profile(jitter=1.5)
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  x:\n    source: s\n    ttft: 0.1\n    tpot: 0.1\n    speed: 3\n")
    with pytest.raises(ValueError, match="unknown fields \\['speed'\\]"):
        load_profiles(path)


def test_settings_reject_an_unknown_profile_listing_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSIM_PROFILE", "gpt-5")
    with pytest.raises(ValueError, match=r"unknown latency profile 'gpt-5'; known profiles: .*llama-3-8b-edge"):
        LLMSimSettings()


def test_settings_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LLMSimSettings()
    assert (settings.port, settings.profile, settings.served_model_name) == (8002, "gpt-4o-cloud", "gpt-4o-cloud")
    assert settings.profiles_file == DEFAULT_PROFILES_FILE
    monkeypatch.setenv("LLMSIM_MAX_NUM_SEQS", "3")
    monkeypatch.setenv("LLMSIM_MODEL", "edge")
    settings = LLMSimSettings(profile="zero")
    assert settings.resolve_profile().max_num_seqs == 3
    assert settings.served_model_names == ["edge"]
    with pytest.raises(ValueError, match="at most 1"):
        LLMSimSettings(fail_429_rate=0.7, fail_503_rate=0.7)
    assert all(field.description for field in LLMSimSettings.model_fields.values())


def test_cli_flags_override_and_bad_settings_exit_with_the_reason() -> None:
    assert COMMAND_LINE.overrides(["--port", "9000", "--profile", "zero"]) == {"port": 9000, "profile": "zero"}
    with pytest.raises(SystemExit, match="unknown latency profile 'nope'"):
        main(["--profile", "nope"])


# --- latency model -------------------------------------------------------------------------------


def test_jitter_is_bounded_unbiased_and_seeded() -> None:
    model = LatencyModel(profile(ttft=0.23, tpot=1 / 75, jitter=0.1))
    rng = random.Random(7)
    ttfts = [model.ttft(rng) for _ in range(20_000)]
    tpots = [model.tpot(rng) for _ in range(20_000)]
    assert min(ttfts) >= 0.23 * 0.9 and max(ttfts) <= 0.23 * 1.1
    assert min(tpots) >= (1 / 75) * 0.9 and max(tpots) <= (1 / 75) * 1.1
    assert sum(ttfts) / len(ttfts) == pytest.approx(0.23, rel=0.005)
    assert sum(tpots) / len(tpots) == pytest.approx(1 / 75, rel=0.005)
    again = random.Random(7)
    assert [model.ttft(again) for _ in range(5)] == ttfts[:5]


def test_slowdown_grows_linearly_with_running_sequences() -> None:
    model = LatencyModel(profile(tpot=0.01, slowdown_per_seq=0.05))
    rng = random.Random(0)
    assert model.tpot(rng, running=1) == pytest.approx(0.01)
    assert model.tpot(rng, running=11) == pytest.approx(0.01 * 1.5)
    assert model.slowdown(0) == 1.0


# --- clocks --------------------------------------------------------------------------------------


def test_virtual_clock_runs_asyncio_in_simulated_time() -> None:
    clock = VirtualClock()

    async def sleeper(deadline: float) -> float:
        await sleep_until(clock, deadline)
        return clock.now()

    async def main() -> list[float]:
        return await asyncio.gather(*(sleeper(float(d)) for d in (3600, 5, 60)))

    wall = time.perf_counter()
    assert clock.run(main()) == [3600.0, 5.0, 60.0]
    assert time.perf_counter() - wall < 1.0
    assert clock.now() == 3600.0


# --- engine --------------------------------------------------------------------------------------


async def collect(engine: Engine, request: EngineRequest, clock: VirtualClock) -> tuple[list[float], RequestTiming]:
    """The release time of every token of one request, and its timing record."""
    times: list[float] = []
    timing = RequestTiming(arrival=clock.now())
    async for count in engine.generate(request, timing):
        times += [clock.now()] * count
    return times, timing


def test_tokens_are_released_at_absolute_deadlines() -> None:
    clock = VirtualClock()
    engine = Engine(profile(ttft=0.5, tpot=0.25), clock=clock, rng=random.Random(0))
    times, timing = clock.run(collect(engine, EngineRequest(prompt_tokens=3, output_tokens=5), clock))
    assert times == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert (timing.ttft, timing.e2e, timing.output_tokens, timing.finish_reason) == (0.5, 1.5, 5, "length")


def test_jittered_deadlines_follow_the_seeded_draws() -> None:
    lat = profile(ttft=0.23, tpot=1 / 75, jitter=0.1)
    clock = VirtualClock()
    engine = Engine(lat, clock=clock, rng=random.Random(0))
    times, _ = clock.run(collect(engine, EngineRequest(1, 50, seed=42), clock))
    rng, model = random.Random(42), LatencyModel(lat)
    expected = [model.ttft(rng)]
    for _ in range(49):
        expected.append(expected[-1] + model.tpot(rng))
    assert times == pytest.approx(expected)
    other = VirtualClock()
    engine = Engine(lat, clock=other, rng=random.Random(9))
    again, _ = other.run(collect(engine, EngineRequest(1, 50, seed=42), other))
    assert again == times  # same seed, same jitter, whatever the engine's own seed


def test_requests_beyond_max_num_seqs_wait_in_fifo_order() -> None:
    clock = VirtualClock()
    engine = Engine(profile(ttft=1.0, tpot=0.1, max_num_seqs=2), clock=clock, rng=random.Random(0))

    async def main() -> list[RequestTiming]:
        results = await asyncio.gather(*(collect(engine, EngineRequest(1, 11), clock) for _ in range(5)))
        return [timing for _, timing in results]

    timings = clock.run(main())
    assert [t.queue_time for t in timings] == pytest.approx([0, 0, 2, 2, 4])
    assert [t.ttft for t in timings] == pytest.approx([1, 1, 3, 3, 5])
    assert [t.e2e for t in timings] == pytest.approx([2, 2, 4, 4, 6])
    assert (engine.running, engine.waiting) == (0, 0)


def test_tpot_slows_down_while_other_sequences_run() -> None:
    clock = VirtualClock()
    engine = Engine(profile(ttft=0.0001, tpot=0.1, slowdown_per_seq=0.5), clock=clock, rng=random.Random(0))

    async def main() -> tuple[list[float], list[float]]:
        (long, _), (short, _) = await asyncio.gather(
            collect(engine, EngineRequest(1, 21), clock), collect(engine, EngineRequest(1, 6), clock)
        )
        return long, short

    long, _ = clock.run(main())
    gaps = [round(b - a, 9) for a, b in itertools.pairwise(long)]
    assert gaps[:5] == [0.15] * 5  # two running: tpot * (1 + 0.5 * 1)
    assert gaps[-5:] == [0.1] * 5  # alone again once the short request finished


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    clock = VirtualClock()
    engine = Engine(profile(ttft=1.0, tpot=0.1, max_num_seqs=1), clock=clock, rng=random.Random(0))

    async def main() -> float | None:
        first = asyncio.ensure_future(collect(engine, EngineRequest(1, 1), clock))
        second = asyncio.ensure_future(collect(engine, EngineRequest(1, 1), clock))
        third = asyncio.ensure_future(collect(engine, EngineRequest(1, 1), clock))
        await asyncio.sleep(0.5)
        assert (engine.running, engine.waiting) == (1, 2)
        second.cancel()
        await first
        _, timing = await third
        return timing.queue_time

    assert clock.run(main()) == pytest.approx(1.0)
    assert (engine.running, engine.waiting) == (0, 0)


def test_zero_profile_releases_in_batches_without_sleeping_and_records_metrics() -> None:
    zero = load_profiles()["zero"]
    clock = VirtualClock()
    registry = CollectorRegistry()
    engine = Engine(zero, clock=clock, rng=random.Random(0), metrics=EngineMetrics(registry, "m"), yield_every=16)

    async def main() -> list[list[int]]:
        async def counts() -> list[int]:
            return [count async for count in engine.generate(EngineRequest(7, 40))]

        return await asyncio.gather(*(counts() for _ in range(100)))

    results = clock.run(main())
    assert all(result == [16, 16, 8] for result in results)
    assert clock.now() == 0.0

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model_name": "m", **labels})

    assert sample("vllm:generation_tokens_total") == 4000
    assert sample("vllm:prompt_tokens_total") == 700
    assert sample("vllm:request_success_total", finished_reason="length") == 100
    assert sample("vllm:time_to_first_token_seconds_count") == 100
    assert sample("vllm:inter_token_latency_seconds_count") == 3900
    assert sample("vllm:num_requests_running") == 0


def test_virtual_time_handles_thousands_of_requests_quickly() -> None:
    clock = VirtualClock()
    lat = profile(ttft=0.23, tpot=1 / 75, jitter=0.1, max_num_seqs=256, slowdown_per_seq=0.002)
    engine = Engine(lat, clock=clock, rng=random.Random(1))

    async def client(start: float) -> RequestTiming:
        await sleep_until(clock, start)
        _, timing = await collect(engine, EngineRequest(10, 50), clock)
        return timing

    arrivals = random.Random(2)
    starts = [arrivals.uniform(0, 60) for _ in range(2000)]

    async def main() -> list[RequestTiming]:
        return await asyncio.gather(*(client(s) for s in starts))

    wall = time.perf_counter()
    timings = clock.run(main())
    assert time.perf_counter() - wall < 20
    assert all(t.output_tokens == 50 for t in timings)
    assert min(t.e2e or 0 for t in timings) >= 0.23 * 0.9 + 49 * (1 / 75) * 0.9
