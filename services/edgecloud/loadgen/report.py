"""A run's results as files and text: report.json, requests.csv, the summary table, exported prompts."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgecloud import __version__
from edgecloud.core.reward import RewardParams
from edgecloud.loadgen.corpus import Corpus
from edgecloud.loadgen.metrics import (
    DEFINITIONS,
    MS_PER_S,
    breakdown,
    by_route,
    by_service_type,
    record_reward,
    summarize,
)
from edgecloud.loadgen.records import RequestRecord
from edgecloud.loadgen.runner import PointResult, RunResult
from edgecloud.loadgen.settings import LoadgenSettings
from edgecloud.loadgen.workload import PlannedRequest

REPORT_FILE = "report.json"
REQUESTS_FILE = "requests.csv"
CSV_COLUMNS = (
    "point", "request_rate", "concurrency", "id", "user", "service_type", "served_type", "prompt_id", "max_tokens",
    "scheduled_s", "sent_s", "ttft_ms", "tpot_ms", "e2e_ms", "output_tokens", "token_source", "route",
    "backend_model", "decision_source", "decision_latency_ms", "quality_met", "reward", "status", "error_kind", "error",
)  # fmt: skip
TIME_DECIMALS = 6  # seconds to the microsecond
MS_DECIMALS = 3


def point_report(result: PointResult, settings: LoadgenSettings) -> dict[str, Any]:
    slos, params = settings.goodput, settings.reward_params
    records, duration = result.records, result.duration_s
    return {
        "label": result.point.label,
        "request_rate": result.point.request_rate,
        "concurrency": result.point.concurrency,
        "started_at": result.started_at,
        "max_in_flight": result.max_in_flight,
        "summary": summarize(records, duration, slos, params),
        "by_route": breakdown(records, by_route, duration, slos, params),
        "by_service_type": breakdown(records, by_service_type, duration, slos, params),
    }


def build_report(run: RunResult, settings: LoadgenSettings, corpus: Corpus) -> dict[str, Any]:
    return {
        "tool": "edgecloud-loadgen",
        "version": __version__,
        "config": settings.public(),
        "served_models": run.served_models,
        "definitions": DEFINITIONS,
        "units": {"latency": "ms (*_ms)", "time": "s (*_s)", "reward": "s (eq. 10)", "throughput": "per second"},
        "corpus": {service_type.value: len(prompts) for service_type, prompts in corpus.items()},
        "points": [point_report(result, settings) for result in run.points],
    }


def _round(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals)


def csv_row(result: PointResult, record: RequestRecord, params: RewardParams) -> dict[str, Any]:
    planned = record.planned
    ttft = record.ttft_s if record.ok else None
    e2e = record.e2e_s if record.ok else None
    tpot = record.tpot_s
    return {
        "point": result.point.label,
        "request_rate": result.point.request_rate,
        "concurrency": result.point.concurrency,
        "id": planned.index,
        "user": planned.user,
        "service_type": planned.service_type.value,
        "served_type": record.served_type,
        "prompt_id": planned.prompt_id,
        "max_tokens": planned.max_tokens,
        "scheduled_s": _round(planned.scheduled_s, TIME_DECIMALS),
        "sent_s": _round(record.sent_s, TIME_DECIMALS),
        "ttft_ms": _round(ttft * MS_PER_S if ttft is not None else None, MS_DECIMALS),
        "tpot_ms": _round(tpot * MS_PER_S if tpot is not None else None, MS_DECIMALS),
        "e2e_ms": _round(e2e * MS_PER_S if e2e is not None else None, MS_DECIMALS),
        "output_tokens": record.output_tokens if record.ok else None,
        "token_source": record.token_source if record.ok else None,
        "route": record.route,
        "backend_model": record.backend_model,
        "decision_source": record.decision_source,
        "decision_latency_ms": record.decision_latency_ms,
        "quality_met": None if record.quality_met is None else str(record.quality_met).lower(),
        "reward": _round(record_reward(record, params), TIME_DECIMALS),
        "status": record.status,
        "error_kind": record.error_kind,
        "error": record.error,
    }


def write_outputs(run: RunResult, report: dict[str, Any], settings: LoadgenSettings, output_dir: Path) -> list[Path]:
    """report.json, requests.csv and the plots into ``output_dir``; the paths written."""
    from edgecloud.loadgen.plots import write_plots  # matplotlib: imported only when files are written

    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = output_dir / REPORT_FILE
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    csv_path = output_dir / REQUESTS_FILE
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in run.points:
            for record in result.records:
                writer.writerow(csv_row(result, record, settings.reward_params))
    return [report_path, csv_path, *write_plots(run, output_dir)]


def export_prompts(requests: Iterable[PlannedRequest], path: Path) -> int:
    """JSONL that vllm bench serve (custom dataset: prompt, output_tokens) and guidellm (json_file: prompt,
    output_tokens_count) read; our fields ride along. Returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for planned in requests:
            row = {
                "prompt": planned.prompt,
                "output_tokens": planned.max_tokens,
                "output_tokens_count": planned.max_tokens,
                "service_type": planned.service_type.value,
                "user": planned.user,
                "prompt_id": planned.prompt_id,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


TABLE_HEADER = (
    f"{'point / route':<22}{'reqs':>6}{'ok':>6}{'fail':>6}{'req/s':>8}{'tok/s':>9}{'goodput':>9}"
    f"{'TTFT ms mean/p99':>18}{'TPOT ms mean/p99':>18}{'e2e ms mean/p99':>18}{'QP met':>8}{'reward':>9}"
)


def _table_line(name: str, summary: dict[str, Any]) -> str:
    def pair(key: str) -> str:
        return f"{_ms(summary[key]['mean'])}/{_ms(summary[key]['p99'])}"

    return (
        f"{name:<22}{summary['requests']:>6}{summary['completed']:>6}{summary['failed']:>6}"
        f"{_number(summary['request_throughput']):>8}{_number(summary['output_token_throughput'], 1):>9}"
        f"{_number(summary['goodput']):>9}{pair('ttft_ms'):>18}{pair('tpot_ms'):>18}{pair('e2e_ms'):>18}"
        f"{_percent(summary['success_rate']['quality_preferred']):>8}{_number(summary['reward']['mean']):>9}"
    )


def summary_table(report: dict[str, Any]) -> str:
    """The short table printed at the end: one line per point, one per route under it, then the errors."""
    lines = [TABLE_HEADER]
    for point in report["points"]:
        lines.append(_table_line(point["label"], point["summary"]))
        lines += [_table_line(f"  {route}", summary) for route, summary in point["by_route"].items()]
        errors = point["summary"]["errors"]
        if errors:
            lines.append("  errors: " + ", ".join(f"{kind} {count}" for kind, count in errors.items()))
    return "\n".join(lines)
