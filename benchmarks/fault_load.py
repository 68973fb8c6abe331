"""Faults under load, whoever injects them: the request stream, each request's outcome and the summary.

Shared by ``faults.py`` (the process testbed, faults by signal) and ``container_faults.py`` (the compose
project, faults through the Docker Engine API); only the ``Actuator`` differs. The load is a Poisson stream
of streamed chat (the rule keeps it at the edge) and coding (offloaded) requests through the air interface,
the type stated. After a quiet baseline, each fault in turn, then the same time to heal. Every request's
outcome is kept:

- *lost*: it failed before its first token (the client got an error instead of an answer);
- *broken*: it failed after its first token (a backend killed mid-answer: the client saw part of it);
- *ok*, with its TTFT as the client saw it, and whether the gateway retried it on the other side.

Per fault: requests lost and broken, the TTFT added (median and worst over the requests sent while it
lasted, against the baseline median), the time to recover (the actuator's), and how many requests paid
the first-token timeout. The experience pool is read before and after: no example may be lost.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx

PROMPTS = {
    "chat": "Tell me about the sea in two sentences.",
    "coding": "Write a Python function that adds two numbers.",
}
MAX_TOKENS = 24


@dataclass(frozen=True)
class Fault:
    """``action`` (kill, stop, pause, restart) on ``target``; ``name`` keys its figures in the results."""

    name: str
    action: str
    target: str


class Actuator(Protocol):
    """What differs between testbeds: where the load goes, how the pool is read, how a fault is made."""

    @property
    def air_url(self) -> str:
        """OpenAI base URL of the air interface (ends in ``/v1``)."""
        ...

    async def pool_examples(self) -> list[dict[str, Any]]: ...

    async def inject(self, fault: Fault, hold_s: float) -> float:
        """Inject ``fault`` (a pause lasts ``hold_s``); seconds from injection until its target serves again."""
        ...


@dataclass
class Outcome:
    sent_at: float  # seconds since the run started
    service_type: str
    result: str  # ok, lost, broken
    ttft_s: float | None = None
    retried_from: str | None = None
    detail: str | None = None
    route: str | None = None  # where the gateway served it (x-route)


async def one_request(
    http: httpx.AsyncClient, url: str, service_type: str, started: float, user: str | None = None
) -> Outcome:
    """One streamed chat completion of ``service_type``'s prompt at ``url`` (as radio user ``user`` if given)."""
    sent_at = time.monotonic()
    outcome = Outcome(sent_at - started, service_type, "lost")
    body = {"model": "edgecloud-auto", "messages": [{"role": "user", "content": PROMPTS[service_type]}],
            "max_tokens": MAX_TOKENS, "stream": True}  # fmt: skip
    headers = {"x-service-type": service_type} | ({"x-user-id": user} if user else {})
    try:
        async with http.stream("POST", url, json=body, headers=headers) as response:
            outcome.retried_from = response.headers.get("x-retried-from")
            outcome.route = response.headers.get("x-route")
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


async def read_pool(decision_url: str, key: str | None) -> list[dict[str, Any]]:
    """The decision service's experience pool (``GET /v1/pool``); ``key`` is its service key, if it has one."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{decision_url}/v1/pool", headers=headers)
        response.raise_for_status()
        return list(response.json()["examples"])


async def drive(
    actuator: Actuator, faults: tuple[Fault, ...], phase_s: float, rate: float, seed: int
) -> dict[str, Any]:
    """The load from start to end, with ``faults`` injected one after another ``phase_s`` apart."""
    rng = random.Random(seed)
    url = f"{actuator.air_url}/chat/completions"
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
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)

    pool_before: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        loader = asyncio.create_task(load(http))
        try:
            await asyncio.sleep(phase_s)  # the baseline, which also fills the pool
            pool_before = await actuator.pool_examples()
            for fault in faults:
                injected = time.monotonic()
                recovered_s = await actuator.inject(fault, phase_s)
                windows[fault.name] = {"start_s": injected - started, "recovered_s": recovered_s}
                await asyncio.sleep(phase_s)  # heal, and the next fault's baseline
        finally:  # a fault that never heals ends the load too, so the run stops by itself
            stop.set()
            await loader
    pool_after = await actuator.pool_examples()
    return {"outcomes": outcomes, "windows": windows, "pool_before": pool_before, "pool_after": pool_after}


def summarize(run: dict[str, Any], command: str, first_token_timeout_s: float) -> dict[str, Any]:
    """The figures of ``drive``'s ``run``; ``first_token_timeout_s`` is the gateway's, to count who paid it."""
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
                o.retried_from is not None and (o.ttft_s or 0) >= first_token_timeout_s for o in during
            ),
        }
    kept = {(e["service_type"], e["token_bin"]) for e in run["pool_after"]}
    lost_examples = [e for e in run["pool_before"] if (e["service_type"], e["token_bin"]) not in kept]
    return {
        "command": command,
        "first_token_timeout_s": first_token_timeout_s,
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
