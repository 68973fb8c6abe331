"""Hostile clients against the whole loop with keys as in production (docs/security.md): issue 12's findings.

Every test here failed on the main branch before the hardening: it reproduces what a client could do
then, through real processes (simulators, decision service with Redis, gateway, air interface).
"""

from __future__ import annotations

import asyncio
import select
import socket
import time

import httpx
import openai
import pytest

from conftest import LiveKeys, radio_user, running_live_stack

KEYS = LiveKeys()
USERS_PER_KEY = 5
CODING = {"role": "user", "content": "Write a Python function that reverses a linked list."}


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory, live_redis):
    log_dir = tmp_path_factory.mktemp("keyed-stack")
    with running_live_stack(log_dir, live_redis.url, keys=KEYS, max_ues_per_key=str(USERS_PER_KEY)) as stack:
        yield stack


def pool(stack, cell: str) -> dict:
    response = httpx.get(
        f"{stack.decision_url}/v1/pool", params={"cell": cell, "policy": "icl"}, headers=KEYS.bearer(KEYS.decision)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_clients_own_choices_never_reach_the_shared_pool(keyed_stack):
    """Before: one pinned, requirement-0 coding request wrote a Good (coding, edge) example for everyone."""
    users = openai.OpenAI(base_url=f"{keyed_stack.air_url}/v1", api_key=KEYS.client, max_retries=0, timeout=30)
    shared_before, apart_before = pool(keyed_stack, "cell-0"), pool(keyed_stack, "cell-0.client-choices")
    raw = users.chat.completions.with_raw_response.create(
        model="edgecloud-auto", messages=[CODING], max_tokens=8,
        extra_headers={"x-route": "edge", "x-service-type": "coding", "x-quality-requirement": "0"},
    )  # fmt: skip
    assert raw.headers["x-route"] == "edge" and raw.headers["x-quality-met"] == "true"  # the client got its choice
    deadline = time.monotonic() + 15
    while pool(keyed_stack, "cell-0.client-choices")["version"] == apart_before["version"]:
        assert time.monotonic() < deadline, "the experience never arrived"
        time.sleep(0.2)
    apart = pool(keyed_stack, "cell-0.client-choices")["examples"]
    assert ("coding", "local") in [(e["service_type"], e["decision"]) for e in apart]  # measured, kept apart
    assert pool(keyed_stack, "cell-0") == shared_before  # the shared pool did not move


def test_experiences_pool_views_and_air_reports_need_the_services_own_keys(keyed_stack):
    experience = {
        "service_type": "math", "estimated_tokens": 700, "decision": "local",
        "transmission_s": 0.1, "generation_s": 1.0, "quality_met": True,
    }  # fmt: skip
    client_key, wrong = KEYS.bearer(KEYS.client), KEYS.bearer("guess")
    for headers in ({}, client_key, wrong):
        posted = httpx.post(f"{keyed_stack.decision_url}/v1/experiences", json=experience, headers=headers)
        assert posted.status_code == 401, posted.text
        assert httpx.get(f"{keyed_stack.decision_url}/v1/pool", headers=headers).status_code == 401
        decided = httpx.post(f"{keyed_stack.decision_url}/v1/decisions", json=experience, headers=headers)
        assert decided.status_code == 401
        report = {"request_id": "someone-elses", "transmission_s": 99.0}
        assert httpx.post(f"{keyed_stack.gateway_url}/v1/air-reports", json=report, headers=headers).status_code == 401
    # The operator's key empties a pool; the gateway's service key cannot.
    service = KEYS.bearer(KEYS.decision)
    assert httpx.delete(f"{keyed_stack.decision_url}/v1/pool", headers=service).status_code == 401
    bare = {"authorization": KEYS.decision_admin}  # before: a key without its scheme was taken
    assert (
        httpx.delete(f"{keyed_stack.decision_url}/v1/pool", params={"cell": "scratch"}, headers=bare).status_code == 401
    )
    admin = {"authorization": f"bearer {KEYS.decision_admin}"}  # before: refused; the scheme is case-insensitive
    assert httpx.delete(f"{keyed_stack.decision_url}/v1/pool", params={"cell": "scratch"}, headers=admin).is_success
    assert httpx.get(f"{keyed_stack.decision_url}/health").status_code == 200  # liveness stays public


def test_nobody_but_the_operator_moves_a_user(keyed_stack):
    """Before: ``PUT /v1/ues/victim {"x_m": 1e300}`` needed no key and stalled the victim's next stream."""
    target = f"{keyed_stack.air_url}/v1/ues/victim-1"
    for headers in ({}, KEYS.bearer(KEYS.client)):
        assert httpx.put(target, json={"x_m": 1e300, "y_m": 0.0}, headers=headers).status_code == 401
    assert httpx.put(target, json={"x_m": 10.0, "y_m": 0.0}, headers=KEYS.bearer(KEYS.radio_admin)).is_success


def post_chunked(url: str, path: str, total_bytes: int, headers: dict[str, str]) -> tuple[bytes, int]:
    """POST a chunked body of ``total_bytes`` on a raw socket; stop sending once the server answers.

    Returns the answer's first bytes and how many body bytes were sent (httpx would write the whole
    body before reading an answer, so it could not show that the server stopped reading early).
    """
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
             "Content-Type: application/json", *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    chunk = b"[" + b"1," * (64 * 1024) + b"1]"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while sent < total_bytes:
            if select.select([connection], [], [], 0)[0]:
                break  # the answer came: the server stopped reading
            try:
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
        else:
            connection.sendall(b"0\r\n\r\n")
        return connection.recv(65536), sent


def test_a_chunked_body_is_cut_at_the_limit(keyed_stack):
    """Before: 50 MB chunked was read whole, classified and forwarded (400 after 54 s, RSS +200 MB)."""
    started = time.perf_counter()
    answer, sent = post_chunked(
        keyed_stack.gateway_url, "/v1/chat/completions", 50 * 1024 * 1024, KEYS.bearer(KEYS.client)
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than 4194304 bytes" in answer
    assert sent < 12 * 1024 * 1024  # the limit plus what the sockets' buffers hold
    assert time.perf_counter() - started < 10
    # The decision service (bodies under 1 KB) has a limit of its own now: 64 KiB.
    answer, _ = post_chunked(keyed_stack.decision_url, "/v1/experiences", 1024 * 1024, KEYS.bearer(KEYS.decision))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{keyed_stack.gateway_url}/health").status_code == 200


def test_malformed_input_over_the_air_is_a_4xx_never_a_500(keyed_stack):
    """Before: deep JSON and a 10 KB x-request-id made the air interface answer 500; text/plain was taken."""
    url = f"{keyed_stack.air_url}/v1/chat/completions"
    client = KEYS.bearer(KEYS.client)
    nested = b'{"model": "edgecloud-auto", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep = httpx.post(url, content=nested, headers={**client, "content-type": "application/json"}, timeout=30)
    assert deep.status_code == 400, deep.text
    assert deep.json()["error"]["type"] == "invalid_request_error"
    body = {"model": "edgecloud-auto", "messages": [CODING], "max_tokens": 4}
    long_id = httpx.post(url, json=body, headers={**client, "x-request-id": "a" * 10_000}, timeout=30)
    assert long_id.status_code == 400 and long_id.json()["error"]["param"] == "x-request-id"
    assert len(long_id.headers.get("x-request-id", "")) <= 128
    plain = httpx.post(url, content=b"{}", headers={**client, "content-type": "text/plain"}, timeout=30)
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]["message"]
    as_string = httpx.post(url, json={**body, "max_tokens": "8"}, headers=client, timeout=30)
    assert as_string.status_code == 400 and as_string.json()["error"]["param"] == "max_tokens"


async def test_a_client_speaks_only_for_its_own_users_and_cannot_fill_the_cell(keyed_stack):
    """Before: ``x-user-id: alice`` from anyone queued bytes for alice, and 20 fake users filled a cell."""
    url = f"{keyed_stack.air_url}/v1/chat/completions"
    body = {"model": "edgecloud-auto", "messages": [CODING], "max_tokens": 120, "stream": True}
    honest, hostile = KEYS.bearer(KEYS.client), KEYS.bearer(KEYS.other_client)

    async def stream(http: httpx.AsyncClient, headers: dict[str, str], user: str) -> tuple[int, str | None]:
        async with http.stream("POST", url, json=body, headers={**headers, "x-user-id": user}) as response:
            await response.aread()
            return response.status_code, response.headers.get("x-channel-user")

    async with httpx.AsyncClient(timeout=60) as http:
        flood = [stream(http, hostile, f"fake-{index}") for index in range(USERS_PER_KEY + 3)]
        alice_too = stream(http, hostile, "alice")
        results = await asyncio.gather(stream(http, honest, "alice"), alice_too, *flood)
    (alice_status, alice), (posing_status, posing), *fakes = results
    assert alice_status == 200 and alice == radio_user("alice", key=KEYS.client)
    assert posing_status in (200, 429) and posing != alice  # the other key's "alice" is another user
    served = [user for status, user in [(posing_status, posing), *fakes] if status == 200]
    assert len(served) <= USERS_PER_KEY and {status for status, _ in fakes} <= {200, 429}
    assert sum(status == 429 for status, _ in [(posing_status, posing), *fakes]) >= 4
    ues = httpx.get(f"{keyed_stack.air_url}/v1/ues").json()["data"]
    hostile_id = radio_user("", key=KEYS.other_client).removeprefix("@")
    assert sum(ue["user_id"].endswith(hostile_id) for ue in ues) <= USERS_PER_KEY


def decision_counts(metrics_url: str) -> list[str]:
    return [
        line
        for line in httpx.get(metrics_url).text.splitlines()
        if line.startswith("edgecloud_decision_decisions_total{")
    ]


def test_an_output_limit_no_backend_can_hold_is_refused_before_the_decision(keyed_stack):
    """Before: the decision service was asked first (0.5-2 s) and only then came the 400."""
    decisions = f"{keyed_stack.decision_url}/metrics"
    asked = decision_counts(decisions)
    started = time.perf_counter()
    refused = httpx.post(
        f"{keyed_stack.gateway_url}/v1/chat/completions",
        json={"model": "edgecloud-auto", "messages": [CODING], "max_tokens": 10**6},
        headers=KEYS.bearer(KEYS.client),
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    assert time.perf_counter() - started < 0.5
    assert decision_counts(decisions) == asked  # no decision was made for it
