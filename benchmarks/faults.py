"""Faults under load: Redis, the decision service, the cloud and the edge killed (and the edge paused)
while the sim testbed serves a steady stream of requests; what each fault cost and how fast it healed.

Starts ``scripts/testbed --sim`` with a first-token timeout of ``FIRST_TOKEN_TIMEOUT_S`` and sends
streamed requests through the air interface at ``--rate`` requests/s (Poisson): chat (the rule keeps it
at the edge) and coding (offloaded), the type stated. After a quiet baseline, each fault in turn, then
``--phase-s`` seconds to heal: ``kill -9`` of Redis, of the decision service, of the cloud simulator, of
the edge simulator (the testbed restarts each), and the edge paused (``SIGSTOP``) for ``--phase-s``
seconds, then resumed. Every request's outcome is kept:

- *lost*: it failed before its first token (the client got an error instead of an answer);
- *broken*: it failed after its first token (a backend killed mid-answer: the client saw part of it);
- *ok*, with its TTFT as the client saw it, and whether the gateway retried it on the other side.

Per fault: requests lost and broken, the TTFT added (median and worst over the requests sent while it
lasted, against the baseline median), the time to recover (until the testbed reports the child healthy
again, or the paused edge serves again), and for the paused edge how many requests paid the first-token
timeout. The experience pool is read before and after: no example may be lost.

    .venv/bin/python benchmarks/faults.py                 # ~3 min; writes benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from testbed_process import ROOT, TestbedProcess, start_testbed

RESULT = ROOT / "benchmarks" / "results" / "faults.json"
FIRST_TOKEN_TIMEOUT_S = 2.0  # the gateway's, for this run (its default, 30 s, suits a CPU vLLM under load)
PROMPTS = {
    "chat": "Tell me about the sea in two sentences.",
    "coding": "Write a Python function that adds two numbers.",
}
MAX_TOKENS = 24
FAULTS = ("redis", "decision", "cloud", "edge", "edge_paused")
HEALED = "healthy again"  # in the testbed's line about a restarted child
CHILD_LINE_NAME = {"redis": "redis", "decision": "decision", "cloud": "cloud-llm", "edge": "edge-llm"}


@dataclass
class Outcome:
    sent_at: float  # seconds since the run started
    service_type: str
    result: str  # ok, lost, broken
    ttft_s: float | None = None
    retried_from: str | None = None
    detail: str | None = None


async def one_request(http: httpx.AsyncClient, url: str, service_type: str, started: float) -> Outcome:
    sent_at = time.monotonic()
    outcome = Outcome(sent_at - started, service_type, "lost")
    body = {"model": "edgecloud-auto", "messages": [{"role": "user", "content": PROMPTS[service_type]}],
            "max_tokens": MAX_TOKENS, "stream": True}  # fmt: skip
    try:
        async with http.stream("POST", url, json=body, headers={"x-service-type": service_type}) as response:
            outcome.retried_from = response.headers.get("x-retried-from")
            if response.status_code != 200:
                outcome.detail = f"{response.status_code}: {(await response.aread())[:200]!r}"
                return outcome
            async for line in response.aiter_lines():
                if outcome.ttft_s is None and line.startswith("data: {") and '"content"' in line:
                    outcome.ttft_s = time.monotonic() - sent_at
                    outcome.result = "broken"  # until the stream ends as it should
                if line == "data: [DONE]":
                    outcome.result = "ok" if outcome.ttft_s is not None else "lost"
                if '"error"' in line:
                    outcome.detail = line[:200]
    except httpx.HTTPError as error:
        outcome.detail = type(error).__name__
    return outcome


async def pool_examples(testbed: TestbedProcess) -> list[dict[str, Any]]:
    key = testbed.key("DECISION_SERVICE_API_KEY")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{testbed.url('decision')}/v1/pool", headers={"authorization": f"Bearer {key}"})
        response.raise_for_status()
        return list(response.json()["examples"])


async def drive(testbed: TestbedProcess, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = f"{testbed.url('air')}/v1/chat/completions"
    started = time.monotonic()
    outcomes: list[Outcome] = []
    windows: dict[str, dict[str, float]] = {}
    stop = asyncio.Event()

    async def load(http: httpx.AsyncClient) -> None:
        tasks = set()
        while not stop.is_set():
            service_type = rng.choice(list(PROMPTS))
            task = asyncio.create_task(one_request(http, url, service_type, started))
            task.add_done_callback(lambda done: outcomes.append(done.result()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(args.rate))
        await asyncio.gather(*tasks)

    async def healed(child: str, since_line: int) -> float:
        """Seconds from now until the testbed reports ``child`` healthy again (after line ``since_line``)."""
        waited = time.monotonic()
        prefix = f"[testbed] {CHILD_LINE_NAME[child]}"
        while not any(line.startswith(prefix) and HEALED in line for line in testbed.lines[since_line:]):
            await asyncio.sleep(0.05)
        return time.monotonic() - waited

    pool_before: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        loader = asyncio.create_task(load(http))
        await asyncio.sleep(args.phase_s)  # the baseline, which also fills the pool
        pool_before = await pool_examples(testbed)
        for fault in FAULTS:
            child = fault.removesuffix("_paused")
            pid = testbed.pids[child]
            injected, since_line = time.monotonic(), len(testbed.lines)
            if fault == "edge_paused":
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(args.phase_s)
                os.kill(pid, signal.SIGCONT)
                recovered_s = args.phase_s
            else:
                os.kill(pid, signal.SIGKILL)
                recovered_s = await healed(child, since_line)
            windows[fault] = {"start_s": injected - started, "recovered_s": recovered_s}
            await asyncio.sleep(args.phase_s)  # heal, and the next fault's baseline
        stop.set()
        await loader
    pool_after = await pool_examples(testbed)
    return {"outcomes": outcomes, "windows": windows, "pool_before": pool_before, "pool_after": pool_after}


def summarize(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    outcomes: list[Outcome] = run["outcomes"]
    first_fault = min(window["start_s"] for window in run["windows"].values())
    baseline = [o.ttft_s for o in outcomes if o.sent_at < first_fault and o.ttft_s is not None and o.result == "ok"]
    baseline_ttft = statistics.median(baseline)
    faults = {}
    for fault, window in run["windows"].items():
        end = window["start_s"] + max(window["recovered_s"], 1.0)
        during = [o for o in outcomes if window["start_s"] <= o.sent_at < end]
        ttfts = [o.ttft_s for o in during if o.ttft_s is not None]
        faults[fault] = {
            "requests": len(during),
            "lost": sum(o.result == "lost" for o in during),
            "broken_mid_answer": sum(
                o.result == "broken" for o in outcomes if window["start_s"] - 5 <= o.sent_at < end
            ),
            "ttft_added_median_s": round(statistics.median(ttfts) - baseline_ttft, 3) if ttfts else None,
            "ttft_added_worst_s": round(max(ttfts) - baseline_ttft, 3) if ttfts else None,
            "time_to_recover_s": round(window["recovered_s"], 2),
            "paid_first_token_timeout": sum(
                o.retried_from is not None and (o.ttft_s or 0) >= FIRST_TOKEN_TIMEOUT_S for o in during
            ),
        }
    kept = {(e["service_type"], e["token_bin"]) for e in run["pool_after"]}
    lost_examples = [e for e in run["pool_before"] if (e["service_type"], e["token_bin"]) not in kept]
    return {
        "command": f".venv/bin/python benchmarks/faults.py --phase-s {args.phase_s} --rate {args.rate}",
        "first_token_timeout_s": FIRST_TOKEN_TIMEOUT_S,
        "requests": len(outcomes),
        "lost": sum(o.result == "lost" for o in outcomes),
        "broken_mid_answer": sum(o.result == "broken" for o in outcomes),
        "baseline_ttft_median_s": round(baseline_ttft, 3),
        "faults": faults,
        "pool_examples_before": len(run["pool_before"]),
        "pool_examples_after": len(run["pool_after"]),
        "pool_examples_lost": len(lost_examples),
        "lost_requests": [asdict(o) for o in outcomes if o.result == "lost"],
    }


def run(phase_s: float = 8.0, rate: float = 4.0, seed: int = 7, echo: bool = False) -> dict[str, Any]:
    """The whole experiment, for the command line and for ``tests/test_faults_live.py``."""
    args = argparse.Namespace(phase_s=phase_s, rate=rate, seed=seed)
    with tempfile.TemporaryDirectory(prefix="faults-testbed-") as state:
        env = {"GATEWAY_FIRST_TOKEN_TIMEOUT_S": str(FIRST_TOKEN_TIMEOUT_S)}
        testbed = start_testbed(Path(state), echo=echo, env=env)
        try:
            measured = asyncio.run(drive(testbed, args))
        finally:
            testbed.stop()
    return summarize(measured, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=float, default=15.0, help="baseline, pause and healing time per fault")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s, Poisson")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    result = run(args.phase_s, args.rate, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "lost_requests"}, indent=1))


if __name__ == "__main__":
    main()
