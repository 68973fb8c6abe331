"""Session fixtures that start real services once: simulators and a gateway, and the local testbed with real vLLM."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgecloud.testbed.processes import free_port, tcp_open
from redis_server import RedisServer
from servers import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_MARKER = "containers"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that build images and run containers run only when ``-m`` names their marker: any other
    selection (``scripts/test``, ``-m "not vllm"``) skips them, saying how to run them."""
    if CONTAINERS_MARKER in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"builds and runs containers: pytest -m {CONTAINERS_MARKER} (docs/deployment.md)")
    for item in items:
        if CONTAINERS_MARKER in item.keywords:
            item.add_marker(skip)


VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
MODEL_DIR = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
READY_LINE = "ready; press Ctrl-C to stop"
# vLLM's first start on 2 cores compiles for about 2 minutes; leave room for a loaded CI machine.
TESTBED_START_TIMEOUT_S = 900.0


@dataclass
class RunningTestbed:
    process: subprocess.Popen[str]
    air_url: str
    gateway_url: str
    edge_url: str
    cloud_url: str
    decision_url: str
    redis_url: str
    state_dir: Path
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def key(self, name: str) -> dict[str, str]:
        """The ``Authorization`` header with this run's key ``name`` (a variable of ``keys.env``)."""
        lines = (self.state_dir / "keys.env").read_text().splitlines()
        keys = dict(line.split("=", 1) for line in lines if "=" in line)
        return {"authorization": f"Bearer {keys[name]}"}


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait in the event loop until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


def start_testbed(
    tmp_path: Path, *flags: str, env: dict[str, str] | None = None, background: bool = False
) -> RunningTestbed:
    """``python -m edgecloud.testbed`` on free ports (``env`` adds settings); a thread collects its output.

    ``background``: started as a shell starts a background job, with SIGINT ignored.
    """
    ports = {name: free_port() for name in ("air", "gateway", "edge", "cloud", "decision", "redis")}
    env = {
        **os.environ,
        **(env or {}),
        "TESTBED_AIR_PORT": str(ports["air"]),
        "TESTBED_GATEWAY_PORT": str(ports["gateway"]),
        "TESTBED_EDGE_PORT": str(ports["edge"]),
        "TESTBED_CLOUD_PORT": str(ports["cloud"]),
        "TESTBED_DECISION_PORT": str(ports["decision"]),
        "TESTBED_REDIS_PORT": str(ports["redis"]),
        "TESTBED_STATE_DIR": str(tmp_path),
        "TESTBED_VLLM_PYTHON": str(VLLM_PYTHON),
        "TESTBED_MODEL_DIR": str(MODEL_DIR),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecloud.testbed", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None,
    )
    testbed = RunningTestbed(
        process,
        air_url=f"http://127.0.0.1:{ports['air']}/v1",
        gateway_url=f"http://127.0.0.1:{ports['gateway']}/v1",
        edge_url=f"http://127.0.0.1:{ports['edge']}/v1",
        cloud_url=f"http://127.0.0.1:{ports['cloud']}/v1",
        decision_url=f"http://127.0.0.1:{ports['decision']}",
        redis_url=f"redis://127.0.0.1:{ports['redis']}/0",
        state_dir=tmp_path,
    )
    assert process.stdout is not None
    threading.Thread(target=lambda: testbed.output.extend(iter(process.stdout.readline, "")), daemon=True).start()
    return testbed


def wait_for_output(testbed: RunningTestbed, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in testbed.text():
        if testbed.process.poll() is not None:
            time.sleep(0.5)
            pytest.fail(f"testbed exited with {testbed.process.returncode}:\n{testbed.text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"testbed not ready after {timeout_s:.0f} s:\n{testbed.text()}")
        time.sleep(0.5)


@contextlib.contextmanager
def running_testbed(
    tmp_path: Path, *flags: str, env: dict[str, str] | None = None, timeout_s: float = TESTBED_START_TIMEOUT_S
) -> Iterator[RunningTestbed]:
    """A testbed up until its ready line, then Ctrl-C when the block ends."""
    testbed = start_testbed(tmp_path, *flags, env=env)
    try:
        wait_for_output(testbed, READY_LINE, timeout_s)
        yield testbed
    finally:
        testbed.process.send_signal(signal.SIGINT)
        testbed.process.wait(timeout=60)


@pytest.fixture(scope="session")
def vllm_testbed(tmp_path_factory: pytest.TempPathFactory):
    """The README's first command with real vLLM at the edge, up for the whole session, then Ctrl-C."""
    if not VLLM_PYTHON.exists() or not (MODEL_DIR / ".prepared").exists():
        pytest.fail("vLLM venv or model missing: run scripts/bootstrap (scripts/test does it for you)")
    with running_testbed(tmp_path_factory.mktemp("testbed")) as testbed:
        yield testbed
    assert testbed.process.returncode == 0, testbed.text()
    assert "[testbed] stopped" in testbed.text()
    for url in (testbed.air_url, testbed.gateway_url, testbed.edge_url, testbed.cloud_url):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert not tcp_open(port)(), f"something still listens on {port} after Ctrl-C"


def start_service(service: str, log_dir: Path, **settings: str) -> ServerProcess:
    """``python -m edgecloud.<service>`` on a free port, ``settings`` as its ``<SERVICE>_*`` variables, healthy."""
    prefix = f"{service.upper()}_"
    env = {f"{prefix}PORT": "{port}", **{f"{prefix}{key.upper()}": value for key, value in settings.items()}}
    server = ServerProcess(f"edgecloud.{service}", env=env, log_path=log_dir / f"{service}-{free_port()}.log")
    return server.start().wait_ready()


def start_simulator(log_dir: Path, profile: str, **settings: str) -> tuple[ServerProcess, str]:
    """A simulator serving ``profile`` (under its name unless ``model`` says otherwise) and its OpenAI base URL."""
    server = start_service("llmsim", log_dir, **{"profile": profile, "model": profile, **settings})
    return server, f"{server.base_url}/v1"


def start_gateway(log_dir: Path, **settings: str) -> tuple[ServerProcess, str]:
    """A gateway with ``settings`` as GATEWAY_* variables; returns it and its base URL (without /v1).

    Without a decision service or Redis unless ``settings`` name them: ``edgecloud-auto`` then takes
    the default route, output lengths are kept in memory, and no decision is remembered.
    """
    settings = {
        "decision_url": "",
        "decision_redis_url": "",
        "lengths_redis_url": "",
        "limits_redis_url": "",
        **settings,
    }
    server = start_service("gateway", log_dir, **settings)
    return server, server.base_url


@dataclass
class SimulatedStack:
    gateway_url: str
    edge_url: str
    cloud_url: str
    edge_model: str
    cloud_model: str


@pytest.fixture(scope="session")
def sim_stack(tmp_path_factory: pytest.TempPathFactory):
    """Gateway in front of two simulators with the paper's edge (Llama-3-8B) and cloud (GPT-4o) profiles."""
    logs = tmp_path_factory.mktemp("sim-stack")
    edge, edge_url = start_simulator(logs, "llama-3-8b-edge")
    cloud, cloud_url = start_simulator(logs, "gpt-4o-cloud")
    gateway, gateway_url = start_gateway(
        logs,
        edge_url=edge_url,
        edge_model="llama-3-8b-edge",
        edge_max_model_len="8192",
        cloud_url=cloud_url,
        cloud_model="gpt-4o-cloud",
    )
    try:
        yield SimulatedStack(gateway_url, edge_url, cloud_url, "llama-3-8b-edge", "gpt-4o-cloud")
    finally:
        for process in (gateway, cloud, edge):
            process.stop()


@dataclass
class LiveStack:
    """The whole loop on simulators: Redis, decision service, gateway, channel emulator (constant C)."""

    air_url: str  # the users' base URL (without /v1)
    gateway_url: str
    decision_url: str
    edge_url: str
    cloud_url: str
    redis_url: str
    processes: dict[str, ServerProcess]


# The loop's constant channel: one 4-byte token per 5 ms (faster than both paper profiles generate).
LIVE_CAPACITY_BPS = 6400.0
LIVE_BACKHAUL_S = 0.2
EDGE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


def radio_user(name: str, key: str | None = None) -> str:
    """The air interface's id of the user ``name`` of a client that presents ``key`` (else of loopback)."""
    client = "ip:127.0.0.1" if key is None else f"key:{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return f"{name}@{client}"


@dataclass(frozen=True)
class LiveKeys:
    """Keys of a keyed live stack: clients', the gateway's at the decision service, the air interface's, operators'."""

    client: str = "client-key"
    other_client: str = "other-client-key"
    decision: str = "decision-service-key"
    air_report: str = "air-report-key"
    decision_admin: str = "decision-admin-key"
    radio_admin: str = "radio-admin-key"

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}


def start_live_stack(log_dir: Path, redis_url: str, keys: LiveKeys | None = None, **channel: str) -> LiveStack:
    """Simulators with the paper's profiles (Llama-3-8B edge, GPT-4o cloud) behind the full loop.

    With ``keys``, every service takes them as in production (docs/security.md); without, all is open.

    The decision service's LLM is the edge simulator, which cannot score prompts: its decisions come
    from its fallback (the pool's good example, else the rule). The real LLM decides in the vLLM tests.
    """
    # Jitter 0: the paper's constants exactly, so delivered timing can be checked against eqs. 1 and 3.
    started: list[ServerProcess] = []

    def start(server: tuple[ServerProcess, str] | ServerProcess) -> ServerProcess:
        process = server[0] if isinstance(server, tuple) else server
        started.append(process)
        return process

    try:
        edge = start(start_simulator(log_dir, "llama-3-8b-edge", model=EDGE_MODEL, jitter="0"))
        cloud = start(start_simulator(log_dir, "gpt-4o-cloud", model="gpt-4o", jitter="0"))
        edge_url, cloud_url = f"{edge.base_url}/v1", f"{cloud.base_url}/v1"
        decision_keys, gateway_keys, channel_keys = {}, {}, {}
        if keys is not None:
            decision_keys = {"service_api_key": keys.decision, "admin_api_key": keys.decision_admin}
            gateway_keys = {
                "api_keys": f'["{keys.client}", "{keys.other_client}"]',
                "decision_api_key": keys.decision,
                "air_report_api_key": keys.air_report,
            }
            channel_keys = {"gateway_api_key": keys.air_report, "admin_api_key": keys.radio_admin}
        decision = start(
            start_service(
                "decision", log_dir, redis_url=redis_url, llm_url=edge_url, llm_model=EDGE_MODEL, **decision_keys
            )
        )
        gateway = start(
            start_service(
                "gateway",
                log_dir,
                edge_url=edge_url,
                edge_model=EDGE_MODEL,
                edge_max_model_len="8192",
                cloud_url=cloud_url,
                cloud_model="gpt-4o",
                decision_url=decision.base_url,
                decision_redis_url=redis_url,
                lengths_redis_url=redis_url,
                air_report_timeout_s="10",
                **gateway_keys,
            )
        )
        settings = {
            "upstream_url": gateway.base_url,
            "channel_model": "constant",
            "constant_capacity_bps": str(LIVE_CAPACITY_BPS),
            "backhaul_delay_s": str(LIVE_BACKHAUL_S),
            **channel_keys,
            **channel,
        }
        air = start(start_service("channel", log_dir, **settings))
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return LiveStack(
        air_url=air.base_url,
        gateway_url=gateway.base_url,
        decision_url=decision.base_url,
        edge_url=edge_url,
        cloud_url=cloud_url,
        redis_url=redis_url,
        processes={"air": air, "gateway": gateway, "decision": decision, "cloud": cloud, "edge": edge},
    )


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis for the tests of one module."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_server(tmp_path: Path):
    """A real Redis of the test's own, for tests that stop or kill it."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def live_redis(tmp_path_factory: pytest.TempPathFactory):
    with RedisServer(tmp_path_factory.mktemp("live-redis")) as server:
        yield server


@contextlib.contextmanager
def running_live_stack(log_dir: Path, redis_url: str, **options: Any) -> Iterator[LiveStack]:
    """``start_live_stack`` (same arguments), stopped on leaving."""
    stack = start_live_stack(log_dir, redis_url, **options)
    try:
        yield stack
    finally:
        for process in stack.processes.values():
            process.stop()


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory, live_redis):
    with running_live_stack(tmp_path_factory.mktemp("live-stack"), live_redis.url) as stack:
        yield stack
