"""Every exit of an attempt on a backend ends it once: the in-flight gauge back at 0, one outcome recorded.

The gateway library runs in-process against backends on raw sockets, so each way a backend can fail
(an error status, a refused connection, silence, a cut body or stream) is staged byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgecloud.core.errors import RelayedError, UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from edgecloud.core.headers import QUALITY_MET_HEADER, RETRIED_FROM_HEADER
from edgecloud.core.protocol import ChatCompletionRequest
from edgecloud.core.vocabulary import ServiceType
from edgecloud.gateway.clients import ClientKey
from edgecloud.gateway.experiences import ServedRequest
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.relay import END_OF_BODY_WAIT_S, Outcome
from edgecloud.gateway.service import Endpoint, GatewayService, RequestHints
from edgecloud.gateway.settings import GatewaySettings
from edgecloud.testbed.processes import free_port

FIRST_TOKEN_TIMEOUT_S = 0.5
EDGE_MODEL, CLOUD_MODEL = "edge-model", "cloud-model"
MESSAGES = [{"role": "user", "content": "hello"}]
CLIENT = ClientKey("tester", tokens_per_minute=1_000_000)  # a token budget: every attempt's tokens are spent

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
ERROR = b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
DONE = b"data: [DONE]\n\n"
COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def until_closed(reader: asyncio.StreamReader) -> None:
    """A backend gone silent: it waits until the gateway closes the connection."""
    await reader.read()


def answer(status: int, body: dict[str, Any], length: int | None = None) -> Reply:
    """A whole JSON answer; ``length`` announces more bytes than are sent, then the connection is cut."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {length or len(data)}\r\n\r\n"
        writer.write(head.encode() + data)

    return reply


def streamed(*events: bytes, then: str = "end") -> Reply:
    """A chunked SSE answer of ``events``; ``then`` is "end" (the last chunk), "cut", "silence" or "open" (nothing
    more yet: the caller goes on)."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in events:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        if then == "end":
            writer.write(b"0\r\n\r\n")
        elif then == "silence":
            await until_closed(reader)

    return reply


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await until_closed(reader)


async def read_request(reader: asyncio.StreamReader) -> None:
    """One request off the connection: its head, and its body by content-length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    await reader.readexactly(int(length.group(1)) if length else 0)


@contextlib.asynccontextmanager
async def listening(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """``handle`` serving each connection on a free loopback port; yields the base URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def backend(reply: Reply) -> AsyncIterator[str]:
    """A backend answering every request with ``reply``, then closing the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        try:
            await reply(reader, writer)
            await writer.drain()
        finally:
            writer.close()

    async with listening(handle) as url:
        yield url


@dataclass
class Spies:
    """What the attempts of one gateway recorded."""

    outcomes: list[tuple[str, str]] = field(default_factory=list)
    spent: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    experiences: list[ServedRequest] = field(default_factory=list)
    quality_checks: int = 0


@contextlib.asynccontextmanager
async def gateway(
    edge_url: str, cloud_url: str | None = None, **settings: Any
) -> AsyncIterator[tuple[GatewayService, Spies]]:
    config = GatewaySettings(
        edge_url=edge_url,
        edge_model=EDGE_MODEL,
        cloud_url=cloud_url or f"http://127.0.0.1:{free_port()}/v1",
        cloud_model=CLOUD_MODEL,
        classify_prompts=False,
        decision_url=None,
        lengths_redis_url=None,
        limits_redis_url=None,
        first_token_timeout_s=FIRST_TOKEN_TIMEOUT_S,
        **settings,
    )
    service = GatewayService(config, GatewayMetrics())
    spies = Spies()
    record, meets = service.metrics.record, service.quality.meets

    def recording(route: str, model: str, service_type: str, timing: Any, outcome: str) -> None:
        spies.outcomes.append((route, outcome))
        record(route, model, service_type, timing, outcome)

    async def spend(client: ClientKey, tokens: int) -> None:
        spies.spent.append(tokens)

    async def observe(service_type: ServiceType, tokens: int) -> None:
        spies.lengths.append(tokens)

    def checking(*args: Any) -> bool:
        spies.quality_checks += 1
        return meets(*args)

    service.metrics.record = recording
    service.limiter.spend = spend
    service.lengths.observe = observe
    service.quality.meets = checking
    service.experiences.served = lambda served, over_the_air: spies.experiences.append(served)
    await service.start()
    try:
        yield service, spies
    finally:
        await service.close()


def in_flight(service: GatewayService, route: str) -> float | None:
    return service.metrics.registry.get_sample_value("edgecloud_gateway_requests_in_flight", {"route": route})


async def ask(service: GatewayService, stream: bool, route: str = "edge") -> Any:
    request = ChatCompletionRequest.model_validate({"model": "edgecloud-auto", "messages": MESSAGES, "stream": stream})
    hints = RequestHints(route=route) if route else RequestHints()
    return await service.generate(Endpoint.CHAT, request, hints, client=CLIENT)


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def assert_ended_once(service: GatewayService, spies: Spies, outcome: Outcome, route: str = "edge") -> None:
    assert in_flight(service, route) == 0
    assert spies.outcomes == [(route, outcome)]
    assert len(spies.spent) == 1
    succeeded = outcome is Outcome.SUCCESS
    assert len(spies.experiences) == len(spies.lengths) == int(succeeded)


async def settle() -> None:
    """Let the background tasks an ended attempt started (token spend, length observation) run."""
    await asyncio.sleep(0)


async def test_a_non_streamed_success_ends_once_with_its_tokens() -> None:
    async with backend(answer(200, COMPLETION)) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=False)
        await settle()
        assert json.loads(relay.body)["choices"][0]["message"]["content"] == "hi hi"
        assert_ended_once(service, spies, Outcome.SUCCESS)
        assert spies.spent == [5] and spies.lengths == [2]


async def test_a_streamed_success_ends_once_when_the_stream_ends_and_checks_quality_once() -> None:
    async with backend(streamed(ROLE, TOKEN, TOKEN, USAGE, DONE)) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=True)
        assert in_flight(service, "edge") == 1 and spies.outcomes == []  # the stream still runs
        assert (await read_all(relay.stream)).endswith(DONE)
        await settle()
        assert_ended_once(service, spies, Outcome.SUCCESS)
        assert spies.spent == [5] and spies.lengths == [2]
        assert spies.quality_checks == 1
        assert relay.headers[QUALITY_MET_HEADER] == str(spies.experiences[0].quality_met).lower()


@pytest.mark.parametrize(
    ("reply", "stream", "raised", "outcome"),
    [
        (answer(500, {"error": {"message": "boom"}}), False, UpstreamError, Outcome.UPSTREAM_ERROR),
        (answer(400, {"error": {"message": "bad"}}), False, RelayedError, Outcome.UPSTREAM_ERROR),
        (answer(503, {"error": {"message": "busy"}}), True, UpstreamUnavailableError, Outcome.UPSTREAM_ERROR),
        (silent, True, UpstreamTimeoutError, Outcome.UPSTREAM_ERROR),  # no headers by the first-token deadline
        (streamed(ROLE, then="silence"), True, UpstreamTimeoutError, Outcome.UPSTREAM_ERROR),  # nor a token
        (answer(200, COMPLETION, length=10_000), False, UpstreamUnavailableError, Outcome.UPSTREAM_DISCONNECT),
    ],
    ids=["status-500", "status-400", "status-503-stream", "no-headers", "no-first-token", "body-cut"],
)
async def test_a_failure_before_any_token_ends_once_and_is_raised(
    reply: Reply, stream: bool, raised: type[Exception], outcome: Outcome
) -> None:
    async with backend(reply) as url, gateway(url) as (service, spies):
        with pytest.raises(raised):
            await ask(service, stream=stream)
        await settle()
        assert_ended_once(service, spies, outcome)


async def test_a_refused_connection_ends_once() -> None:
    async with gateway(f"http://127.0.0.1:{free_port()}/v1") as (service, spies):
        with pytest.raises(UpstreamUnavailableError):
            await ask(service, stream=True)
        await settle()
        assert_ended_once(service, spies, Outcome.UPSTREAM_ERROR)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (streamed(ROLE, ERROR), Outcome.UPSTREAM_ERROR),
        (streamed(ROLE, then="cut"), Outcome.UPSTREAM_DISCONNECT),
    ],
    ids=["error-event", "cut"],
)
async def test_a_stream_broken_before_its_first_token_ends_once_and_is_relayed_as_is(
    reply: Reply, outcome: Outcome
) -> None:
    async with backend(reply) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=True)  # pinned: nobody retries, the client gets the events so far
        await settle()
        assert_ended_once(service, spies, outcome)
        assert b'"error"' in await read_all(relay.stream)


async def test_a_stream_broken_after_its_first_token_ends_once_when_the_stream_ends() -> None:
    async with backend(streamed(ROLE, TOKEN, then="cut")) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=True)
        assert in_flight(service, "edge") == 1
        body = await read_all(relay.stream)
        await settle()
        assert TOKEN in body and b"closed the stream" in body
        assert_ended_once(service, spies, Outcome.UPSTREAM_DISCONNECT)


@pytest.mark.parametrize("read_first", [True, False], ids=["mid-stream", "before-reading"])
async def test_a_client_that_leaves_the_stream_ends_it_once(read_first: bool) -> None:
    async with backend(streamed(ROLE, TOKEN, then="silence")) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=True)
        if read_first:
            async for chunk in relay.stream:
                if TOKEN in chunk:
                    break
        await relay.stream.aclose()
        await settle()
        assert_ended_once(service, spies, Outcome.CLIENT_DISCONNECT)


@pytest.mark.parametrize("leaves", ["at-done", "while-the-body-ends"])
async def test_a_client_that_leaves_after_done_was_served(leaves: str) -> None:
    """The openai client closes its connection at [DONE]. A backend that sends the body's last chunk later (uvicorn
    writes it apart, and a busy vLLM late) kept the gateway reading after [DONE]; the client left meanwhile, and the
    answer counted as abandoned: no success, no experience. CI lost experiences so (tests/test_loop_vllm.py)."""
    async with backend(streamed(ROLE, TOKEN, USAGE, DONE, then="silence")) as url, gateway(url) as (service, spies):
        relay = await ask(service, stream=True)
        async for chunk in relay.stream:
            if DONE in chunk:
                break
        if leaves == "at-done":
            await relay.stream.aclose()
        else:  # the response's task is cancelled while the gateway awaits the end of the body (the server's way)
            reading = asyncio.create_task(read_all(relay.stream))
            await asyncio.sleep(END_OF_BODY_WAIT_S / 4)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
        await settle()
        assert_ended_once(service, spies, Outcome.SUCCESS)


async def test_a_request_cancelled_while_the_backend_thinks_ends_once() -> None:
    async with backend(silent) as url, gateway(url) as (service, spies):
        task = asyncio.create_task(ask(service, stream=False))
        while in_flight(service, "edge") != 1:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle()
        assert_ended_once(service, spies, Outcome.CLIENT_DISCONNECT)


async def test_a_retry_on_the_other_side_ends_each_attempt_once() -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"
    async with backend(streamed(ROLE, TOKEN, USAGE, DONE)) as cloud, gateway(refused, cloud) as (service, spies):
        relay = await ask(service, stream=True, route="")
        await read_all(relay.stream)
        await settle()
        assert in_flight(service, "edge") == 0 and in_flight(service, "cloud") == 0
        assert spies.outcomes == [("edge", Outcome.UPSTREAM_ERROR), ("cloud", Outcome.SUCCESS)]
        assert len(spies.spent) == 2 and [served.source for served in spies.experiences] == ["retry"]
        assert relay.headers[RETRIED_FROM_HEADER] == "edge"


@contextlib.asynccontextmanager
async def keep_alive_backend(reply: Reply) -> AsyncIterator[tuple[str, list[int]]]:
    """A backend that keeps each connection open for further requests; the list counts its connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                await reply(reader, writer)
                await writer.drain()
        writer.close()

    async with listening(handle) as url:
        yield url, connections


async def test_streamed_answers_read_to_their_end_reuse_the_backend_connection() -> None:
    """A stream ended by [DONE] and the chunked encoding's last chunk gives its connection back to the pool: before,
    every streamed answer closed it, and each request paid a TCP handshake on both sides."""
    async with (
        keep_alive_backend(end_after_done()) as (url, connections),
        gateway(url) as (service, _),
    ):
        for _ in range(3):
            relay = await ask(service, stream=True)
            assert (await read_all(relay.stream)).endswith(DONE)
        assert len(connections) == 1


def end_after_done(*after: bytes) -> Reply:
    """[DONE], then in a later write (as uvicorn sends it) the events ``after`` and the body's last chunk."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await streamed(ROLE, TOKEN, USAGE, DONE, then="open")(reader, writer)
        await asyncio.sleep(0.05)
        writer.write(b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in after) + b"0\r\n\r\n")

    return reply


@pytest.mark.parametrize(("then", "connections_used"), [("silence", 2), ("more", 1)])
async def test_after_done_the_end_of_the_body_is_awaited_a_bounded_time(then: str, connections_used: int) -> None:
    """A backend whose body does not end after [DONE] loses its connection and the client's answer still ends (with
    [DONE]) within the bound; one that sends more and then ends its body keeps it (the framing is intact)."""
    reply = streamed(ROLE, TOKEN, DONE, then="silence") if then == "silence" else end_after_done(TOKEN)
    async with keep_alive_backend(reply) as (url, connections), gateway(url) as (service, spies):
        started = asyncio.get_running_loop().time()
        relay = await ask(service, stream=True)
        assert (await read_all(relay.stream)).endswith(DONE)
        assert asyncio.get_running_loop().time() - started < END_OF_BODY_WAIT_S + 1.0
        await settle()
        assert_ended_once(service, spies, Outcome.SUCCESS)
        relay = await ask(service, stream=True)
        await read_all(relay.stream)
        assert len(connections) == connections_used
