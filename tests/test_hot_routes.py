"""``core.hot_routes``: a hot route does what the FastAPI stack did for it (arrival stamp, body limit, JSON check,
OpenAI-shaped errors, the client-disconnect watch), in-process and over real HTTP under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi.exceptions import RequestValidationError

from edgecloud.core.errors import RateLimitError, install_error_handlers
from edgecloud.core.hot_routes import HotRequest, HotResponse, ServiceApp
from edgecloud.core.openapi import install_openapi
from edgecloud.core.protocol import ChatCompletionRequest
from edgecloud.testbed.processes import free_port

LIMIT = 1024
JSON = {"content-type": "application/json"}


class Recorder:
    """The hot route under test: what it was given, and how its stream ended."""

    def __init__(self) -> None:
        self.requests: list[HotRequest] = []
        self.stream_closed = asyncio.Event()
        self.events_sent = 0

    async def handle(self, request: HotRequest) -> HotResponse:
        self.requests.append(request)
        ask = request.body.decode()
        if ask == "rate-limited":
            raise RateLimitError("Slow down.", headers={"retry-after": "3"})
        if ask == "invalid":
            raise RequestValidationError([{"type": "missing", "loc": ("body", "messages"), "msg": "Field required"}])
        if ask == "crash":
            raise RuntimeError("secret-token-in-a-traceback")
        if ask == "stream-forever":
            return HotResponse({"x-kind": "stream"}, stream=self._forever())
        return HotResponse({"x-kind": "whole"}, body=b'{"ok":true}')

    async def _forever(self) -> AsyncGenerator[bytes, None]:
        try:
            while True:
                self.events_sent += 1
                yield b"data: {}\n\n"
                await asyncio.sleep(0.01)
        finally:
            self.stream_closed.set()


def make_app(recorder: Recorder) -> ServiceApp:
    app = ServiceApp(max_body_bytes=LIMIT, title="test")
    install_error_handlers(app)
    app.hot_routes["/v1/chat/completions"] = recorder.handle

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"through": "fastapi"}

    install_openapi(app, {"/v1/chat/completions": ChatCompletionRequest})
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, httpx.AsyncClient]]:
    recorder = Recorder()
    transport = httpx.ASGITransport(app=make_app(recorder))
    async with httpx.AsyncClient(transport=transport, base_url="http://hot") as client:
        yield recorder, client


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type and error["message"]
    return error


async def test_the_route_gets_headers_body_and_arrival_and_answers_json(served) -> None:
    recorder, client = served
    before = time.perf_counter()
    answer = await client.post("/v1/chat/completions", content=b"hello", headers={**JSON, "X-Route": "edge"})
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert answer.headers["x-kind"] == "whole" and answer.headers["content-length"] == str(len(b'{"ok":true}'))
    (request,) = recorder.requests
    assert request.body == b"hello" and request.headers["x-route"] == "edge"
    assert before <= request.arrived <= time.perf_counter()
    assert (await client.get("/other")).json() == {"through": "fastapi"}


@pytest.mark.parametrize(
    ("ask", "status", "error_type"),
    [
        ("rate-limited", 429, "rate_limit_error"),
        ("invalid", 400, "invalid_request_error"),
        ("crash", 500, "internal_error"),
    ],
)
async def test_errors_are_openai_shaped(served, caplog, ask, status, error_type) -> None:
    _, client = served
    with caplog.at_level(logging.ERROR):
        answer = await client.post("/v1/chat/completions", content=ask.encode(), headers=JSON)
    error = assert_openai_error(answer, status, error_type)
    if ask == "rate-limited":
        assert answer.headers["retry-after"] == "3"
    if ask == "invalid":
        assert error["param"] == "messages"
    if ask == "crash":
        assert "secret" not in answer.text  # logged for the operator, never told to the client
        assert any("secret-token" in (record.exc_text or "") for record in caplog.records)


async def test_bodies_over_the_limit_and_not_json_are_refused_before_the_route(served) -> None:
    recorder, client = served
    too_long = b"a" * (LIMIT + 1)
    assert_openai_error(
        await client.post("/v1/chat/completions", content=too_long, headers=JSON), 413, "invalid_request_error"
    )

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"a" * 256

    assert_openai_error(
        await client.post("/v1/chat/completions", content=chunked(), headers=JSON), 413, "invalid_request_error"
    )
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert_openai_error(
        await client.post("/v1/chat/completions", content=b"a=1", headers=form), 415, "invalid_request_error"
    )
    assert recorder.requests == []


async def test_another_method_on_a_hot_path_is_a_405(served) -> None:
    _, client = served
    answer = await client.get("/v1/chat/completions")
    assert_openai_error(answer, 405, "invalid_request_error")
    assert answer.headers["allow"] == "POST"


def test_the_openapi_document_has_the_hot_route() -> None:
    document = make_app(Recorder()).openapi()
    operation = document["paths"]["/v1/chat/completions"]["post"]
    assert operation["summary"] == "Chat Completions"
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }


async def test_over_http_a_client_that_leaves_mid_stream_closes_the_stream() -> None:
    """Under uvicorn: streamed events flow; the client hanging up closes the route's generator at once."""
    recorder = Recorder()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(recorder), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
            client.stream("POST", "/v1/chat/completions", content=b"stream-forever", headers=JSON) as answer,
        ):
            assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert answer.headers["x-kind"] == "stream"
            async for line in answer.aiter_lines():
                if line.startswith("data:"):
                    break
        await asyncio.wait_for(recorder.stream_closed.wait(), 5)
        sent = recorder.events_sent
        await asyncio.sleep(0.1)
        assert recorder.events_sent == sent  # nothing generated after the close
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
