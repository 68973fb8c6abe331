"""Soak: the sim testbed under mixed traffic for half an hour; no failed request, no growth.

Starts ``scripts/testbed --sim`` and sends, at ``--rate`` requests/s (Poisson), a mix of what clients
send: streamed and whole chat and text completions, through the air interface and to the gateway
directly, stated and classified types; a tenth of the streams hang up after their first token (the
client leaves), and a twentieth of the requests are bad on purpose (refused with a 4xx). Every
``--sample-every`` seconds it records each service's resident memory (VmRSS) and open descriptors.

Passes when no request failed (an intended refusal or hang-up is not a failure; anything else, a 5xx
or an exception, is) and each of our services' RSS and descriptors, measured with nothing in flight when
the warm-up ends and again at the end, differ by at most ``--tolerance`` (descriptors: or by
``POOL_SLACK_FDS``, whichever is more). Redis is reported apart: it holds the experience log, which grows
by design up to its cap (``LOG_LENGTH`` entries per pool); what it added per logged experience says
whether anything else grows.

    .venv/bin/python benchmarks/soak.py                          # 30 min + start-up; ~2 req/s
    .venv/bin/python benchmarks/soak.py --duration-s 120 --warm-up-s 30   # a short look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from testbed_process import ROOT, TestbedProcess, start_testbed

from edgecloud.decision.pool import LOG_LENGTH

RESULT = ROOT / "benchmarks" / "results" / "soak.json"
PROMPTS = {
    "chat": "Tell me a short story about a lighthouse keeper.",
    "coding": "Write a Python function that merges two sorted lists.",
    "math": "What is the integral of x squared from 0 to 3?",
    "summarization": "Summarize: the meeting moved to Thursday because the room was booked.",
}
HANG_UP_SHARE = 0.1  # of the streams: the client leaves after the first token
BAD_SHARE = 0.05  # of the requests: refused on purpose (an unknown service type)
MAX_TOKENS = (8, 64)  # uniform per request
# After the last answer, until every idle connection has closed: the gateway's aiohttp pool keeps one 15 s
# (its keepalive_timeout), uvicorn 5 s.
QUIET_S = 17.0
# Descriptors a quiet service may hold more or fewer than before without a leak: httpx closes an expired
# keep-alive connection only when its pool is next used, so one or two may linger (of 11-19 in all).
POOL_SLACK_FDS = 2


def sample(testbed: TestbedProcess) -> dict[str, dict[str, int]]:
    """RSS (kB) and open descriptors of each of the testbed's services."""
    usage = {}
    for service, pid in testbed.pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
            usage[service] = {"rss_kb": rss_kb, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            usage[service] = {"rss_kb": -1, "fds": -1}
    return usage


async def redis_data(testbed: TestbedProcess) -> dict[str, int]:
    """Redis's own count of the bytes it holds, its keys, and the entries of the experience logs."""
    client = aioredis.from_url(f"redis://127.0.0.1:{testbed.ports['redis']}/0")
    try:
        memory = await client.info("memory")
        logs = [key async for key in client.scan_iter(match="*:log")]
        entries = sum([await client.xlen(key) for key in logs])
        return {"used_memory": int(memory["used_memory"]), "keys": int(await client.dbsize()), "log_entries": entries}
    finally:
        await client.aclose()


async def one_request(http: httpx.AsyncClient, testbed: TestbedProcess, rng: random.Random) -> str:
    """One request of the mix; its outcome: ok, refused (as intended), hung_up (as intended) or failed:..."""
    service_type, prompt = rng.choice(list(PROMPTS.items()))
    stream, over_the_air = rng.random() < 0.7, rng.random() < 0.7
    chat = rng.random() < 0.8
    bad = rng.random() < BAD_SHARE
    base = testbed.url("air" if over_the_air else "gateway")
    body: dict[str, object] = {"model": "edgecloud-auto", "max_tokens": rng.randint(*MAX_TOKENS), "stream": stream,
                               "user": f"soak-{rng.randrange(20)}"}  # fmt: skip
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    headers = {"x-service-type": "no-such-type" if bad else service_type} if rng.random() < 0.5 or bad else {}
    path = "/v1/chat/completions" if chat else "/v1/completions"
    try:
        async with http.stream("POST", f"{base}{path}", json=body, headers=headers) as response:
            if bad:
                await response.aread()
                return "refused" if response.status_code == 400 else f"failed:bad-request-got-{response.status_code}"
            if response.status_code != 200:
                return f"failed:{response.status_code}"
            if stream and rng.random() < HANG_UP_SHARE:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        return "hung_up"  # leaving the block closes the connection mid-stream
            text = (await response.aread()).decode()
            if stream and "data: [DONE]" not in text:
                return "failed:incomplete-stream"
            return "ok"
    except httpx.HTTPError as error:
        return f"failed:{type(error).__name__}"


async def drive(testbed: TestbedProcess, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    next_sample = started
    warm_up_end: dict[str, dict[str, int]] | None = None

    async def run_one(http: httpx.AsyncClient, request_rng: random.Random) -> None:
        outcomes[await one_request(http, testbed, request_rng)] += 1

    async def quiet_sample() -> dict[str, dict[str, int]]:
        """Usage with nothing in flight and every idle connection closed (keep-alive ends after 5 s), and
        what Redis holds then."""
        await asyncio.gather(*tasks)
        await asyncio.sleep(QUIET_S)
        return {**sample(testbed), "redis_data": await redis_data(testbed)}

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100, keepalive_expiry=1)) as http:
        while (elapsed := time.monotonic() - started) < args.duration_s:
            if time.monotonic() >= next_sample:
                samples.append({"t_s": round(elapsed, 1), "usage": sample(testbed)})
                next_sample += args.sample_every_s
            if warm_up_end is None and elapsed >= args.warm_up_s:
                warm_up_end = await quiet_sample()
            task = asyncio.create_task(run_one(http, random.Random(rng.random())))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(args.rate))
        end = await quiet_sample()
    return {"outcomes": dict(outcomes), "samples": samples, "quiet_after_warm_up": warm_up_end, "quiet_at_end": end}


def verdict(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Failed requests, and each service's change from the quiet sample after the warm-up to the one at the end."""
    changes, within = {}, True
    for service, start in run["quiet_after_warm_up"].items():
        if service in ("redis", "redis_data"):
            continue  # Redis holds the experience log: it grows by design, to its cap (reported below)
        end = run["quiet_at_end"][service]
        changes[service] = {
            metric: round((end[metric] - start[metric]) / start[metric], 4) if start[metric] > 0 else None
            for metric in ("rss_kb", "fds")
        }
        within &= abs(end["rss_kb"] - start["rss_kb"]) <= args.tolerance * start["rss_kb"]
        within &= abs(end["fds"] - start["fds"]) <= max(args.tolerance * start["fds"], POOL_SLACK_FDS)
    failed = {name: count for name, count in run["outcomes"].items() if name.startswith("failed")}
    start_data, end_data = run["quiet_after_warm_up"]["redis_data"], run["quiet_at_end"]["redis_data"]
    logged = end_data["log_entries"] - start_data["log_entries"]
    added = end_data["used_memory"] - start_data["used_memory"]
    rss = (run["quiet_after_warm_up"]["redis"]["rss_kb"], run["quiet_at_end"]["redis"]["rss_kb"])
    redis = {
        "rss_change": round(rss[1] / rss[0] - 1, 4),
        "used_memory_added_bytes": added,
        "experiences_logged": logged,
        "bytes_per_logged_experience": round(added / logged) if logged else None,
        "keys": [start_data["keys"], end_data["keys"]],
        "log_cap_entries": LOG_LENGTH,
    }
    return {
        "failed": failed,
        "change_after_warm_up": changes,
        "redis": redis,
        "within_tolerance": within,
        "passed": not failed and within,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--warm-up-s", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s, Poisson")
    parser.add_argument("--sample-every-s", type=float, default=30.0)
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest relative change after the warm-up")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-testbed-") as state:
        testbed = start_testbed(Path(state), echo=False)
        try:
            run = asyncio.run(drive(testbed, args))
        finally:
            testbed.stop()
    options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items() if name != "output")
    result = {"command": f".venv/bin/python benchmarks/soak.py {options}", **run, **verdict(run, args)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    shown = ("outcomes", "failed", "change_after_warm_up", "redis", "passed")
    print(json.dumps({key: result[key] for key in shown}, indent=1))


if __name__ == "__main__":
    main()
