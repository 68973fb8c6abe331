"""Records to summaries: TPOT, goodput, success rate and reward as defined in docs/loadgen.md. Pure, no HTTP."""

from __future__ import annotations

import pytest

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import ServiceType
from edgecloud.loadgen.metrics import breakdown, by_route, by_service_type, meets_slos, record_reward, summarize
from edgecloud.loadgen.records import RequestRecord
from edgecloud.loadgen.workload import PlannedRequest

PARAMS = RewardParams()  # T_target 30 s, r_penalty 60


def record(index: int, service_type: ServiceType, *, ttft: float | None = 0.2, e2e: float | None = 1.2,
           tokens: int | None = 11, route: str = "edge", met: bool | None = True, error: str | None = None,
           itl: tuple[float, ...] = ()) -> RequestRecord:  # fmt: skip
    planned = PlannedRequest(index, "u", service_type, f"p{index}", "text", 16, None)
    result = RequestRecord(planned, "rate-1", sent_s=0.0, ttft_s=ttft, e2e_s=e2e, usage_tokens=tokens,
                           content_chunks=tokens or 0, route=route, quality_met=met, itl_s=list(itl))  # fmt: skip
    if error:
        result.fail(error, "boom")
    return result


def test_tpot_is_e2e_minus_ttft_over_tokens_minus_one_and_undefined_for_one_token():
    assert record(0, ServiceType.CHAT).tpot_s == pytest.approx((1.2 - 0.2) / 10)
    assert record(1, ServiceType.CHAT, tokens=1).tpot_s is None
    assert record(2, ServiceType.CHAT, error="http_503").tpot_s is None


def test_output_tokens_fall_back_to_content_chunks_without_usage():
    counted = record(0, ServiceType.CHAT)
    counted.usage_tokens = None
    assert (counted.output_tokens, counted.token_source) == (11, "chunks")
    assert record(1, ServiceType.CHAT).token_source == "usage"


def test_reward_is_eq_10_from_the_measured_e2e():
    assert record_reward(record(0, ServiceType.MATH, e2e=2.0, met=True), PARAMS) == pytest.approx(28.0)
    assert record_reward(record(1, ServiceType.MATH, e2e=2.0, met=False), PARAMS) == pytest.approx(-32.0)
    assert record_reward(record(2, ServiceType.MATH, met=None), PARAMS) is None  # no header: unknown
    assert record_reward(record(3, ServiceType.MATH, error="timeout"), PARAMS) is None


def test_goodput_counts_requests_meeting_every_slo():
    slos = {"ttft": 300.0, "tpot": 100.0}  # TPOT here: (1.2 - TTFT) / 10 s, under 100 ms
    fast, slow_start = record(0, ServiceType.CHAT, ttft=0.25), record(1, ServiceType.CHAT, ttft=0.35)
    one_token = record(2, ServiceType.CHAT, tokens=1, e2e=0.2)
    assert meets_slos(fast, slos) and not meets_slos(slow_start, slos)
    assert meets_slos(one_token, slos)  # a one-token request meets any TPOT SLO (vllm bench serve)
    assert not meets_slos(record(3, ServiceType.CHAT, error="timeout"), slos)
    summary = summarize([fast, slow_start, one_token], 2.0, slos, PARAMS)
    assert summary["goodput"] == pytest.approx(2 / 2.0)
    assert summarize([fast], 2.0, {}, PARAMS)["goodput"] is None


def test_summary_counts_latencies_success_and_reward():
    records = [
        record(0, ServiceType.CODING, met=True, route="cloud", e2e=3.0, itl=(0.1, 0.2)),
        record(1, ServiceType.MATH, met=False, route="edge", e2e=1.0, itl=(0.3,)),
        record(2, ServiceType.CHAT, met=False, route="edge", e2e=1.0),
        record(3, ServiceType.CHAT, route="unknown", met=None, error="http_429", ttft=None, e2e=None),
        record(4, ServiceType.CHAT, route="unknown", met=None, error="cancelled", ttft=None, e2e=None),
    ]
    summary = summarize(records, 10.0, {}, PARAMS)
    assert (summary["requests"], summary["completed"], summary["failed"]) == (5, 3, 2)
    assert summary["errors"] == {"cancelled": 1, "http_429": 1}
    assert summary["request_throughput"] == pytest.approx(0.3)
    assert summary["output_token_throughput"] == pytest.approx(33 / 10.0)
    assert summary["e2e_ms"]["mean"] == pytest.approx(5000 / 3)
    assert summary["e2e_ms"]["p50"] == summary["e2e_ms"]["median"] == pytest.approx(1000)
    assert summary["itl_ms"]["count"] == 3
    assert summary["ttft_ms"]["count"] == 3
    success = summary["success_rate"]
    assert success["quality_preferred"] == pytest.approx(1 / 2) and success["quality_preferred_requests"] == 2
    assert success["all"] == pytest.approx(1 / 3) and success["all_requests"] == 3
    assert summary["reward"]["mean"] == pytest.approx(((30 - 3) + (30 - 1 - 60) + (30 - 1 - 60)) / 3)
    routes = breakdown(records, by_route, 10.0, {}, PARAMS)
    assert {name: part["requests"] for name, part in routes.items()} == {"cloud": 1, "edge": 2, "unknown": 2}
    types = breakdown(records, by_service_type, 10.0, {}, PARAMS)
    assert {name: part["requests"] for name, part in types.items()} == {"chat": 3, "coding": 1, "math": 1}


def test_no_successful_request_gives_empty_statistics():
    summary = summarize([record(0, ServiceType.CHAT, error="connect", ttft=None, e2e=None)], 1.0, {}, PARAMS)
    assert summary["completed"] == 0
    assert summary["ttft_ms"] == {"count": 0, "mean": None, "median": None, "std": None,
                                  "p50": None, "p90": None, "p99": None}  # fmt: skip
    assert summary["success_rate"]["all"] is None and summary["reward"]["mean"] is None
