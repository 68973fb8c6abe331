"""The load generator's pure parts: arrival process, ramp-up, seeded schedule, prompt corpora. No HTTP."""

from __future__ import annotations

import itertools
import math
import random
import re
import statistics
from collections import Counter
from importlib.resources import files

import pytest

from edgecloud.core.vocabulary import QUALITY_PREFERRED, ServiceType
from edgecloud.loadgen.arrivals import ramped, send_times
from edgecloud.loadgen.corpus import load_corpus
from edgecloud.loadgen.settings import LoadgenSettings
from edgecloud.loadgen.workload import Workload

GAPS = 20_000


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def workload(corpus, **settings) -> Workload:
    return Workload.from_settings(LoadgenSettings(**settings), corpus)


def gaps(rate: float, burstiness: float, seed: int) -> list[float]:
    times = list(itertools.islice(send_times(rate, burstiness, 0.0, random.Random(seed)), GAPS + 1))
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.parametrize("burstiness", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("rate", [0.5, 8.0])
def test_gaps_have_the_requested_rate_and_cv_one_over_sqrt_burstiness(rate, burstiness):
    sample = gaps(rate, burstiness, seed=11)
    mean = statistics.fmean(sample)
    cv = statistics.pstdev(sample) / mean
    assert 1 / mean == pytest.approx(rate, rel=0.03)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_first_request_goes_at_zero_and_times_increase():
    times = list(itertools.islice(send_times(3.0, 0.5, 0.0, random.Random(1)), 200))
    assert times[0] == 0.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(times))


def test_ramp_up_time_change_follows_its_formula():
    ramp = 10.0
    assert ramped(0.0, ramp) == 0.0
    assert ramped(1.25, ramp) == pytest.approx(math.sqrt(2 * ramp * 1.25))  # 5 s: a quarter of the ramp's count
    assert ramped(ramp / 2, ramp) == pytest.approx(ramp)  # continuous where the ramp ends
    assert ramped(7.0, ramp) == pytest.approx(7.0 + ramp / 2)  # then the flat process, T/2 behind
    assert ramped(3.0, 0.0) == 3.0  # no ramp: unchanged


def test_ramped_poisson_counts_follow_the_integrated_linear_intensity():
    """Expected arrivals before t: 1 (the one at t = 0) + R t^2 / (2T) during the ramp, + R (t - T/2) after it."""
    rate, ramp, seeds = 40.0, 10.0, 100
    during = {t: 1 + rate * t**2 / (2 * ramp) for t in (2.5, 5.0, 10.0)}
    expected = {**during, 20.0: 1 + rate * (20.0 - ramp / 2)}
    counts: dict[float, list[int]] = {t: [] for t in expected}
    for seed in range(seeds):
        times = list(itertools.takewhile(lambda t: t < 20.0, send_times(rate, 1.0, ramp, random.Random(seed))))
        for t in expected:
            counts[t].append(sum(1 for at in times if at < t))
    for t, mean_count in expected.items():
        assert statistics.fmean(counts[t]) == pytest.approx(mean_count, rel=0.08), t


def test_same_seed_gives_the_same_schedule_and_another_seed_another(corpus):
    first = list(workload(corpus, seed=7).open_loop(2.0, 60, None))
    again = list(workload(corpus, seed=7).open_loop(2.0, 60, None))
    other = list(workload(corpus, seed=8).open_loop(2.0, 60, None))
    assert first == again
    assert len(first) == 60
    for field in ("scheduled_s", "user", "service_type", "prompt_id", "max_tokens"):
        assert [getattr(r, field) for r in first] != [getattr(r, field) for r in other], field


def test_every_sweep_point_and_the_closed_loop_send_the_same_requests(corpus):
    load = workload(corpus, seed=3)
    slow, fast = list(load.open_loop(1.0, 30, None)), list(load.open_loop(4.0, 30, None))
    closed = list(load.closed_loop(30))
    strip = [(r.user, r.service_type, r.prompt_id, r.max_tokens) for r in slow]
    assert strip == [(r.user, r.service_type, r.prompt_id, r.max_tokens) for r in fast]
    assert strip == [(r.user, r.service_type, r.prompt_id, r.max_tokens) for r in closed]
    # Same arrival shape, scaled by the rate.
    assert [r.scheduled_s for r in fast] == pytest.approx([r.scheduled_s / 4 for r in slow])
    assert all(r.scheduled_s is None for r in closed)


def test_duration_bounds_the_open_loop(corpus):
    schedule = list(workload(corpus, duration_s=5.0).open_loop(10.0, None, 5.0))
    assert schedule and all(r.scheduled_s < 5.0 for r in schedule)
    assert len(schedule) == pytest.approx(50, abs=25)


def test_users_types_and_output_lengths_follow_the_settings(corpus):
    requests = list(workload(corpus, seed=5, num_users=7, quality_share=0.8).closed_loop(5000))
    users = Counter(r.user for r in requests)
    assert len(users) == 7 and min(users.values()) > 5000 / 7 * 0.8
    share = sum(r.service_type in QUALITY_PREFERRED for r in requests) / len(requests)
    assert share == pytest.approx(0.8, abs=0.025)
    assert set(Counter(r.service_type for r in requests)) == set(ServiceType)
    lengths = [r.max_tokens for r in requests]
    assert min(lengths) >= 1 and max(lengths) <= 2 * 256 - 1
    assert statistics.fmean(lengths) == pytest.approx(256, rel=0.03)
    # Each prompt is the corpus' text for its type and id.
    texts = {(p.service_type, p.id): p.text for prompts in corpus.values() for p in prompts}
    assert all(texts[(r.service_type, r.prompt_id)] == r.prompt for r in requests)


def test_default_quality_share_follows_the_types_in_use(corpus):
    assert LoadgenSettings().effective_quality_share == pytest.approx(3 / 7)
    restricted = LoadgenSettings(service_types="chat,math,coding")
    assert restricted.effective_quality_share == pytest.approx(2 / 3)
    requests = list(Workload.from_settings(restricted, corpus).closed_loop(600))
    assert {r.service_type for r in requests} == {ServiceType.CHAT, ServiceType.MATH, ServiceType.CODING}


def test_fixed_max_tokens(corpus):
    assert {r.max_tokens for r in workload(corpus, max_tokens=33).closed_loop(200)} == {33}


def test_corpora_counts_match_their_documentation(corpus):
    text = files("edgecloud.loadgen").joinpath("data/CORPORA.md").read_text(encoding="utf-8")
    documented = {name: int(count) for name, count in re.findall(r"^\| (\w+) \| (\d+) \|", text, re.MULTILINE)}
    assert documented == {service_type.value: len(prompts) for service_type, prompts in corpus.items()}
    assert len(corpus[ServiceType.CODING]) == 164  # HumanEval
    assert all(p.id.startswith("HumanEval/") and "def " in p.text for p in corpus[ServiceType.CODING])
    assert all(p.text.strip() for prompts in corpus.values() for p in prompts)
