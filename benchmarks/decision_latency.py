"""Decision latency: cache hits in-process and over HTTP, uncached decisions with the real vLLM edge,
and the cache hit rate over 1,000 decisions with a stationary pool.

Starts a real Redis, the real vLLM edge (SmolLM2 on CPU, unless ``--llm-url`` points at one already
running, e.g. the testbed's) and the decision service as a process. The pool is filled once with one
example per keyword state, then left unchanged (stationary).

    .venv/bin/python benchmarks/decision_latency.py [--llm-url http://127.0.0.1:8001/v1] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as redis

from edgecloud.decision.experience import Experience
from edgecloud.decision.keywords import Action, TaskState, keyword_grid
from edgecloud.decision.pool import PoolNamespace
from edgecloud.decision.protocol import DecisionRequest
from edgecloud.decision.redis_pool import RedisExperiencePool
from edgecloud.decision.scoring import make_scorer
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings
from edgecloud.testbed.cli import EDGE_VLLM_MODEL, LAUNCH_SCRIPT, redis_server_binary
from edgecloud.testbed.processes import ManagedProcess, free_port, http_ok, tcp_open

MODEL_DIR = Path(".cache/models/smollm2-135m-instruct")
VLLM_PYTHON = Path(".venv-vllm/bin/python")
CACHE_HIT_SAMPLES = 2000
UNCACHED_SAMPLES = 12
STATIONARY_DECISIONS = 1000
EPSILON = "constant:0.1"
# Representative token counts, one per bin (eq. 8's estimated output size).
BIN_TOKENS = {"1-128": 64, "129-512": 300, "513-1024": 800, "1025-2048": 1500, ">2048": 3000}


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000

    return {"p50_ms": at(50), "p99_ms": at(99), "n": len(ordered)}


def vllm_counter(llm_url: str, name: str) -> float:
    """The sum of every sample of a vLLM counter, from its /metrics."""
    text = httpx.get(llm_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def request_for(state: TaskState, policy: str = "icl") -> DecisionRequest:
    return DecisionRequest(service_type=state.service_type, estimated_tokens=BIN_TOKENS[state.token_bin], policy=policy)


async def fill_pool(pool: RedisExperiencePool, namespace: PoolNamespace) -> None:
    """One Good example per keyword state: quality-preferred or long outputs offloaded, the rest local."""
    for state in keyword_grid():
        offload = state.service_type.quality_preferred or state.token_bin in ("1025-2048", ">2048")
        action = Action.OFFLOAD if offload else Action.LOCAL
        await pool.offer(namespace, Experience(state, action, 5.0, 0.1, 20.0, True, source="benchmark"))


async def in_process(settings: DecisionSettings) -> dict[str, object]:
    client = redis.Redis.from_url(settings.redis_url)
    pool = RedisExperiencePool(client)
    scorer = make_scorer("auto", settings.llm_url, settings.llm_model, timeout_s=settings.llm_request_timeout_s)
    greedy = DecisionService(settings.model_copy(update={"epsilon": "constant:0"}), pool, scorer)
    await fill_pool(pool, PoolNamespace("cell-0", "icl"))
    grid = keyword_grid()
    uncached: list[float] = []
    requests_before = vllm_counter(settings.llm_url, "vllm:request_success_total")
    generated_before = vllm_counter(settings.llm_url, "vllm:generation_tokens_total")
    for state in grid[:UNCACHED_SAMPLES]:
        started = time.perf_counter()
        answer = await greedy.decide(request_for(state))
        uncached.append(time.perf_counter() - started)
        assert answer.source.value == "llm", answer
    # What the LLM did for these decisions, from its own counters: batched prompts and generated tokens.
    llm_cost = {
        "prompts_per_decision": (vllm_counter(settings.llm_url, "vllm:request_success_total") - requests_before)
        / UNCACHED_SAMPLES,
        "generated_tokens_per_decision": (vllm_counter(settings.llm_url, "vllm:generation_tokens_total")
                                          - generated_before) / UNCACHED_SAMPLES,
    }  # fmt: skip
    hits: list[float] = []
    for index in range(CACHE_HIT_SAMPLES):
        started = time.perf_counter()
        answer = await greedy.decide(request_for(grid[index % UNCACHED_SAMPLES]))
        hits.append(time.perf_counter() - started)
        assert answer.source.value == "cache"
    exploring = DecisionService(settings, pool, scorer)
    await fill_pool(pool, PoolNamespace("cell-0", "icl"))  # same rewards: the pool stays as it was
    rng = random.Random(0)
    sources: dict[str, int] = {}
    for _ in range(STATIONARY_DECISIONS):
        answer = await exploring.decide(request_for(rng.choice(grid)))
        sources[answer.source.value] = sources.get(answer.source.value, 0) + 1
    await scorer.aclose()
    await client.aclose()
    llm_path = sources.get("llm", 0) + sources.get("cache", 0)
    return {
        "uncached_llm": {**percentiles_ms(uncached), **llm_cost},
        "cache_hit_in_process": percentiles_ms(hits),
        "stationary": {
            "decisions": STATIONARY_DECISIONS, "epsilon": EPSILON, "sources": sources,
            "cache_hit_rate_of_llm_decisions": sources.get("cache", 0) / llm_path if llm_path else 0.0,
            "llm_calls": sources.get("llm", 0),
        },
    }  # fmt: skip


def over_http(base_url: str) -> dict[str, object]:
    grid = keyword_grid()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for state in grid[:UNCACHED_SAMPLES]:
            client.post("/v1/decisions", json=request_for(state).model_dump(mode="json"))
        samples = []
        for index in range(CACHE_HIT_SAMPLES):
            body = request_for(grid[index % UNCACHED_SAMPLES]).model_dump(mode="json")
            started = time.perf_counter()
            answer = client.post("/v1/decisions", json=body).json()
            samples.append(time.perf_counter() - started)
            assert answer["source"] == "cache", answer
    return {"cache_hit_over_http": percentiles_ms(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-url", help="a running vLLM's OpenAI base URL; default: start one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decision_latency.json"))
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-decision-"))
    redis_port, service_port = free_port(), free_port()
    processes = [
        ManagedProcess("redis", [redis_server_binary(), "--port", str(redis_port), "--save", "", "--dir", str(logs)],
                       logs / "redis.log", tcp_open(redis_port)),
    ]  # fmt: skip
    llm_url = args.llm_url
    if llm_url is None:
        vllm_port = free_port()
        llm_url = f"http://127.0.0.1:{vllm_port}/v1"
        processes.append(ManagedProcess(
            "vllm", ["bash", str(LAUNCH_SCRIPT), str(MODEL_DIR), str(vllm_port)], logs / "vllm.log",
            http_ok(f"{llm_url}/models"), env={"VLLM_PYTHON": str(VLLM_PYTHON.absolute())}, startup_timeout_s=900,
        ))  # fmt: skip
    settings = DecisionSettings(
        redis_url=f"redis://127.0.0.1:{redis_port}/0", llm_url=llm_url, llm_model=EDGE_VLLM_MODEL,
        epsilon=EPSILON, llm_timeout_s=600.0, port=service_port,
    )  # fmt: skip
    service_env = {
        "DECISION_PORT": str(service_port), "DECISION_REDIS_URL": settings.redis_url, "DECISION_LLM_URL": llm_url,
        "DECISION_EPSILON": "constant:0", "DECISION_LLM_TIMEOUT_S": "600", "DECISION_LOG_LEVEL": "warning",
    }  # fmt: skip
    processes.append(ManagedProcess(
        "decision", [sys.executable, "-m", "edgecloud.decision"], logs / "decision.log",
        http_ok(f"http://127.0.0.1:{service_port}/health"), env=service_env,
    ))  # fmt: skip
    try:
        for process in processes:
            process.start()
            process.wait_healthy()
        result = asyncio.run(in_process(settings))
        result.update(over_http(f"http://127.0.0.1:{service_port}"))
    finally:
        for process in reversed(processes):
            process.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("cache_hit_in_process", "cache_hit_over_http", "uncached_llm"):
        row = result[name]
        print(f"{name:<22} p50 {row['p50_ms']:8.3f} ms   p99 {row['p99_ms']:8.3f} ms   (n={row['n']})")  # type: ignore[index]
    print(f"LLM cost of an uncached decision: {result['uncached_llm']}")
    stationary = result["stationary"]
    print(f"stationary pool, {STATIONARY_DECISIONS} decisions ({EPSILON}): {stationary}")
    print(f"raw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
