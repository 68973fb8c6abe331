"""CPU per request of every process on the gateway's path, for one target and one concurrency, optionally with a
py-spy profile of the gateway and the decision service: the quick measurement to choose a change on (issue 14);
``gateway_overhead.py`` is the one that reports.

Starts the ``--sim`` testbed as ``gateway_overhead.py`` does (both simulators on the ``zero`` profile, exploration
off; ``GATEWAY_*`` variables of this shell reach the gateway, to compare a setting), sends a warm-up and then
``requests`` streamed 16-token chats with the load generator, and prints the CPU milliseconds per request of each
service's process group (``/proc``). Unlike ``gateway_overhead.py`` it does not fill the pools first, so the
``auto`` targets see a pool that changes.

    .venv/bin/python benchmarks/path_cpu.py pinned 8 2000            # ~30 s
    .venv/bin/python benchmarks/path_cpu.py auto_unlabelled 32 2000 --profile /tmp/prof   # py-spy raw stacks there

``--profile`` needs py-spy (``.venv/bin/pip install py-spy``; not a dependency of the project).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from gateway_overhead import SIM_PROFILE, RoutedTarget, client_session, closed_loop, cpu_by_group
from testbed_process import ROOT, TestbedProcess, start_testbed

from edgecloud.core.settings import AUTO_MODEL
from edgecloud.loadgen.corpus import load_corpus
from edgecloud.loadgen.runner import target_of
from edgecloud.loadgen.settings import LoadgenSettings

TARGETS = ("pinned", "auto_typed", "auto_unlabelled")
MEASURED = ("gateway", "decision", "redis", "edge", "cloud")
PROFILED = ("gateway", "decision")
WARM_UP_REQUESTS = 300
SHORT_TOKENS = 16
SETTLE_S = 1.0  # after the last answer, for the background work (experiences, lengths) to run
SAMPLES_PER_S = 200


async def load(testbed: TestbedProcess, target: str, concurrency: int, requests: int) -> int:
    """One closed loop of the load generator's; returns the requests answered."""
    settings = LoadgenSettings(
        base_url=f"{testbed.url('gateway')}/v1",
        model=SIM_PROFILE if target == "pinned" else AUTO_MODEL,
        concurrency=[concurrency],
        num_requests=requests,
        max_tokens=SHORT_TOKENS,
        type_hint=target != "auto_unlabelled",
        seed=0,
        progress=False,
    )
    plain = target_of(settings)
    routed = RoutedTarget(**dataclasses.asdict(plain), route="edge") if target == "pinned" else plain
    async with client_session() as session:
        records, _ = await closed_loop(session, settings, load_corpus(), routed)
    return sum(record.ok for record in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("requests", type=int)
    parser.add_argument(
        "--profile", type=Path, help="write py-spy raw stacks of the gateway and the decision service here"
    )
    args = parser.parse_args()
    env = {
        "TESTBED_EDGE_SIM_PROFILE": SIM_PROFILE,
        "TESTBED_CLOUD_SIM_PROFILE": SIM_PROFILE,
        "TESTBED_SUMMARY_EVERY_S": "1e9",
        "DECISION_EPSILON": "constant:0",
        **{name: value for name, value in os.environ.items() if name.startswith("GATEWAY_")},
    }
    testbed = start_testbed(Path(tempfile.mkdtemp(prefix="path-cpu-")), "--sim", echo=False, env=env)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(load(testbed, args.target, args.concurrency, WARM_UP_REQUESTS))
        groups = {name: pid for name, pid in testbed.pids.items() if name in MEASURED}
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name in PROFILED:
                out = args.profile / f"{name}-{args.target}-c{args.concurrency}.txt"
                command = [str(ROOT / ".venv/bin/py-spy"), "record", "-p", str(testbed.pids[name]), "-o", str(out)]
                command += ["-f", "raw", "-r", str(SAMPLES_PER_S), "--nonblocking"]
                spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # py-spy attached
        before = cpu_by_group(groups)
        started = time.monotonic()
        answered = asyncio.run(load(testbed, args.target, args.concurrency, args.requests))
        duration = time.monotonic() - started
        time.sleep(SETTLE_S)
        after = cpu_by_group(groups)
        per_request = {name: round((after[name] - before[name]) * 1000 / args.requests, 3) for name in groups}
        print(
            f"{args.target} c={args.concurrency}: {answered}/{args.requests} answered in {duration:.1f} s; "
            f"CPU ms per request: {per_request}"
        )
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        testbed.stop()


if __name__ == "__main__":
    main()
