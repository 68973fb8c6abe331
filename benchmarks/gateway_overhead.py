"""Gateway overhead beside direct access and LiteLLM: TTFT added, CPU per request of every process on the
path, tokens per second relayed (issue 14).

Starts, in one process tree, the ``--sim`` testbed (``testbed_process.py``: Redis, both simulators, the
decision service whose LLM is the edge simulator, the gateway, the air interface, each started with the
environment ``scripts/testbed --sim`` gives it) with both simulators on the ``zero`` latency profile (no
TTFT, no TPOT: every millisecond measured is software), and LiteLLM's proxy (``litellm_proxy.py``: a
pinned version in its own venv, default settings, one worker, a master key, no database) with one model
entry pointing at the edge simulator. The same closed-loop load, the load generator's (its client and
runner: real prompts of every service type, a fixed number of output tokens, streamed), goes to five
targets, alternating:

- ``direct``: the edge simulator itself;
- ``pinned``: the gateway with ``x-route: edge`` and ``x-service-type``;
- ``auto_typed``: the gateway's ``edgecloud-auto`` with ``x-service-type`` (the decision service decides);
- ``auto_unlabelled``: ``edgecloud-auto`` without a type (the classifier runs, then the decision service);
- ``litellm``: LiteLLM's proxy.

Each round runs every concurrency level (1, 8, 32, 256; short answers: TTFT) for every target, then
the throughput phase (256 workers, long answers: relayed tokens per second) for every target; the
order of the targets rotates from round to round, so drift hits every target alike. Reported: TTFT
p50/p99 (median over rounds) and what each target adds to direct's; the CPU per request (user + system
time from ``/proc``, every process of each service's process group; its clock ticks every 10 ms, so
a phase needs some hundred requests for a tenth of a millisecond) of every process; tokens/s. Issue 14's
targets are printed as met or missed from the unrounded numbers (``gateway_overhead_report.goals``):
CPU summed over gateway + decision service + Redis, the simulators being the backend's own work (shown
apart), and a CPU target must hold at every concurrency level (the worst is shown); a target whose
phases had failed requests is missed.

Steady state, and what is measured: every target gets warm-up requests first (short and long), so
connection pools, the classifier, the length estimates and the decision cache are warm (the client
closes a connection idle for 4 s, before the servers' 5 s do, so a phase after a longer pause opens
some anew, for every target alike). The decision
pools (the shared one and the client-choices one that pinned requests feed) are filled before that with
one Good example per keyword state (decision local, measured delays 0, so reward = T_target): no
measured experience can beat it, so the pools do not change (their versions are checked around every
phase) while every request still posts its experience, as in service. That work counts: a gateway
phase's CPU is read once the decision service has logged the phase's experiences (a Redis stream's
length, so the wait costs the path nothing; the probes of the gateway's counters and the pools' versions
come before and after a phase, outside it). The decision LLM is a simulator, which cannot score:
decisions come from the pool's example (source ``fallback``, then ``cache``; every 60 s the service asks
the simulator again), as in ``scripts/testbed --sim``. Exploration is off (``DECISION_EPSILON=constant:0``)
so that every request is served by the one edge simulator, as direct and LiteLLM are; an exploring 10 %
would go to the cloud simulator, a second process, and flatter the gateway's throughput.

    .venv/bin/python benchmarks/gateway_overhead.py          # 3 rounds: ~20-25 min on 2 cores, most of it LiteLLM
    .venv/bin/python benchmarks/gateway_overhead.py --quick  # 1 round, few requests: a smoke run (~3 min)

Results: ``benchmarks/results/gateway_overhead.json`` and a markdown table on stdout.

Loopback only; bounded: every phase has a fixed request count, the whole run a time limit; every
process started is stopped, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import httpx
import redis.asyncio as redis
from gateway_overhead_report import (
    BACKENDS,
    GATEWAY_TARGETS,
    PATHS,
    PROCESSES,
    TARGETS,
    Phase,
    goals,
    log_warnings,
    rows,
    tables,
)
from litellm_proxy import LITELLM_REQUIREMENT, LITELLM_VERSION, ensure_venv, proxy_process
from testbed_process import ROOT, TestbedProcess, start_testbed

from edgecloud.core.headers import ROUTE_HEADER
from edgecloud.core.settings import AUTO_MODEL
from edgecloud.core.vocabulary import TOKEN_BIN_EDGES, Action, ServiceType
from edgecloud.core.wire import (
    CLIENT_CHOICES_CELL_SUFFIX,
    DEFAULT_CELL,
    DEFAULT_POLICY,
    ExperienceRequest,
    ExperienceResponse,
)
from edgecloud.loadgen.client import Target, check_reachable
from edgecloud.loadgen.corpus import Corpus, load_corpus
from edgecloud.loadgen.runner import Point, Runner, target_of
from edgecloud.loadgen.settings import LoadgenSettings
from edgecloud.loadgen.workload import Workload
from edgecloud.testbed.processes import free_port
from edgecloud.testbed.summary import scrape

SIM_PROFILE = "zero"  # also the model name both simulators serve (the testbed names a simulator by its profile)
CONCURRENCY = (1, 8, 32, 256)
SHORT_TOKENS = 16
THROUGHPUT_CONCURRENCY = 256
SEED = 0
SETTLE_S = 0.3  # after a phase's last answer, before its CPU is read: background work (experiences) runs
DRAIN_LIMIT_S = 30.0  # longest wait for the gateway's experience queue to empty
PREFLIGHT_TIMEOUT_S = 10.0
IDLE_S = 2.0
# The gateway's counters kept per phase (by label): what its experiences, decisions and classifier did.
GATEWAY_COUNTERS = tuple(
    f"edgecloud_gateway_{name}_total{{"
    for name in ("requests", "retries", "experiences", "decisions", "decision_memory", "classifications")
)
CLIENT_KEEPALIVE_S = 4.0  # below uvicorn's 5 s keep-alive timeout
HEALTHY_LIMIT_S = 90.0  # longest wait for a backend the gateway routes around to be back before a phase
RUN_LIMIT_S = 3600.0


@dataclass(frozen=True)
class Sizes:
    """How much a run sends. Each TTFT phase: max(min_requests, per_worker x concurrency) requests."""

    rounds: int
    min_requests: int
    per_worker: int
    throughput_requests: int  # at THROUGHPUT_CONCURRENCY
    long_tokens: int  # output tokens of the throughput phase
    warm_up: int  # requests (and workers) of each warm-up loop, short and long, per target

    def requests(self, concurrency: int) -> int:
        return max(self.min_requests, self.per_worker * concurrency)


# LiteLLM takes most of the time: on 2 shared cores about 80 ms of CPU per short streamed request, and
# far more per long one, so the quick run's long answers are shorter (a smoke run, not a result).
FULL = Sizes(rounds=3, min_requests=200, per_worker=2, throughput_requests=512, long_tokens=256, warm_up=256)
QUICK = Sizes(rounds=1, min_requests=16, per_worker=1, throughput_requests=256, long_tokens=64, warm_up=32)


@dataclass(frozen=True)
class RoutedTarget(Target):
    """The load generator's target with the route pinned by ``x-route`` (the load generator has no such flag)."""

    route: str = "edge"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), ROUTE_HEADER: self.route}


def client_session() -> aiohttp.ClientSession:
    """The load generator's session (no connection limit, no session timeout), but an idle connection is
    closed after ``CLIENT_KEEPALIVE_S``: every server here (uvicorn, LiteLLM's too) closes one after 5 s,
    and a request written on a connection just as the server closes it fails ("Server disconnected")."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=CLIENT_KEEPALIVE_S)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def closed_loop(
    session: aiohttp.ClientSession, settings: LoadgenSettings, corpus: Corpus, target: Target
) -> tuple[list, float]:
    """One closed loop of the load generator's at ``settings.concurrency[0]`` against ``target``: its records and
    its duration."""
    runner = Runner(settings, Workload.from_settings(settings, corpus), session)
    runner.target = target
    result = await runner.run_point(Point(concurrency=settings.concurrency[0]))
    return result.records, result.duration_s


def cpu_by_group(groups: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of every process in each named process group (Linux /proc).

    Each service runs in its own session (``ManagedProcess``), so its group holds what it spawned too.
    """
    totals = dict.fromkeys(groups, 0.0)
    names = {group: name for name, group in groups.items()}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        name = names.get(int(fields[2]))
        if name is not None:
            totals[name] += (int(fields[11]) + int(fields[12])) / ticks
    return totals


def minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


@dataclass(frozen=True)
class TargetSpec:
    base_url: str
    model: str
    api_key: str | None = None
    typed: bool = False  # x-service-type sent (the request's type in the corpus)
    route: str | None = None  # x-route sent


class Bench:
    """The running processes, a client session per target, and the phases."""

    def __init__(self, testbed: TestbedProcess, litellm_url: str, litellm_key: str, litellm_pid: int):
        self.testbed = testbed
        self.litellm_pid = litellm_pid
        self.corpus: Corpus = load_corpus()
        self.decision_headers = {"authorization": f"Bearer {testbed.key('DECISION_SERVICE_API_KEY')}"}
        gateway = f"{testbed.url('gateway')}/v1"
        self.targets = {
            "direct": TargetSpec(f"{testbed.url('edge')}/v1", SIM_PROFILE),
            "pinned": TargetSpec(gateway, SIM_PROFILE, typed=True, route="edge"),
            "auto_typed": TargetSpec(gateway, AUTO_MODEL, typed=True),
            "auto_unlabelled": TargetSpec(gateway, AUTO_MODEL),
            "litellm": TargetSpec(litellm_url, SIM_PROFILE, api_key=litellm_key),
        }
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.redis: redis.Redis | None = None

    def groups(self) -> dict[str, int]:
        """Process group of each service (the testbed restarts a dead one under a new pid)."""
        return {
            **{name: pid for name, pid in self.testbed.pids.items() if name in PROCESSES},
            "litellm": self.litellm_pid,
        }

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each service, and of this process (the load client: off the path, on the cores)."""
        return {**cpu_by_group(self.groups()), "client": time.process_time()}

    async def open(self) -> None:
        self.redis = redis.Redis(port=self.testbed.ports["redis"])
        for name in TARGETS:
            self.sessions[name] = client_session()
            served = await check_reachable(self.sessions[name], self._target(name), PREFLIGHT_TIMEOUT_S)
            print(f"[bench] {name}: {self.targets[name].base_url} serves {served}", flush=True)

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        if self.redis is not None:
            await self.redis.aclose()

    def _settings(self, name: str, concurrency: int, requests: int, max_tokens: int) -> LoadgenSettings:
        spec = self.targets[name]
        return LoadgenSettings(
            base_url=spec.base_url,
            model=spec.model,
            api_key=spec.api_key,
            concurrency=[concurrency],
            num_requests=requests,
            max_tokens=max_tokens,
            type_hint=spec.typed,
            seed=SEED,
            progress=False,
        )

    def _target(self, name: str) -> Target:
        spec = self.targets[name]
        target = target_of(self._settings(name, 1, 1, SHORT_TOKENS))
        return RoutedTarget(**dataclasses.asdict(target), route=spec.route) if spec.route else target

    async def load(self, name: str, concurrency: int, requests: int, max_tokens: int) -> tuple[list, float]:
        """One closed loop of the load generator's: its records and its duration."""
        settings = self._settings(name, concurrency, requests, max_tokens)
        return await closed_loop(self.sessions[name], settings, self.corpus, self._target(name))

    async def phase(self, name: str, concurrency: int, requests: int, max_tokens: int, round_: int) -> Phase:
        """One measured closed loop; its CPU is read once its background work is done (``_settled``). The
        probes of the gateway's counters and the pools' versions come before and after, outside it."""
        waited = await self._backends_up() if name in GATEWAY_TARGETS else 0.0
        first = await self._probe() if name in GATEWAY_TARGETS else None
        logged = await self._experiences_logged()
        before = self.cpu()
        records, duration = await self.load(name, concurrency, requests, max_tokens)
        await self._settled(logged if first is not None else None, sum(record.ok for record in records))
        cpu = minus(self.cpu(), before)
        phase = Phase(name, concurrency, max_tokens, round_, records, duration, cpu, waited_for_backend_s=waited)
        if first is not None:
            last = await self._probe()
            phase.pool_changed = last["pool_versions"] != first["pool_versions"]
            phase.experiences = await self._experiences_logged() - logged
            phase.counters = {key: value - first["counters"].get(key, 0.0) for key, value in last["counters"].items()}
        failed = len(records) - len(phase.ok)
        print(
            f"[bench] round {round_ + 1} {name:<16} c={concurrency:<3} {max_tokens:>3} tokens: {len(records)} "
            f"requests in {duration:.1f} s" + (f", {failed} FAILED" if failed else ""),
            flush=True,
        )
        return phase

    async def _settled(self, logged: int | None, served: int) -> None:
        """Wait for the phase's background work: for the gateway, until the decision service has logged
        the phase's experiences (or their count stopped moving: requests that post none). Reads Redis only
        (a stream's length), so the waiting costs the path nothing worth counting."""
        await asyncio.sleep(SETTLE_S)
        if logged is None:
            return
        deadline, last = time.monotonic() + DRAIN_LIMIT_S, None
        while time.monotonic() < deadline:
            now = await self._experiences_logged()
            if now - logged >= served or now == last:
                return
            last = now
            await asyncio.sleep(SETTLE_S)

    async def _experiences_logged(self) -> int:
        """Experiences the decision service has recorded in the gateway's pools: the length of each pool's
        log stream (docs/decision.md; capped near 100,000 entries, far above a run's)."""
        assert self.redis is not None
        return sum([int(await self.redis.xlen(f"edgecloud:pool:{cell}:{DEFAULT_POLICY}:log")) for cell in pool_cells()])

    async def _backends_up(self) -> float:
        """Before a gateway phase: while the gateway routes around a backend that failed in an earlier phase
        (its circuit breaker), one pinned request a second to each side, as the probe that closes it, so
        that one phase's failure does not decide the next one's. Returns the seconds waited (reported)."""
        started, waited = time.monotonic(), False
        while (await self._probe())["backends_down"] and time.monotonic() - started < HEALTHY_LIMIT_S:
            waited = True
            for route in BACKENDS:
                body = {"model": SIM_PROFILE, "messages": [{"role": "user", "content": "probe"}], "max_tokens": 1}
                url = f"{self.testbed.url('gateway')}/v1/chat/completions"
                async with httpx.AsyncClient(timeout=PREFLIGHT_TIMEOUT_S) as http:
                    await http.post(url, json=body, headers={ROUTE_HEADER: route})
            await asyncio.sleep(1.0)
        if not waited:
            return 0.0
        seconds = time.monotonic() - started
        print(f"[bench] waited {seconds:.1f} s for the gateway's backends to be up again", flush=True)
        return seconds

    async def _probe(self) -> dict[str, Any]:
        """The gateway's counters and the decision pools' versions."""
        metrics = await asyncio.to_thread(scrape, f"{self.testbed.url('gateway')}/metrics")
        async with httpx.AsyncClient(timeout=PREFLIGHT_TIMEOUT_S, headers=self.decision_headers) as http:
            versions = []
            for cell in pool_cells():
                query = {"cell": cell, "policy": DEFAULT_POLICY}
                response = await http.get(f"{self.testbed.url('decision')}/v1/pool", params=query)
                versions.append(int(response.raise_for_status().json()["version"]))
        counters = {key: value for key, value in metrics.items() if key.startswith(GATEWAY_COUNTERS)}
        down = metrics.get("edgecloud_gateway_backend_down", 0.0)
        return {"pool_versions": versions, "counters": counters, "backends_down": down}

    async def fill_pools(self) -> Counter[str]:
        """One Good example per keyword state in the gateway's pools (shared and client choices): local,
        measured in 0 s, so its reward is T_target and no measured experience can replace it."""
        lowest_tokens = (1, *(edge + 1 for edge in TOKEN_BIN_EDGES))  # one per bin
        outcomes: Counter[str] = Counter()
        headers = {**self.decision_headers, "content-type": "application/json"}
        async with httpx.AsyncClient(timeout=PREFLIGHT_TIMEOUT_S, headers=headers) as http:
            for cell, service_type, tokens in itertools.product(pool_cells(), ServiceType, lowest_tokens):
                body = ExperienceRequest(
                    service_type=service_type,
                    estimated_tokens=tokens,
                    cell=cell,
                    policy=DEFAULT_POLICY,
                    decision=Action.LOCAL,
                    transmission_s=0.0,
                    generation_s=0.0,
                    quality_met=True,
                )
                response = await http.post(
                    f"{self.testbed.url('decision')}/v1/experiences", content=body.model_dump_json()
                )
                answer = ExperienceResponse.model_validate_json(response.raise_for_status().content)
                outcomes[f"{answer.outcome.value} (reward {answer.reward:g})"] += 1
        return outcomes

    async def idle(self) -> dict[str, float]:
        """CPU milliseconds per second of each process with no load: what a phase carries besides its requests."""
        before = self.cpu()
        await asyncio.sleep(IDLE_S)
        return {name: value * 1000 / IDLE_S for name, value in minus(self.cpu(), before).items()}


def pool_cells() -> tuple[str, str]:
    """The shared pool of the gateway's cell, and the one its clients' own choices feed."""
    return DEFAULT_CELL, f"{DEFAULT_CELL}{CLIENT_CHOICES_CELL_SUFFIX}"


async def run(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    print(f"[bench] decision pools filled: {dict(await bench.fill_pools())}", flush=True)
    await bench.open()
    for name in TARGETS:  # warm-up: connections, classifier, length estimates, decision cache
        for max_tokens in (SHORT_TOKENS, sizes.long_tokens):
            await bench.load(name, sizes.warm_up, sizes.warm_up, max_tokens)
    idle = await bench.idle()
    phases: list[Phase] = []
    plan = [(level, sizes.requests(level), SHORT_TOKENS) for level in CONCURRENCY]
    plan.append((THROUGHPUT_CONCURRENCY, sizes.throughput_requests, sizes.long_tokens))
    for round_ in range(sizes.rounds):
        order = TARGETS[round_ % len(TARGETS) :] + TARGETS[: round_ % len(TARGETS)]
        for concurrency, requests, max_tokens in plan:
            for name in order:
                phases.append(await bench.phase(name, concurrency, requests, max_tokens, round_))
    ttft, throughput = rows(phases, SHORT_TOKENS), rows(phases, sizes.long_tokens)
    return {
        "setup": setup(sizes),
        "idle_cpu_ms_per_s": idle,
        "ttft": ttft,
        "throughput": throughput,
        "goals": goals(ttft, throughput),
    }


def setup(sizes: Sizes) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return {
        "commit": commit.stdout.strip(),
        "sizes": dataclasses.asdict(sizes),
        "concurrency": list(CONCURRENCY),
        "requests_per_phase": {str(level): sizes.requests(level) for level in CONCURRENCY},
        "short_tokens": SHORT_TOKENS,
        "throughput_concurrency": THROUGHPUT_CONCURRENCY,
        "simulator_profile": SIM_PROFILE,
        "litellm": LITELLM_REQUIREMENT,
        "cpus": os.cpu_count(),
        "paths": {name: list(path) for name, path in PATHS.items()},
        "cpu": "user + system time of every process in each service's process group (/proc/<pid>/stat), "
        "read before a phase and once its background work is done, divided by the phase's successful "
        "requests; for the gateway, read once the decision service has logged the phase's experiences",
        "proxy_cpu_ms": "sum over the path's processes without the LLM simulators (the backend's own work)",
        "pool": "filled before the warm-up with one Good example per keyword state (local, reward T_target) in "
        "the shared and the client-choices pool; exploration off; every request still posts its experience",
    }


def stop_testbed(testbed: TestbedProcess) -> None:
    """SIGINT (the testbed stops its children); if it hangs, every child's group and the testbed killed."""
    try:
        testbed.stop()
    except subprocess.TimeoutExpired:
        for pid in testbed.pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        testbed.process.kill()
        testbed.process.wait()


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every process started is stopped (``finally``) on SIGTERM too


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_signal)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round and few requests: a smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        help="default: benchmarks/results/gateway_overhead.json "
        "(--quick: gateway_overhead.quick.tmp there, ignored by git)",
    )
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results"
    out = args.out or results / ("gateway_overhead.quick.tmp" if args.quick else "gateway_overhead.json")
    state = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    print(f"[bench] litellm {LITELLM_VERSION}; logs in {state}", flush=True)
    env = {
        "TESTBED_EDGE_SIM_PROFILE": SIM_PROFILE,
        "TESTBED_CLOUD_SIM_PROFILE": SIM_PROFILE,
        "TESTBED_SUMMARY_EVERY_S": "1e9",
        "DECISION_EPSILON": "constant:0",
    }
    litellm_key = f"sk-bench-{secrets.token_urlsafe(16)}"
    litellm_port = free_port()
    ensure_venv()  # before anything starts: the first run installs LiteLLM
    testbed = start_testbed(state, "--sim", echo=False, env=env)
    litellm = None
    try:
        litellm = proxy_process(litellm_port, f"{testbed.url('edge')}/v1", SIM_PROFILE, litellm_key, state / "logs")
        litellm.start()
        litellm.wait_healthy()
        assert litellm.popen is not None
        bench = Bench(testbed, f"http://127.0.0.1:{litellm_port}/v1", litellm_key, litellm.popen.pid)

        async def bounded() -> dict[str, Any]:
            try:
                return await asyncio.wait_for(run(bench, QUICK if args.quick else FULL), RUN_LIMIT_S)
            finally:
                await bench.close()

        result = asyncio.run(bounded())
    finally:
        if litellm is not None:
            litellm.stop()
        stop_testbed(testbed)
    result["log_warnings"] = log_warnings(state / "logs")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(tables(result))
    for service, lines in result["log_warnings"].items():
        print(f"[bench] {service} logged {sum(lines.values())} warnings/errors, e.g. {next(iter(lines))!r}")
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
