"""Decision latency: uncached decisions with the real vLLM edge (shipped method and the paper's, side by
side), cache hits in-process and over HTTP, the cache hit rate over 1,000 decisions with a stationary
pool, and the decision wait of the ``--sim`` testbed, whose decision LLM (a simulator) cannot score.

Starts a real Redis, the real vLLM edge (SmolLM2 on CPU, unless ``--llm-url`` points at one already
running, e.g. the testbed's), the decision service as a process, and for the sim part the LLM
simulator with the testbed's edge profile. The pool is filled once with one example per keyword
state, then left unchanged (stationary).

Sim part, first and before vLLM starts (the ``--sim`` testbed runs no vLLM): the same decision service
in front of the simulator twice, in the same run: as shipped
(an endpoint that cannot score is remembered for ``DECISION_SCORING_RETRY_S``) and with that memory
off (retry after 1 ms: every uncached decision probes every scoring path, as before this change).
Each sees the same seeded stream of decisions over the grid, with an experience posted every
``SIM_EXPERIENCE_EVERY`` decisions so the pool keeps changing.

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

from edgecloud.core.settings import LOCAL_EDGE_MODEL
from edgecloud.core.vocabulary import Action, TaskState, keyword_grid
from edgecloud.core.wire import DecisionRequest
from edgecloud.decision.experience import Experience
from edgecloud.decision.pool import PoolNamespace
from edgecloud.decision.redis_pool import RedisExperiencePool
from edgecloud.decision.scoring import make_scorer
from edgecloud.decision.service import DecisionService
from edgecloud.decision.settings import DecisionSettings
from edgecloud.gateway.decisions import DecisionClient
from edgecloud.gateway.settings import GatewaySettings
from edgecloud.testbed.cli import LAUNCH_SCRIPT, redis_server_binary
from edgecloud.testbed.processes import ManagedProcess, free_port, http_ok, tcp_open
from edgecloud.testbed.settings import TestbedSettings

MODEL_DIR = Path(".cache/models/smollm2-135m-instruct")
VLLM_PYTHON = Path(".venv-vllm/bin/python")
CACHE_HIT_SAMPLES = 2000
STATIONARY_DECISIONS = 1000
EPSILON = "constant:0.1"
UNCACHED_POLICIES = ("icl", "icl_paper")
"""The shipped method and the paper's, each deciding every state of a fresh pool version once."""
SIM_DECISIONS = 300
SIM_EXPERIENCE_EVERY = 10
SIM_NO_MEMORY_RETRY_S = 0.001
# Representative token counts, one per bin (eq. 8's estimated output size).
BIN_TOKENS = {"1-128": 64, "129-512": 300, "513-1024": 800, "1025-2048": 1500, ">2048": 3000}


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000

    return {"p50_ms": at(50), "p99_ms": at(99), "max_ms": ordered[-1] * 1000, "n": len(ordered)}


def vllm_counter(llm_url: str, name: str) -> float:
    """The sum of every sample of a vLLM counter, from its /metrics."""
    text = httpx.get(llm_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def request_for(state: TaskState, policy: str = "icl", cell: str = "cell-0") -> DecisionRequest:
    tokens = BIN_TOKENS[state.token_bin]
    return DecisionRequest(service_type=state.service_type, estimated_tokens=tokens, policy=policy, cell=cell)


def grid_example(state: TaskState) -> Experience:
    """One Good example: quality-preferred or long outputs offloaded, the rest local."""
    offload = state.service_type.quality_preferred or state.token_bin in ("1025-2048", ">2048")
    return Experience(state, Action.OFFLOAD if offload else Action.LOCAL, 5.0, 0.1, 20.0, True, source="benchmark")


async def fill_pool(pool: RedisExperiencePool, namespace: PoolNamespace) -> None:
    for state in keyword_grid():
        await pool.offer(namespace, grid_example(state))


async def uncached(service: DecisionService, pool: RedisExperiencePool, policy: str, llm_url: str) -> dict:
    """Every state once after the pool was filled: the first decisions of a pool version, none cached."""
    await fill_pool(pool, PoolNamespace("cell-0", policy))
    samples = []
    requests_before = vllm_counter(llm_url, "vllm:request_success_total")
    for state in keyword_grid():
        started = time.perf_counter()
        answer = await service.decide(request_for(state, policy))
        samples.append(time.perf_counter() - started)
        assert answer.source.value == "llm", answer
    prompts = (vllm_counter(llm_url, "vllm:request_success_total") - requests_before) / len(samples)
    return {**percentiles_ms(samples), "prompts_per_decision": prompts}


async def in_process(settings: DecisionSettings) -> dict[str, object]:
    client = redis.Redis.from_url(settings.redis_url)
    pool = RedisExperiencePool(client)
    scorer = make_scorer("auto", settings.llm_url, settings.llm_model, timeout_s=settings.llm_request_timeout_s)
    greedy = DecisionService(settings.model_copy(update={"epsilon": "constant:0"}), pool, scorer)
    result: dict[str, object] = {}
    for policy in UNCACHED_POLICIES:
        result[f"uncached_llm_{policy}"] = await uncached(greedy, pool, policy, settings.llm_url)
    grid = keyword_grid()
    hits: list[float] = []
    for index in range(CACHE_HIT_SAMPLES):
        started = time.perf_counter()
        answer = await greedy.decide(request_for(grid[index % len(grid)]))
        hits.append(time.perf_counter() - started)
        assert answer.source.value == "cache"
    result["cache_hit_in_process"] = percentiles_ms(hits)
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
    result["stationary"] = {
        "decisions": STATIONARY_DECISIONS, "epsilon": EPSILON, "sources": sources,
        "cache_hit_rate_of_llm_decisions": sources.get("cache", 0) / llm_path if llm_path else 0.0,
        "llm_calls": sources.get("llm", 0),
    }  # fmt: skip
    return result


def over_http(base_url: str) -> dict[str, object]:
    grid = keyword_grid()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for state in grid:
            client.post("/v1/decisions", json=request_for(state).model_dump(mode="json"))
        samples = []
        for index in range(CACHE_HIT_SAMPLES):
            body = request_for(grid[index % len(grid)]).model_dump(mode="json")
            started = time.perf_counter()
            answer = client.post("/v1/decisions", json=body).json()
            samples.append(time.perf_counter() - started)
            assert answer["source"] == "cache", answer
    return {"cache_hit_over_http": percentiles_ms(samples)}


async def sim_stream(base_url: str, cell: str) -> dict[str, object]:
    """The sim testbed's decision wait as the gateway measures it (its own ``DecisionClient``), for a seeded
    stream of decisions with the pool changing; also the decision's own time inside the service."""
    rng = random.Random(1)
    grid = keyword_grid()
    gateway = DecisionClient(GatewaySettings(decision_url=base_url, cell=cell))
    await gateway.start()
    samples, in_service, sources = [], [], {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for index in range(SIM_DECISIONS):
            state = rng.choice(grid)
            route = await gateway.decide(state.service_type, BIN_TOKENS[state.token_bin])
            samples.append(route.latency_s)
            sources[route.source] = sources.get(route.source, 0) + 1
            if index % SIM_EXPERIENCE_EVERY == 0:
                experience = grid_example(state)
                await client.post("/v1/experiences", json={
                    **request_for(state, cell=cell).model_dump(mode="json", exclude={"user"}),
                    "decision": experience.action.value, "transmission_s": 0.1,
                    "generation_s": rng.uniform(1.0, 30.0), "quality_met": True,
                })  # fmt: skip
        text = (await client.get("/metrics")).text
    await gateway.close()
    in_service = _latency_summary(text)
    return {**percentiles_ms(samples), "in_service_mean_ms": in_service, "sources": sources}


def _latency_summary(metrics_text: str) -> float:
    """Mean decision time inside the service, from its latency histogram (sum / count)."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("edgecloud_decision_latency_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("edgecloud_decision_latency_seconds_count"):
            count += float(line.split()[-1])
    return 1000 * total / count if count else float("nan")


def decision_process(name: str, logs: Path, port: int, env: dict[str, str]) -> ManagedProcess:
    return ManagedProcess(
        name, [sys.executable, "-m", "edgecloud.decision"], logs / f"{name}.log",
        http_ok(f"http://127.0.0.1:{port}/health"),
        env={"DECISION_PORT": str(port), "DECISION_LOG_LEVEL": "warning", **env},
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-url", help="a running vLLM's OpenAI base URL; default: start one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decision_latency.json"))
    parser.add_argument("--sim-only", action="store_true", help="only the sim testbed's decision wait (no vLLM)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-decision-"))
    redis_port, service_port, sim_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_process = ManagedProcess(
        "redis", [redis_server_binary(), "--port", str(redis_port), "--save", "", "--dir", str(logs)],
        logs / "redis.log", tcp_open(redis_port),
    )  # fmt: skip
    profile = TestbedSettings().edge_sim_profile
    sim_processes = [ManagedProcess(
        "llmsim", [sys.executable, "-m", "edgecloud.llmsim"], logs / "llmsim.log",
        http_ok(f"http://127.0.0.1:{sim_port}/health"),
        env={"LLMSIM_PORT": str(sim_port), "LLMSIM_PROFILE": profile, "LLMSIM_MODEL": profile},
    )]  # fmt: skip
    sim_services = {}
    for name, retry_s in (("remembered", None), ("probe_every_time", SIM_NO_MEMORY_RETRY_S)):
        port = free_port()
        env = {
            "DECISION_REDIS_URL": redis_url, "DECISION_LLM_URL": f"http://127.0.0.1:{sim_port}/v1",
            "DECISION_LLM_MODEL": profile, "DECISION_SEED": "0",
        }  # fmt: skip
        if retry_s is not None:
            env["DECISION_SCORING_RETRY_S"] = str(retry_s)
        sim_processes.append(decision_process(f"decision-sim-{name}", logs, port, env))
        sim_services[name] = f"http://127.0.0.1:{port}"
    llm_url = args.llm_url
    llm_processes = []
    if llm_url is None:
        vllm_port = free_port()
        llm_url = f"http://127.0.0.1:{vllm_port}/v1"
        llm_processes.append(ManagedProcess(
            "vllm", ["bash", str(LAUNCH_SCRIPT), str(MODEL_DIR), str(vllm_port)], logs / "vllm.log",
            http_ok(f"{llm_url}/models"), env={"VLLM_PYTHON": str(VLLM_PYTHON.absolute())}, startup_timeout_s=900,
        ))  # fmt: skip
    settings = DecisionSettings(
        redis_url=redis_url, llm_url=llm_url, llm_model=LOCAL_EDGE_MODEL, epsilon=EPSILON, llm_timeout_s=600.0,
    )  # fmt: skip
    llm_processes.append(decision_process("decision", logs, service_port, {
        "DECISION_REDIS_URL": redis_url, "DECISION_LLM_URL": llm_url, "DECISION_EPSILON": "constant:0",
        "DECISION_LLM_TIMEOUT_S": "600",
    }))  # fmt: skip
    started: list[ManagedProcess] = []

    def start(processes: list[ManagedProcess]) -> None:
        for process in processes:
            process.start()
            started.append(process)
            process.wait_healthy()

    def stop(processes: list[ManagedProcess]) -> None:
        for process in reversed(processes):
            process.stop()

    try:
        start([redis_process, *sim_processes])
        waits = {name: asyncio.run(sim_stream(url, f"sim-{name}")) for name, url in sim_services.items()}
        result: dict = {"sim_decision_wait": waits}
        stop(sim_processes)
        if not args.sim_only:
            start(llm_processes)
            result.update(asyncio.run(in_process(settings)))
            result.update(over_http(f"http://127.0.0.1:{service_port}"))
    finally:
        stop(started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = {name: result[name] for name in ("cache_hit_in_process", "cache_hit_over_http") if name in result}
    rows.update(
        {f"uncached {p}": result[f"uncached_llm_{p}"] for p in UNCACHED_POLICIES if f"uncached_llm_{p}" in result}
    )
    for name, row in result["sim_decision_wait"].items():
        rows[f"sim wait, {name}"] = row
        print(f"sim, {name}: mean time inside the decision service {row['in_service_mean_ms']:.3f} ms")
    for name, row in rows.items():
        print(f"{name:<34} p50 {row['p50_ms']:9.3f} ms   p99 {row['p99_ms']:9.3f} ms   (n={row['n']})")
    if "stationary" in result:
        print(f"stationary pool, {STATIONARY_DECISIONS} decisions ({EPSILON}): {result['stationary']}")
    print(f"raw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
