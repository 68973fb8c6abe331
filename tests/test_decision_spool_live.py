"""A decision service stopped while Redis is down keeps what it had not stored, and one left running pushes it
when Redis is back without waiting for a request: real processes, real Redis.

The service runs as a process (``python -m edgecloud.decision``) with an unreachable decision LLM (its decisions
fall back; experiences do not need it); it is stopped as an operator stops it (SIGTERM), and the next one started
on the same spool file sends the experiences to Redis once Redis is back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from edgecloud.core.wire import DEFAULT_CELL, DEFAULT_POLICY, pool_version_key
from edgecloud.testbed.processes import free_port
from redis_server import RedisServer
from servers import ServerProcess
from test_decision_live import start_decision_service

EXPERIENCE = {
    "service_type": "coding", "estimated_tokens": 300, "decision": "local",
    "transmission_s": 0.05, "quality_met": True,
}  # fmt: skip
FLUSH_DEADLINE_S = 15.0


def decision_service(log_dir: Path, redis_url: str, spool: Path) -> ServerProcess:
    dead_llm = f"http://127.0.0.1:{free_port()}/v1"
    return start_decision_service(
        log_dir, redis_url, dead_llm, experience_spool=str(spool), redis_retry_interval_s="0.2"
    )


def test_experiences_waiting_for_redis_survive_a_restart_of_the_service(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    sent = [{**EXPERIENCE, "generation_s": 1.0 + k, "experience_id": f"spooled-{k}"} for k in range(3)]
    with RedisServer(tmp_path / "redis") as redis_server:
        first = decision_service(tmp_path / "first", redis_server.url, spool)
        try:
            assert httpx.get(f"{first.base_url}/v1/pool").json()["version"] == 0
            redis_server.stop()
            for body in sent:
                answer = httpx.post(f"{first.base_url}/v1/experiences", json=body)
                assert answer.status_code == 200 and answer.json()["buffered"], answer.text
        finally:
            first.stop()  # SIGTERM, as an operator or an orchestrator stops it; Redis is still down
        kept = [json.loads(line) for line in spool.read_text().splitlines()]
        spooled_ids = [json.loads(record["experience"])["experience_id"] for record in kept]
        assert spooled_ids == [body["experience_id"] for body in sent]
        redis_server.start()
        second = decision_service(tmp_path / "second", redis_server.url, spool)
        try:
            # Said in the service's log: logging is set up before the app (and its pool) is built.
            assert "read 3 experiences spooled by the last run" in second.log_path.read_text()
            deadline = time.monotonic() + FLUSH_DEADLINE_S
            while (pool := httpx.get(f"{second.base_url}/v1/pool").json())["version"] == 0:
                if time.monotonic() > deadline:
                    pytest.fail(f"the spooled experiences never reached Redis: {pool}")
                time.sleep(0.2)
            while spool.exists():  # read back at the start and kept until Redis took them; then it goes
                if time.monotonic() > deadline:
                    pytest.fail("the spool file outlived the flush")
                time.sleep(0.2)
            # The best of the three (1.0 s) is the coding example, as if Redis had never been down.
            [example] = [e for e in pool["examples"] if e["service_type"] == "coding"]
            assert example["generation_s"] == 1.0
            again = httpx.post(f"{second.base_url}/v1/experiences", json=sent[0]).json()
            assert again["duplicate"]  # each was recorded once: Redis knows its id
        finally:
            second.stop()
    assert not spool.exists()


def test_a_quiet_service_pushes_what_waited_once_redis_is_back(tmp_path: Path) -> None:
    """After the outage nobody calls the service: Redis itself must show the experience arrive."""
    with RedisServer(tmp_path / "redis") as redis_server:
        service = decision_service(tmp_path / "service", redis_server.url, tmp_path / "spool.jsonl")
        try:
            assert httpx.get(f"{service.base_url}/v1/pool").json()["version"] == 0
            redis_server.stop()
            answer = httpx.post(f"{service.base_url}/v1/experiences", json={**EXPERIENCE, "generation_s": 1.0})
            assert answer.status_code == 200 and answer.json()["buffered"], answer.text
            redis_server.start()
            store = redis.Redis.from_url(redis_server.url)
            version_key = pool_version_key(DEFAULT_CELL, DEFAULT_POLICY)
            deadline = time.monotonic() + FLUSH_DEADLINE_S
            while int(store.get(version_key) or 0) == 0:
                if time.monotonic() > deadline:
                    pytest.fail("the experience that waited never reached Redis without a request")
                time.sleep(0.2)
            store.close()
        finally:
            service.stop()
