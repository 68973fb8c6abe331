"""``benchmarks/container_faults.py`` against a fake engine: which container a fault reaches, the SDK calls
each action makes and in what order, recovery waiting for the health check, and the figures of a run.

The fake behaves like the engine where it matters: a kill takes effect a poll later (the killed container
still reads running and healthy), a started container is ``starting`` for a few polls before ``healthy``,
and ``containers.list`` ignores its filters, so only the benchmark's own label check protects other projects.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import container_faults
from container_faults import POLL_S, RESTART_GRACE_S, EngineActuator, find_container, parse_fault
from fault_load import Outcome, summarize

PROJECT = "edgecloud"
HOLD_S = 15.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeContainer:
    """A container whose SDK calls land in the shared ``calls`` log as (container name, method, time)."""

    def __init__(self, clock: FakeTime, calls: list[tuple[str, str, float]], project: str, service: str,
                 engine_restarts: bool = False, polls_to_healthy: int = 3, **labels: str) -> None:  # fmt: skip
        self.name = f"{project}-{service}-1"
        self.labels = {container_faults.PROJECT_LABEL: project, container_faults.SERVICE_LABEL: service, **labels}
        self.clock, self.calls = clock, calls
        self.engine_restarts, self.polls_to_healthy = engine_restarts, polls_to_healthy
        self.starts = 0
        self.attrs: dict[str, Any] = {
            "State": {"Running": True, "StartedAt": "start-0", "Health": {"Status": "healthy"}}
        }
        self.kill_steps: list[str] = []  # what the engine does about a kill on the next polls
        self.polls_until_healthy = 0

    def log(self, method: str) -> None:
        self.calls.append((self.name, method, self.clock.now))

    def started(self) -> None:
        self.starts += 1
        self.attrs["State"] = {"Running": True, "StartedAt": f"start-{self.starts}", "Health": {"Status": "starting"}}
        self.polls_until_healthy = self.polls_to_healthy

    def reload(self) -> None:
        self.log("reload")
        state = self.attrs["State"]
        if self.kill_steps:
            step = self.kill_steps.pop(0)
            if step == "exited":  # the kill has taken effect; the stale health stays as the engine leaves it
                state["Running"] = False
                self.kill_steps = ["engine start"] if self.engine_restarts else []
            elif step == "engine start":
                self.started()
        elif self.polls_until_healthy:
            self.polls_until_healthy -= 1
            state["Health"]["Status"] = "starting" if self.polls_until_healthy else "healthy"

    def kill(self) -> None:
        self.log("kill")
        self.kill_steps = ["unchanged", "exited"]

    def stop(self) -> None:
        self.log("stop")
        self.attrs["State"]["Running"] = False

    def start(self) -> None:
        self.log("start")
        self.started()

    def restart(self) -> None:
        self.log("restart")
        self.started()

    def pause(self) -> None:
        self.log("pause")
        self.attrs["State"]["Paused"] = True

    def unpause(self) -> None:
        self.log("unpause")
        self.attrs["State"]["Paused"] = False


class FakeContainers:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = containers
        self.list_calls: list[dict[str, Any]] = []

    def list(self, **kwargs: Any) -> list[FakeContainer]:
        self.list_calls.append(kwargs)
        return list(self.containers)  # filters ignored: the worst engine


class FakeClient:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = FakeContainers(containers)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def calls() -> list[tuple[str, str, float]]:
    return []


def actuator(fake_time: FakeTime, *containers: FakeContainer) -> EngineActuator:
    return EngineActuator(FakeClient(list(containers)), PROJECT, "http://air/v1", "http://decision:8000", None,
                          recover_timeout_s=60.0, clock=fake_time.clock, sleep=fake_time.sleep)  # fmt: skip


def methods(calls: list[tuple[str, str, float]], name: str) -> list[str]:
    """The SDK calls on container ``name`` other than polls, in order."""
    return [method for container, method, _ in calls if container == name and method != "reload"]


def test_the_container_is_found_by_project_and_service_labels_and_no_other_is_touched(fake_time, calls):
    ours = FakeContainer(fake_time, calls, PROJECT, "redis")
    theirs = FakeContainer(fake_time, calls, "other", "redis")
    one_off = FakeContainer(fake_time, calls, PROJECT, "redis", **{container_faults.ONEOFF_LABEL: "True"})
    one_off.name = "edgecloud-redis-run-1"
    decision = FakeContainer(fake_time, calls, PROJECT, "decision")
    engine = actuator(fake_time, theirs, one_off, ours, decision)

    assert find_container(engine.client, PROJECT, "redis") is ours
    assert engine.client.containers.list_calls[-1] == {
        "all": True,
        "filters": {"label": ["com.docker.compose.project=edgecloud", "com.docker.compose.service=redis"]},
    }
    engine.inject_blocking(parse_fault("kill:redis"), HOLD_S)
    assert methods(calls, ours.name) == ["kill", "start"]
    assert {container for container, _, _ in calls} == {ours.name}  # not theirs, the one-off or decision

    with pytest.raises(LookupError, match="'gateway'"):
        find_container(engine.client, PROJECT, "gateway")
    with pytest.raises(LookupError, match="found"):
        find_container(FakeClient([ours, FakeContainer(fake_time, calls, PROJECT, "redis")]), PROJECT, "redis")


def test_a_kill_the_engine_does_not_restart_is_started_after_the_grace_and_waits_for_healthy(fake_time, calls):
    redis = FakeContainer(fake_time, calls, PROJECT, "redis", polls_to_healthy=4)
    engine = actuator(fake_time, redis)
    recovered = engine.inject_blocking(parse_fault("kill:redis"), HOLD_S)

    assert methods(calls, redis.name) == ["kill", "start"]
    started_at = next(at for _, method, at in calls if method == "start")
    assert started_at >= RESTART_GRACE_S  # the engine had its few seconds first
    # Not the stale "healthy" read right after the kill: four polls of the new start, the last one healthy.
    assert recovered == pytest.approx(started_at + 3 * POLL_S)
    assert redis.attrs["State"]["Health"]["Status"] == "healthy" and redis.starts == 1
    assert engine.restarted_by_benchmark == ["kill:redis"]


def test_a_kill_the_engine_restarts_is_only_waited_for(fake_time, calls):
    edge = FakeContainer(fake_time, calls, PROJECT, "edge-llm-sim", engine_restarts=True, polls_to_healthy=2)
    engine = actuator(fake_time, edge)
    recovered = asyncio.run(engine.inject(parse_fault("kill:edge-llm-sim"), HOLD_S))

    assert methods(calls, edge.name) == ["kill"]
    assert edge.starts == 1 and engine.restarted_by_benchmark == []
    assert recovered < RESTART_GRACE_S


def test_stop_then_start_and_restart_wait_for_the_health_check(fake_time, calls):
    decision = FakeContainer(fake_time, calls, PROJECT, "decision", polls_to_healthy=5)
    cloud = FakeContainer(fake_time, calls, PROJECT, "cloud-llm-sim", polls_to_healthy=5)
    engine = actuator(fake_time, decision, cloud)

    assert engine.inject_blocking(parse_fault("stop:decision"), HOLD_S) == pytest.approx(4 * POLL_S)
    assert methods(calls, decision.name) == ["stop", "start"]
    assert engine.inject_blocking(parse_fault("restart:cloud-llm-sim"), HOLD_S) == pytest.approx(4 * POLL_S)
    assert methods(calls, cloud.name) == ["restart"]
    assert engine.restarted_by_benchmark == []


def test_a_pause_is_unpaused_after_the_phase(fake_time, calls):
    edge = FakeContainer(fake_time, calls, PROJECT, "edge-llm-sim")
    engine = actuator(fake_time, edge)
    recovered = engine.inject_blocking(parse_fault("pause:edge-llm-sim"), HOLD_S)

    assert [(method, at) for _, method, at in calls] == [("pause", 0.0), ("unpause", HOLD_S)]
    assert recovered == HOLD_S and edge.attrs["State"]["Paused"] is False


def test_a_container_that_never_gets_healthy_ends_the_fault_at_the_timeout(fake_time, calls):
    stuck = FakeContainer(fake_time, calls, PROJECT, "decision", polls_to_healthy=10**6)
    engine = actuator(fake_time, stuck)
    with pytest.raises(TimeoutError, match=r"stop:decision.*starting"):
        engine.inject_blocking(parse_fault("stop:decision"), HOLD_S)
    assert fake_time.now == pytest.approx(engine.recover_timeout_s, abs=POLL_S)


def test_fault_specs_and_the_engine_address(monkeypatch, tmp_path):
    assert parse_fault("pause:edge-llm-sim") == container_faults.Fault("pause:edge-llm-sim", "pause", "edge-llm-sim")
    for bad in ("freeze:redis", "kill", "kill:"):
        with pytest.raises(Exception, match="ACTION:SERVICE"):
            parse_fault(bad)

    socket = tmp_path / "podman.sock"
    monkeypatch.setattr(container_faults, "PODMAN_SOCKET", socket)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert container_faults.engine_base_url(None) == "http+unix:///var/run/docker.sock"
    socket.touch()
    assert container_faults.engine_base_url(None) == f"unix://{socket}"
    monkeypatch.setenv("DOCKER_HOST", "tcp://engine:2375")
    assert container_faults.engine_base_url(None) == "tcp://engine:2375"
    assert container_faults.engine_base_url("unix:///elsewhere.sock") == "unix:///elsewhere.sock"


def test_the_summary_counts_lost_broken_and_pool_entries_lost_and_the_table_shows_them():
    def ok(sent_at: float, ttft_s: float, retried_from: str | None = None) -> Outcome:
        return Outcome(sent_at, "chat", "ok", ttft_s, retried_from)

    outcomes = [ok(1.0, 0.2), ok(2.0, 0.3), ok(3.0, 0.4)]  # the baseline: median 0.3 s
    outcomes += [Outcome(9.0, "coding", "broken", 0.3), Outcome(10.5, "chat", "lost")]  # around the kill at 10 s
    outcomes += [ok(11.0, 0.5), ok(12.0, 30.3, retried_from="edge")]  # paid a 30 s first-token timeout
    outcomes += [ok(30.0, 0.3)]  # after the kill had healed
    examples = [{"service_type": "chat", "token_bin": 1}, {"service_type": "coding", "token_bin": 2}]
    run = {"outcomes": outcomes, "windows": {"kill:redis": {"start_s": 10.0, "recovered_s": 4.0}},
           "pool_before": examples, "pool_after": examples[:1]}  # fmt: skip

    result = summarize(run, "command", first_token_timeout_s=30.0)
    assert (result["requests"], result["lost"], result["broken_mid_answer"]) == (8, 1, 1)
    assert result["baseline_ttft_median_s"] == 0.3
    measured = result["faults"]["kill:redis"]
    assert measured["requests"] == 3 and measured["lost"] == 1
    assert measured["broken_mid_answer"] == 1  # cut in the 5 s before the kill
    assert measured["ttft_added_median_s"] == pytest.approx(15.1) and measured["ttft_added_worst_s"] == 30.0
    assert measured["paid_first_token_timeout"] == 1 and measured["time_to_recover_s"] == 4.0
    assert (result["pool_examples_before"], result["pool_examples_after"], result["pool_examples_lost"]) == (2, 1, 1)
    assert result["lost_requests"] == [{"sent_at": 10.5, "service_type": "chat", "result": "lost", "ttft_s": None,
                                        "retried_from": None, "detail": None, "route": None}]  # fmt: skip

    result["faults"]["kill:redis"] |= {"action": "kill", "service": "redis"}
    assert container_faults.table(result).splitlines()[-1] == "| kill | redis | 3 | 1 | 1 | 15.1 / 30.0 | 4.0 | 1 |"


def test_the_pool_is_read_at_the_decision_containers_address_of_the_moment(fake_time, calls, monkeypatch):
    decision = FakeContainer(fake_time, calls, PROJECT, container_faults.DECISION_SERVICE)
    read: list[str] = []

    async def read_pool(url: str, key: str | None) -> list[dict[str, Any]]:
        read.append(url)
        return []

    monkeypatch.setattr(container_faults, "read_pool", read_pool)
    engine = EngineActuator(FakeClient([decision]), PROJECT, "http://air/v1", None, None)
    for address in ("10.89.0.20", "10.89.0.31"):  # a stop and start gives the container a new address
        decision.attrs["NetworkSettings"] = {"Networks": {"edgecloud_default": {"IPAddress": address}}}
        asyncio.run(engine.pool_examples())
    assert read == ["http://10.89.0.20:8000", "http://10.89.0.31:8000"]
