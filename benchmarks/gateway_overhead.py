"""Gateway overhead: TTFT the gateway adds, and tokens per second it relays, beside direct access.

Starts the LLM simulator with the ``zero`` latency profile (no TTFT, no TPOT: every cost measured
is the software's own) and a gateway in front of it, each as its own process on loopback. Then,
in the same run and alternating, the same closed-loop load goes to the simulator directly and
through the gateway:

- TTFT phase: at concurrency 1, 32 and 256, short streamed chat completions; TTFT p50/p99 for
  both paths, and the added TTFT (gateway percentile minus direct percentile).
- Throughput phase: at concurrency 256, long streamed completions; output tokens per second
  received by the clients, relayed versus direct.

    .venv/bin/python benchmarks/gateway_overhead.py [--quick] [--out FILE]

Bounded: every phase has a fixed request count, and the whole run a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from edgecloud.testbed.processes import ManagedProcess, free_port, http_ok

MODEL = "zero"
TTFT_CONCURRENCY = (1, 32, 256)
TTFT_MAX_TOKENS = 16
THROUGHPUT_CONCURRENCY = 256
THROUGHPUT_MAX_TOKENS = 256
REQUEST_TIMEOUT_S = 120.0
RUN_LIMIT_S = 900.0


@dataclass
class RequestResult:
    ttft_s: float
    tokens: int


@dataclass
class LevelResult:
    path: str
    concurrency: int
    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    tokens_per_s: float
    gateway_cpu_ms_per_request: float


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def stream_once(session: aiohttp.ClientSession, url: str, max_tokens: int) -> RequestResult:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": max_tokens,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no tokens from {url}")
    return RequestResult(first - started, tokens)


async def closed_loop(url: str, concurrency: int, total: int, max_tokens: int) -> tuple[list[RequestResult], float]:
    """``concurrency`` workers send ``total`` requests back to back; returns results and wall time."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    results: list[RequestResult] = []
    remaining = [total]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                results.append(await stream_once(session, url, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return results, wall


async def measure(path: str, url: str, concurrency: int, total: int, max_tokens: int, gateway_pid: int) -> LevelResult:
    cpu_before = cpu_seconds(gateway_pid)
    results, wall = await closed_loop(url, concurrency, total, max_tokens)
    gateway_cpu_ms = (cpu_seconds(gateway_pid) - cpu_before) * 1000 / len(results)
    ttfts = [r.ttft_s * 1000 for r in results]
    return LevelResult(
        path, concurrency, len(results), percentile(ttfts, 50), percentile(ttfts, 99),
        sum(r.tokens for r in results) / wall, gateway_cpu_ms,
    )  # fmt: skip


async def run(quick: bool, urls: dict[str, str], gateway_pid: int) -> dict[str, object]:
    repeats = 1 if quick else 3
    ttft_rows: list[dict[str, object]] = []
    for concurrency in TTFT_CONCURRENCY:
        total = max(100, concurrency * (2 if quick else 4))
        per_path: dict[str, list[LevelResult]] = {"direct": [], "gateway": []}
        for _ in range(repeats):
            for path in ("direct", "gateway"):
                level = await measure(path, urls[path], concurrency, total, TTFT_MAX_TOKENS, gateway_pid)
                per_path[path].append(level)
        direct, relayed = (_merge(per_path[p]) for p in ("direct", "gateway"))
        ttft_rows.append({
            "concurrency": concurrency,
            "direct_p50_ms": direct[0], "direct_p99_ms": direct[1],
            "gateway_p50_ms": relayed[0], "gateway_p99_ms": relayed[1],
            "added_p50_ms": relayed[0] - direct[0], "added_p99_ms": relayed[1] - direct[1],
            "gateway_cpu_ms_per_request": statistics.mean(lv.gateway_cpu_ms_per_request for lv in per_path["gateway"]),
        })  # fmt: skip
    throughput: dict[str, list[float]] = {"direct": [], "gateway": []}
    total = THROUGHPUT_CONCURRENCY * (1 if quick else 3)
    for _ in range(repeats):
        for path in ("direct", "gateway"):
            level = await measure(path, urls[path], THROUGHPUT_CONCURRENCY, total, THROUGHPUT_MAX_TOKENS, gateway_pid)
            throughput[path].append(level.tokens_per_s)
    direct_tps = statistics.mean(throughput["direct"])
    relayed_tps = statistics.mean(throughput["gateway"])
    return {
        "ttft": ttft_rows,
        "throughput": {
            "concurrency": THROUGHPUT_CONCURRENCY, "max_tokens": THROUGHPUT_MAX_TOKENS,
            "direct_tokens_per_s": direct_tps, "gateway_tokens_per_s": relayed_tps,
            "relayed_over_direct": relayed_tps / direct_tps,
        },
        "runs": {"direct": throughput["direct"], "gateway": throughput["gateway"]},
    }  # fmt: skip


def _merge(levels: list[LevelResult]) -> tuple[float, float]:
    """Median over repeats of each percentile, so one noisy repeat does not decide the number."""
    return statistics.median(lv.ttft_p50_ms for lv in levels), statistics.median(lv.ttft_p99_ms for lv in levels)


def report(result: dict[str, object]) -> str:
    lines = [
        "| concurrency | direct TTFT p50 / p99 (ms) | via gateway p50 / p99 (ms) | added p50 / p99 (ms) "
        "| gateway CPU per request (ms) |",
        "|---|---|---|---|---|",
    ]
    for row in result["ttft"]:  # type: ignore[union-attr]
        lines.append(
            f"| {row['concurrency']} | {row['direct_p50_ms']:.2f} / {row['direct_p99_ms']:.2f} "
            f"| {row['gateway_p50_ms']:.2f} / {row['gateway_p99_ms']:.2f} "
            f"| {row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f} | {row['gateway_cpu_ms_per_request']:.3f} |"
        )
    tp = result["throughput"]
    lines += [
        "",
        f"Throughput at concurrency {tp['concurrency']} ({tp['max_tokens']} tokens per request): "  # type: ignore[index]
        f"direct {tp['direct_tokens_per_s']:.0f} tokens/s, via gateway {tp['gateway_tokens_per_s']:.0f} tokens/s, "  # type: ignore[index]
        f"relayed/direct = {tp['relayed_over_direct']:.1%}",  # type: ignore[index]
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat and fewer requests (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gateway_overhead.json"))
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    sim_port, gateway_port = free_port(), free_port()
    simulator = ManagedProcess(
        "simulator", [sys.executable, "-m", "edgecloud.llmsim"], logs / "simulator.log",
        http_ok(f"http://127.0.0.1:{sim_port}/health"),
        env={"LLMSIM_PORT": str(sim_port), "LLMSIM_PROFILE": MODEL, "LLMSIM_MODEL": MODEL,
             "LLMSIM_LOG_LEVEL": "warning"},
    )  # fmt: skip
    gateway = ManagedProcess(
        "gateway", [sys.executable, "-m", "edgecloud.gateway"], logs / "gateway.log",
        http_ok(f"http://127.0.0.1:{gateway_port}/health"),
        env={"GATEWAY_PORT": str(gateway_port), "GATEWAY_EDGE_URL": f"http://127.0.0.1:{sim_port}/v1",
             "GATEWAY_EDGE_MODEL": MODEL, "GATEWAY_LOG_LEVEL": "warning"},
    )  # fmt: skip
    urls = {
        "direct": f"http://127.0.0.1:{sim_port}/v1/chat/completions",
        "gateway": f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
    }
    try:
        for process in (simulator, gateway):
            process.start()
            process.wait_healthy()
        assert gateway.popen is not None
        result = asyncio.run(asyncio.wait_for(run(args.quick, urls, gateway.popen.pid), RUN_LIMIT_S))
    finally:
        gateway.stop()
        simulator.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
