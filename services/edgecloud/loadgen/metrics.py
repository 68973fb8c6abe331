"""Per-request records to the summary of a run: pure, no HTTP. Definitions as ``vllm bench serve`` uses them.

Latencies are reported in milliseconds (``*_ms``), as vLLM's benchmark does; rewards in seconds, as
eq. 10. Only successful requests enter the latency statistics and throughputs; failed ones are
counted by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgecloud.core.reward import RewardParams, reward
from edgecloud.loadgen.records import RequestRecord

MS_PER_S = 1000.0
PERCENTILES = (50, 90, 99)

DEFINITIONS = {
    "ttft": "Time to first token: from sending the request to the first SSE event with non-empty content.",
    "tpot": "Time per output token: (e2e - TTFT) / (output tokens - 1) per request; requests with one output "
    "token are left out (as vllm bench serve does).",
    "itl": "Inter-token latency: the gaps between successive content events, pooled over all requests.",
    "e2e": "End-to-end latency: from sending the request to the last byte of the stream.",
    "output_tokens": "completion_tokens of the stream's usage chunk (stream_options.include_usage); if a server "
    "sends none, the number of content events (token_source 'chunks').",
    "request_throughput": "Successful requests / run duration (start of the run to the last completion or the "
    "deadline).",
    "output_token_throughput": "Output tokens of successful requests / run duration.",
    "goodput": "Successful requests meeting every given SLO (ttft, tpot, e2e in ms; a one-token request meets "
    "any TPOT SLO, as in vllm bench serve) / run duration.",
    "success_rate": "Share of successful requests whose x-quality-met header is 'true' (does the serving model "
    "meet the quality requirement, constraint 4e of the paper), among those that carry the header; "
    "'quality_preferred' counts science_reasoning, math and coding only.",
    "reward": "Eq. 10 of the paper per request: T_target - e2e - (r_penalty if x-quality-met is 'false' else 0), "
    "the user's measured e2e being t_total; only requests with the header.",
    "route": "The x-route response header (edge or cloud); 'unknown' without it.",
}


def stats_ms(values_s: Iterable[float]) -> dict[str, Any]:
    """count, mean, median, std, p50, p90, p99 of ``values_s`` (seconds) in ms; None for no values."""
    values = np.asarray(list(values_s), dtype=float) * MS_PER_S
    if values.size == 0:
        return {"count": 0, "mean": None, "median": None, "std": None, **{f"p{p}": None for p in PERCENTILES}}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "std": float(values.std()),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
    }


def record_reward(record: RequestRecord, params: RewardParams) -> float | None:
    """Eq. 10 with the user's e2e as t_total; None unless the request succeeded and carries x-quality-met."""
    if not record.ok or record.quality_met is None or record.e2e_s is None:
        return None
    # t_total = t_tran + t_gen as the user measured them end to end: one term, so no transmission term apart.
    return reward(params, transmission_s=0.0, generation_s=record.e2e_s, quality_met=record.quality_met)


def meets_slos(record: RequestRecord, slos_ms: dict[str, float]) -> bool:
    measured = {"ttft": record.ttft_s, "tpot": record.tpot_s or 0.0, "e2e": record.e2e_s}
    return record.ok and all(
        (value := measured[name]) is not None and value * MS_PER_S <= limit for name, limit in slos_ms.items()
    )


def _rate(count: float, duration_s: float) -> float | None:
    return count / duration_s if duration_s > 0 else None


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarize(
    records: list[RequestRecord], duration_s: float, slos_ms: dict[str, float], params: RewardParams
) -> dict[str, Any]:
    """The summary of one run (or of one route or type within it, with the run's duration)."""
    ok = [record for record in records if record.ok]
    tokens = sum(record.output_tokens or 0 for record in ok)
    with_header = [record for record in ok if record.quality_met is not None]
    quality_preferred = [record for record in with_header if record.planned.service_type.quality_preferred]
    rewards = [value for record in ok if (value := record_reward(record, params)) is not None]
    return {
        "requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors": dict(sorted(Counter(record.error_kind for record in records if record.error_kind).items())),
        "duration_s": duration_s,
        "request_throughput": _rate(len(ok), duration_s),
        "output_token_throughput": _rate(tokens, duration_s),
        "goodput": _rate(sum(meets_slos(record, slos_ms) for record in ok), duration_s) if slos_ms else None,
        "slos_ms": slos_ms,
        "output_tokens": {
            "total": tokens,
            "mean": tokens / len(ok) if ok else None,
            "source": dict(sorted(Counter(record.token_source for record in ok if record.token_source).items())),
        },
        "ttft_ms": stats_ms(record.ttft_s for record in ok if record.ttft_s is not None),
        "tpot_ms": stats_ms(tpot for record in ok if (tpot := record.tpot_s) is not None),
        "itl_ms": stats_ms(gap for record in ok for gap in record.itl_s),
        "e2e_ms": stats_ms(record.e2e_s for record in ok if record.e2e_s is not None),
        "success_rate": {
            "quality_preferred": _share([bool(record.quality_met) for record in quality_preferred]),
            "quality_preferred_requests": len(quality_preferred),
            "all": _share([bool(record.quality_met) for record in with_header]),
            "all_requests": len(with_header),
        },
        "reward": {
            "mean": sum(rewards) / len(rewards) if rewards else None,
            "total": sum(rewards) if rewards else None,
            "count": len(rewards),
        },
    }


def breakdown(
    records: list[RequestRecord],
    key: Callable[[RequestRecord], str],
    duration_s: float,
    slos_ms: dict[str, float],
    params: RewardParams,
) -> dict[str, dict[str, Any]]:
    """``summarize`` per value of ``key`` (route, service type), sorted by that value."""
    groups: dict[str, list[RequestRecord]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return {name: summarize(groups[name], duration_s, slos_ms, params) for name in sorted(groups)}


def by_route(record: RequestRecord) -> str:
    return record.route


def by_service_type(record: RequestRecord) -> str:
    """The type the load generator planned (its corpus label), not the gateway's classification."""
    return record.planned.service_type.value
