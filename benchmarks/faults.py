"""Faults under load: Redis, the decision service, the cloud and the edge killed (and the edge paused)
while the sim testbed serves a steady stream of requests; what each fault cost and how fast it healed.

Starts ``scripts/testbed --sim`` with a first-token timeout of ``FIRST_TOKEN_TIMEOUT_S`` and runs
``fault_load``'s load through the air interface at ``--rate`` requests/s. After a quiet baseline, each fault
in turn, then ``--phase-s`` seconds to heal: ``kill -9`` of Redis, of the decision service, of the cloud
simulator, of the edge simulator (the testbed restarts each), and the edge paused (``SIGSTOP``) for
``--phase-s`` seconds, then resumed. The time to recover runs until the testbed reports the child healthy
again, or the paused edge is resumed. ``container_faults.py`` is the same against the compose project.

    .venv/bin/python benchmarks/faults.py                 # ~3 min; writes benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fault_load import Fault, drive, read_pool, summarize
from testbed_process import ROOT, TestbedProcess, start_testbed

RESULT = ROOT / "benchmarks" / "results" / "faults.json"
FIRST_TOKEN_TIMEOUT_S = 2.0  # the gateway's, for this run (its default, 30 s, suits a CPU vLLM under load)
FAULTS = (
    Fault("redis", "kill", "redis"),
    Fault("decision", "kill", "decision"),
    Fault("cloud", "kill", "cloud"),
    Fault("edge", "kill", "edge"),
    Fault("edge_paused", "pause", "edge"),
)
HEALED = "healthy again"  # in the testbed's line about a restarted child
CHILD_LINE_NAME = {"redis": "redis", "decision": "decision", "cloud": "cloud-llm", "edge": "edge-llm"}


@dataclass
class SignalActuator:
    """Faults by signal to the testbed's children; the testbed restarts a killed one and says when."""

    testbed: TestbedProcess

    @property
    def air_url(self) -> str:
        return f"{self.testbed.url('air')}/v1"

    async def pool_examples(self) -> list[dict[str, Any]]:
        return await read_pool(self.testbed.url("decision"), self.testbed.key("DECISION_SERVICE_API_KEY"))

    async def inject(self, fault: Fault, hold_s: float) -> float:
        pid = self.testbed.pids[fault.target]
        if fault.action == "pause":
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(hold_s)
            os.kill(pid, signal.SIGCONT)
            return hold_s
        since_line = len(self.testbed.lines)
        os.kill(pid, signal.SIGKILL)
        return await self.healed(fault.target, since_line)

    async def healed(self, child: str, since_line: int) -> float:
        """Seconds from now until the testbed reports ``child`` healthy again (after line ``since_line``)."""
        waited = time.monotonic()
        prefix = f"[testbed] {CHILD_LINE_NAME[child]}"
        while not any(line.startswith(prefix) and HEALED in line for line in self.testbed.lines[since_line:]):
            await asyncio.sleep(0.05)
        return time.monotonic() - waited


def run(phase_s: float = 8.0, rate: float = 4.0, seed: int = 7, echo: bool = False) -> dict[str, Any]:
    """The whole experiment, for the command line and for ``tests/test_faults_live.py``."""
    with tempfile.TemporaryDirectory(prefix="faults-testbed-") as state:
        env = {"GATEWAY_FIRST_TOKEN_TIMEOUT_S": str(FIRST_TOKEN_TIMEOUT_S)}
        testbed = start_testbed(Path(state), echo=echo, env=env)
        try:
            measured = asyncio.run(drive(SignalActuator(testbed), FAULTS, phase_s, rate, seed))
        finally:
            testbed.stop()
    command = f".venv/bin/python benchmarks/faults.py --phase-s {phase_s} --rate {rate}"
    return summarize(measured, command, FIRST_TOKEN_TIMEOUT_S)


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
