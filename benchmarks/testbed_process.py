"""The local testbed as a child of a benchmark: free ports, its output echoed, its children's pids.

Shared by the benchmarks that run against ``scripts/testbed`` (live counterpart, faults, soak).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecloud.testbed.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "[testbed] ready"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
SERVICES = ("air", "gateway", "edge", "cloud", "decision", "redis")
# The first word of each child's name in the testbed's "starting <name> (pid N, ..." lines.
CHILD_OF_LINE = {"channel-emulator": "air", "gateway": "gateway", "edge-llm": "edge", "cloud-llm": "cloud",
                 "decision": "decision", "redis": "redis"}  # fmt: skip


@dataclass
class TestbedProcess:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    state_dir: Path
    pids: dict[str, int] = field(default_factory=dict)  # service: pid of its process (updated on restarts)
    lines: list[str] = field(default_factory=list)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def key(self, name: str) -> str:
        """This run's key ``name`` (a variable of the testbed's ``keys.env``)."""
        lines = (self.state_dir / "keys.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)[name]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def _follow(self, line: str, echo: bool) -> None:
        self.lines.append(line)
        if echo:
            print(line, end="", flush=True)
        if "[testbed] starting " in line and "(pid " in line:
            name = line.split("[testbed] starting ", 1)[1].split()[0]
            self.pids[CHILD_OF_LINE.get(name, name)] = int(line.split("(pid ", 1)[1].split(",")[0])


def start_testbed(state_dir: Path, *flags: str, echo: bool = True, env: dict[str, str] | None = None) -> TestbedProcess:
    """``python -m edgecloud.testbed`` with ``flags`` (default ``--sim``) on free ports, once it is ready;
    ``env`` reaches the testbed's children too (``GATEWAY_*`` settings, for example)."""
    ports = {name: free_port() for name in SERVICES}
    env = {**(env or {}), **{f"TESTBED_{name.upper()}_PORT": str(port) for name, port in ports.items()}}
    env["TESTBED_STATE_DIR"] = str(state_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecloud.testbed", *(flags or ("--sim",))],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    testbed = TestbedProcess(process, ports, state_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    assert process.stdout is not None
    for line in process.stdout:
        testbed._follow(line, echo)
        if READY_LINE in line:
            # Keep reading (the testbed prints a summary every 10 s) so a full pipe never blocks it.
            threading.Thread(target=_follow_forever, args=(testbed, echo), daemon=True).start()
            return testbed
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("the testbed did not become ready; see its output above")


def _follow_forever(testbed: TestbedProcess, echo: bool) -> None:
    assert testbed.process.stdout is not None
    for line in testbed.process.stdout:
        testbed._follow(line, echo)
