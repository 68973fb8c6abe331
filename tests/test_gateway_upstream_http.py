"""The gateway's lean upstream client against real sockets: what each kind of server answer does to it.

Every server here is a raw asyncio TCP server on loopback writing exact bytes, so the framing (chunked,
Content-Length, until close), broken and silent servers, the pool's reuse and limits, back-pressure and TLS
are each seen on the wire. The relay on top of it is tested through the real gateway (test_gateway_e2e.py,
test_gateway_attempts.py).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from edgecloud.gateway.upstream_http import READ_BUFFER_HIGH_BYTES, HTTPPool, UpstreamHTTPError, origin_of

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


class Server:
    """A loopback server that runs ``handler`` per connection and counts the connections."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[Server, str]]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1"
    finally:
        listener.close()


def pool(**overrides: float) -> HTTPPool:
    settings = {"max_connections": 8, "connect_timeout_s": 2.0, "read_timeout_s": 2.0, "idle_timeout_s": 2.0}
    return HTTPPool(**{**settings, **overrides})  # type: ignore[arg-type]


def stream_answer(events: list[bytes], pause_s: float = 0.0) -> Handler:
    """Answers every request on the connection with ``events`` as chunks, ``pause_s`` apart."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(CHUNKED_HEAD)
            for event in events:
                writer.write(chunk(event))
                await writer.drain()
                await asyncio.sleep(pause_s)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handler


async def test_a_chunked_stream_arrives_a_read_at_a_time_and_its_connection_is_reused():
    events = [b"data: %d\n\n" % k for k in range(5)]
    async with serving(stream_answer(events, pause_s=0.01)) as (server, url):
        client = pool()
        for _ in range(3):
            response = await client.post(url, "/chat/completions", b"X-Request-Id: r\r\n", b"{}")
            assert response.status == 200
            reads = [block async for block in response]
            assert reads == events  # 10 ms apart: each its own read, de-chunked
            assert response.at_eof
            response.release()
        assert server.connections == 1
        await client.close()


async def test_the_request_line_host_and_headers_on_the_wire():
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        heads.append(head)
        bodies.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with serving(handler) as (_, url):
        client = pool()
        response = await client.post(url, "/completions", b"Authorization: Bearer k\r\n", b'{"a": 1}')
        assert await response.read() == b"ok"
        response.release()
        await client.close()
    lines = heads[0].split(b"\r\n")
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert lines[0] == b"POST /v1/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in lines
    assert b"Content-Length: 8" in lines and b"Authorization: Bearer k" in lines
    assert bodies == [b'{"a": 1}']


def test_origins_of_base_urls():
    assert origin_of("http://h:8001/v1/").base_path == "/v1"
    assert origin_of("https://api.example.com/v1").port == 443
    assert origin_of("https://api.example.com/v1").host_header == b"api.example.com"
    assert origin_of("http://[::1]:9000/v1").host_header == b"[::1]:9000"
    with pytest.raises(ValueError):
        origin_of("ftp://h/v1")


async def test_a_body_without_a_length_ends_with_its_connection_and_is_not_reused():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"x": 1}')
        await writer.drain()

    async with serving(handler) as (server, url):
        client = pool()
        for _ in range(2):
            response = await client.post(url, "/x", b"", b"{}")
            assert await response.read() == b'{"x": 1}'
            response.release()
        assert server.connections == 2
        await client.close()


async def test_an_error_status_is_read_like_any_answer():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"error": {"message": "no"}}'
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(1)

    async with serving(handler) as (_, url):
        client = pool()
        response = await client.post(url, "/x", b"", b"{}")
        assert response.status == 429
        assert await response.read() == b'{"error": {"message": "no"}}'
        response.release()
        await client.close()


async def test_a_silent_server_is_a_timeout_before_and_during_the_body():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(5)

    client = pool(read_timeout_s=0.2)
    async with serving(silent) as (_, url):
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await client.post(url, "/x", b"", b"{}")
        assert asyncio.get_running_loop().time() - started == pytest.approx(0.2, abs=0.15)
    async with serving(stalls) as (_, url):
        response = await client.post(url, "/x", b"", b"{}")
        assert await anext(response) == b"data: 1\n\n"
        with pytest.raises(TimeoutError):
            await anext(response)
        response.close()
    await client.close()


async def test_refused_broken_and_garbled_answers_are_upstream_errors():
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()

    async def garbles(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    client = pool()
    with pytest.raises(UpstreamHTTPError, match="cannot connect"):
        await client.post("http://127.0.0.1:9/v1", "/x", b"", b"{}")
    async with serving(breaks) as (_, url):
        response = await client.post(url, "/x", b"", b"{}")
        assert await anext(response) == b"data: 1\n\n"
        with pytest.raises(UpstreamHTTPError, match="closed the connection"):
            await anext(response)
        response.close()
    async with serving(garbles) as (_, url):
        with pytest.raises(UpstreamHTTPError, match="invalid HTTP response"):
            await client.post(url, "/x", b"", b"{}")
    assert client._open == 0  # every connection given back
    await client.close()


async def test_at_most_max_connections_are_open_and_a_request_waits_for_one():
    async with serving(stream_answer([b"data: 1\n\n"])) as (server, url):
        client = pool(max_connections=1)
        first = await client.post(url, "/x", b"", b"{}")
        second = asyncio.create_task(client.post(url, "/x", b"", b"{}"))
        await asyncio.sleep(0.1)
        assert not second.done()  # the only connection is in use
        await first.read()
        first.release()
        response = await asyncio.wait_for(second, 2)
        assert await response.read() == b"data: 1\n\n"
        response.release()
        assert server.connections == 1
        async with serving(stream_answer([b"data: 2\n\n"])) as (_, other_url):
            # the one connection is idle, to the first server: it is closed to make room for the other
            other = await asyncio.wait_for(client.post(other_url, "/x", b"", b"{}"), 2)
            assert await other.read() == b"data: 2\n\n"
            other.release()
        await client.close()


async def test_an_idle_connection_is_dropped_after_the_idle_timeout():
    async with serving(stream_answer([b"data: 1\n\n"])) as (server, url):
        client = pool(idle_timeout_s=0.1)
        for _ in range(2):
            response = await client.post(url, "/x", b"", b"{}")
            await response.read()
            response.release()
            await asyncio.sleep(0.2)
        assert server.connections == 2
        await client.close()


async def test_a_reader_that_falls_behind_pauses_the_socket():
    block = b"x" * 16384
    sent = 0

    async def floods(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(256):  # 4 MiB, far above what the socket buffers hold
            writer.write(chunk(block))
            await writer.drain()
            sent += len(block)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serving(floods) as (_, url):
        client = pool()
        response = await client.post(url, "/x", b"", b"{}")
        await asyncio.sleep(0.5)
        connection = response._connection
        assert connection is not None and connection.paused
        assert connection.buffered < READ_BUFFER_HIGH_BYTES + 2 * len(block) + 65536
        assert sent < 256 * len(block)  # the server is held back
        assert len(await response.read()) == 256 * len(block)
        response.release()
        await client.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_https_with_the_servers_certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        ["openssl", *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with serving(stream_answer([b"data: secure\n\n"]), tls=server_tls) as (_, url):
        untrusted = pool()
        with pytest.raises(UpstreamHTTPError):
            await untrusted.post(url, "/x", b"", b"{}")
        trusted = HTTPPool(
            max_connections=1,
            connect_timeout_s=2.0,
            read_timeout_s=2.0,
            idle_timeout_s=2.0,
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        )
        response = await trusted.post(url, "/x", b"", b"{}")
        assert await response.read() == b"data: secure\n\n"
        response.release()
        await trusted.close()
        await untrusted.close()
