"""A backend that ends its body after [DONE], and a client that leaves at [DONE], through the real services.

uvicorn (vLLM's server) writes a stream's last chunk apart from [DONE], and a busy vLLM on two cores
writes it late; the official openai client closes its connection as soon as it reads [DONE]. The air
interface and the gateway both kept reading for the end of the body then, saw the client leave, and
counted a finished answer as abandoned: no air report, no experience. CI lost experiences that way
(tests/test_loop_vllm.py). Here the backend holds the body's end back for a second, so the client
always leaves first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from conftest import start_service
from test_loop_live import metric_sum

MODEL = "late-end"
END_OF_BODY_DELAY_S = 1.0
EVENTS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"late-end",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    *[
        b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"late-end",'
        b'"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
    ]
    * 4,
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"late-end","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}\n\n',
    b"data: [DONE]\n\n",
]


async def serve_late_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Any POST: a chunked SSE answer whose last chunk comes ``END_OF_BODY_DELAY_S`` after [DONE]; GET: no models."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if not head.startswith(b"POST"):
                body = b'{"object":"list","data":[]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS))
            await writer.drain()
            await asyncio.sleep(END_OF_BODY_DELAY_S)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def late_end_backend() -> Iterator[str]:
    """The backend on a loopback port, in a thread of its own; yields its OpenAI base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[asyncio.Server] = []

    async def start() -> None:
        server.append(await asyncio.start_server(serve_late_end, "127.0.0.1", 0))
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)

    async def stop() -> None:
        server[0].close()
        connections = asyncio.all_tasks() - {asyncio.current_task()}
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    try:
        yield f"http://127.0.0.1:{server[0].sockets[0].getsockname()[1]}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def late_end_stack(tmp_path_factory, live_redis):
    """Air interface -> gateway -> the late-ending backend (both sides), the decision service on real Redis."""
    logs = tmp_path_factory.mktemp("late-end")
    with late_end_backend() as backend_url:
        decision = start_service("decision", logs, redis_url=live_redis.url, llm_url=backend_url, llm_model=MODEL)
        gateway = start_service(
            "gateway",
            logs,
            edge_url=backend_url,
            edge_model=MODEL,
            cloud_url=backend_url,
            cloud_model=MODEL,
            cell="late-end",
            decision_url=decision.base_url,
            decision_redis_url=live_redis.url,
            lengths_redis_url=live_redis.url,
            air_report_timeout_s="30",
        )
        air = start_service("channel", logs, upstream_url=gateway.base_url, channel_model="constant")
        try:
            yield air.base_url, gateway.base_url
        finally:
            for process in (air, gateway, decision):
                process.stop()


def test_an_answer_the_client_left_at_done_is_served_reported_and_learned(late_end_stack):
    air_url, gateway_url = late_end_stack
    users = openai.OpenAI(base_url=f"{air_url}/v1", api_key="unused", max_retries=0, timeout=30)
    answers = 3
    for index in range(answers):
        stream = users.chat.completions.create(
            model="edgecloud-auto",
            messages=[{"role": "user", "content": "Say something."}],
            stream=True,
            user=f"leaves-at-done-{index}",
            extra_headers={"x-service-type": "chat"},
        )
        first = next(stream)
        started = time.monotonic()
        text = "".join(chunk.choices[0].delta.content or "" for chunk in [first, *stream] if chunk.choices)
        assert text == "tok " * 4
        assert time.monotonic() - started < END_OF_BODY_DELAY_S / 2  # it had [DONE] long before the body's end
    deadline = time.monotonic() + 15
    stored = 0.0
    while time.monotonic() < deadline:
        stored = metric_sum(f"{gateway_url}/metrics", "edgecloud_gateway_experiences_total", outcome="stored")
        if stored >= answers:
            break
        time.sleep(0.2)
    assert stored == answers  # each joined with its air report (which only a finished answer sends) and stored
    assert metric_sum(f"{air_url}/metrics", "edgecloud_channel_requests_total", outcome="success") == answers
    assert metric_sum(f"{air_url}/metrics", "edgecloud_channel_requests_total", outcome="client_disconnect") == 0
    assert metric_sum(f"{gateway_url}/metrics", "edgecloud_gateway_requests_total", outcome="success") == answers
    assert metric_sum(f"{gateway_url}/metrics", "edgecloud_gateway_requests_total", outcome="client_disconnect") == 0
