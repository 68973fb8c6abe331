"""Faults under load on the compose testbed, made through the Docker Engine API (Docker's or podman's).

Services of the running compose project are killed, stopped, paused and restarted while it serves.

``faults.py``'s experiment (``fault_load``: the same load, outcomes and figures) against the containers of
``--project`` instead of the process testbed. A service's container is the one labelled with the project
and the service (``com.docker.compose.project`` and ``com.docker.compose.service``, which docker compose and
podman-compose both set); no other container is ever touched. The faults (``--faults ACTION:SERVICE ...``):

- ``kill``: SIGKILL; if the engine has not started it again within ``RESTART_GRACE_S`` (its restart policy
  may count a kill as a manual stop), the benchmark starts it and says so in ``restarted_by_benchmark``;
- ``stop``: stop (SIGTERM, then the engine's grace), then start;
- ``pause``: frozen for ``--phase-s`` seconds, then unpaused;
- ``restart``: the engine's restart.

The time to recover runs from the injection until the container is running again and its health check
reports it healthy (``State.Health.Status``; the compose health checks run every 5 s, so this is late by
up to 5 s), or, for a pause, until it is unpaused. The pool is read at the decision container's network
address (the host reaches it with a rootful engine on Linux; elsewhere publish the port, pass ``--decision-url``)
with ``DECISION_SERVICE_API_KEY`` if the stack sets one. Writes ``benchmarks/results/container_faults.json`` and
prints a Markdown table. The compose stack must be up (``docker compose --profile sim up``):

    .venv/bin/python benchmarks/container_faults.py      # ~3-4 min with the defaults
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from fault_load import Fault, drive, read_pool, summarize

from edgecloud.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "container_faults.json"
PROJECT = "edgecloud"  # docker-compose.yml's `name:`
AIR_URL = "http://127.0.0.1:8080/v1"  # docker-compose.yml publishes the channel emulator on 8080
DECISION_SERVICE = "decision"  # docker-compose.yml's service name
CONTAINER_HTTP_PORT = 8000  # docker-compose.yml: every HTTP service listens on 8000 in its container
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"  # "True" on `docker compose run` containers, which are not the service
PODMAN_SOCKET = Path("/run/podman/podman.sock")  # rootful podman's API socket (podman.socket)
ACTIONS = ("kill", "stop", "pause", "restart")
FAULTS = ("kill:redis", "stop:decision", "pause:edge-llm-sim", "restart:cloud-llm-sim", "kill:edge-llm-sim")
RESTART_GRACE_S = 5.0  # a few seconds for the engine's own restart (restart: unless-stopped) before we start it
RECOVER_TIMEOUT_S = 180.0  # past it the run ends: the sim services are healthy again within about 30 s
POLL_S = 0.2
# Compose sets no GATEWAY_FIRST_TOKEN_TIMEOUT_S, so the gateway's default holds.
GATEWAY_FIRST_TOKEN_TIMEOUT_S = GatewaySettings.model_fields["first_token_timeout_s"].default


def parse_fault(spec: str) -> Fault:
    action, _, service = spec.partition(":")
    if action not in ACTIONS or not service:
        raise argparse.ArgumentTypeError(f"{spec!r}: want ACTION:SERVICE, ACTION one of {', '.join(ACTIONS)}")
    return Fault(spec, action, service)


def engine_base_url(explicit: str | None) -> str:
    """``explicit``; else DOCKER_HOST; else podman's socket if there is one; else Docker's default socket."""
    if explicit:
        return explicit
    if "DOCKER_HOST" in os.environ:
        return os.environ["DOCKER_HOST"]
    return f"unix://{PODMAN_SOCKET}" if PODMAN_SOCKET.exists() else docker.constants.DEFAULT_UNIX_SOCKET


def engine_client(base_url: str) -> docker.DockerClient:
    """A client of ``base_url``; DOCKER_HOST's through ``docker.from_env``, which reads its TLS settings too."""
    if base_url == os.environ.get("DOCKER_HOST"):
        return docker.from_env()
    return docker.DockerClient(base_url=base_url)


def find_container(client: Any, project: str, service: str) -> Any:
    """The one container of ``service`` in ``project``. The labels are checked here as well as in the engine's
    filter: a fault on another project's container is the one mistake this benchmark must never make."""
    labels = {PROJECT_LABEL: project, SERVICE_LABEL: service}
    listed = client.containers.list(all=True, filters={"label": [f"{key}={value}" for key, value in labels.items()]})
    mine = [
        container
        for container in listed
        if all(container.labels.get(key) == value for key, value in labels.items())
        and container.labels.get(ONEOFF_LABEL) != "True"
    ]
    if len(mine) != 1:
        names = [container.name for container in mine]
        raise LookupError(f"want one container of service {service!r} in project {project!r}, found {names}")
    return mine[0]


def network_url(container: Any) -> str:
    """``container``'s HTTP address on its compose network: the host reaches it where the engine's bridge is
    the host's (Linux, rootful); elsewhere publish the port and pass its URL instead."""
    for network in container.attrs["NetworkSettings"]["Networks"].values():
        if network.get("IPAddress"):
            return f"http://{network['IPAddress']}:{CONTAINER_HTTP_PORT}"
    raise LookupError(f"{container.name} has no address on a network")


def started_since(state: dict[str, Any], started_at: str) -> bool:
    """Running, and started after ``started_at`` (its start before the fault), so a stale state never counts."""
    return bool(state.get("Running")) and state.get("StartedAt") != started_at


def serving(state: dict[str, Any], started_at: str) -> bool:
    """Started again and, if it has a health check, reported healthy by it."""
    health = state.get("Health")
    return started_since(state, started_at) and (not health or health.get("Status") == "healthy")


@dataclass
class EngineActuator:
    """Faults through the engine's API on ``project``'s containers; the SDK blocks, so faults run in a thread
    while the load goes on. ``clock`` and ``sleep`` are the tests' seam."""

    client: Any  # docker.DockerClient, or a test's fake with the same calls
    project: str
    air_url: str
    decision_url: str | None  # None: the decision container's address, read again each time (a restart moves it)
    decision_key: str | None
    recover_timeout_s: float = RECOVER_TIMEOUT_S
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    restarted_by_benchmark: list[str] = field(default_factory=list)  # kills the engine did not restart

    async def pool_examples(self) -> list[dict[str, Any]]:
        url = self.decision_url or network_url(find_container(self.client, self.project, DECISION_SERVICE))
        return await read_pool(url, self.decision_key)

    async def inject(self, fault: Fault, hold_s: float) -> float:
        return await asyncio.to_thread(self.inject_blocking, fault, hold_s)

    def inject_blocking(self, fault: Fault, hold_s: float) -> float:
        container = find_container(self.client, self.project, fault.target)
        started_at = container.attrs["State"]["StartedAt"]
        injected = self.clock()
        if fault.action == "pause":
            container.pause()
            self.sleep(hold_s)
            container.unpause()
            return self.clock() - injected
        if fault.action == "kill":
            container.kill()
            if not self.wait(container, lambda state: started_since(state, started_at), RESTART_GRACE_S):
                container.start()
                self.restarted_by_benchmark.append(fault.name)
        elif fault.action == "stop":
            container.stop()
            container.start()
        else:  # restart
            container.restart()
        if not self.wait(container, lambda state: serving(state, started_at), self.recover_timeout_s):
            state = container.attrs["State"]
            raise TimeoutError(f"{fault.name}: not healthy {self.recover_timeout_s} s after the fault: {state}")
        return self.clock() - injected

    def wait(self, container: Any, ready: Callable[[dict[str, Any]], bool], timeout_s: float) -> bool:
        """Poll the container's state until ``ready``; False once ``timeout_s`` has passed."""
        deadline = self.clock() + timeout_s
        while True:
            container.reload()
            if ready(container.attrs["State"]):
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(POLL_S)


def table(result: dict[str, Any]) -> str:
    """The faults of ``result`` as BENCHMARKS.md's table, with the action and the service."""
    rows = [
        "| action | service | requests sent meanwhile | lost | broken mid-answer | TTFT added, median / worst (s) "
        "| time to recover (s) | paid the first-token timeout |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for measured in result["faults"].values():
        rows.append(
            f"| {measured['action']} | {measured['service']} | {measured['requests']} | {measured['lost']} "
            f"| {measured['broken_mid_answer']} | {measured['ttft_added_median_s']} / {measured['ttft_added_worst_s']} "
            f"| {measured['time_to_recover_s']} | {measured['paid_first_token_timeout']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=PROJECT, help="compose project name")
    parser.add_argument("--engine", help="engine API URL (default: DOCKER_HOST, else podman's socket, else Docker's)")
    parser.add_argument("--faults", nargs="+", type=parse_fault, default=[parse_fault(f) for f in FAULTS],
                        metavar="ACTION:SERVICE", help=f"in order (default: {' '.join(FAULTS)})")  # fmt: skip
    parser.add_argument("--air-url", default=AIR_URL, help="OpenAI base URL of the air interface")
    parser.add_argument("--decision-url", help="decision service URL (default: its container's network address)")
    parser.add_argument("--decision-key", default=os.environ.get("DECISION_SERVICE_API_KEY"),
                        help="its service key (default: DECISION_SERVICE_API_KEY; none if unset)")  # fmt: skip
    parser.add_argument("--first-token-timeout-s", type=float, default=GATEWAY_FIRST_TOKEN_TIMEOUT_S,
                        help="the stack's GATEWAY_FIRST_TOKEN_TIMEOUT_S, to count who paid it")  # fmt: skip
    parser.add_argument("--phase-s", type=float, default=15.0, help="baseline, pause and healing time per fault")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s, Poisson")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--recover-timeout-s", type=float, default=RECOVER_TIMEOUT_S)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    faults = tuple(args.faults)
    if len({fault.name for fault in faults}) < len(faults):
        parser.error("each fault once: its figures are keyed by ACTION:SERVICE")

    engine = engine_base_url(args.engine)
    client = engine_client(engine)
    for fault in faults:  # a missing service fails here, before the load
        find_container(client, args.project, fault.target)
    actuator = EngineActuator(client, args.project, args.air_url, args.decision_url, args.decision_key,
                              args.recover_timeout_s)  # fmt: skip
    measured = asyncio.run(drive(actuator, faults, args.phase_s, args.rate, args.seed))

    command = (f".venv/bin/python benchmarks/container_faults.py --project {args.project} --phase-s {args.phase_s} "
               f"--rate {args.rate} --faults {' '.join(fault.name for fault in faults)}")  # fmt: skip
    result = summarize(measured, command, args.first_token_timeout_s)
    result["faults"] = {
        fault.name: {"action": fault.action, "service": fault.target, **result["faults"][fault.name]}
        for fault in faults
    }
    result |= {"engine": engine, "restarted_by_benchmark": actuator.restarted_by_benchmark}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
