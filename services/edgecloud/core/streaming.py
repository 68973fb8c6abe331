"""A streamed response that costs one plain asyncio task, not a task group per response.

Starlette's ``StreamingResponse`` watches for the client leaving through an anyio task group, which
showed as about a tenth of the gateway's CPU per request under load (BENCHMARKS.md). This response
watches with one asyncio task instead and, when the client goes away, cancels the relay so that the
upstream connection is closed at once and the backend stops generating (the gateway), or the user's
bytes leave the scheduler (the channel emulator).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from edgecloud.core.sse import SSE_MEDIA_TYPE


class WatchedStreamingResponse(Response):
    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        status_code: int = 200,
        media_type: str = SSE_MEDIA_TYPE,
    ):
        # Like StreamingResponse: no body, so no content-length; the body is chunked.
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        await send_events(self.events, start, receive, send)


async def send_events(events: AsyncGenerator[bytes, None], start: Message, receive: Receive, send: Send) -> None:
    """Send ``start``, then each event as it comes; if the client leaves, the sending task is cancelled (and so the
    relay: the backend stops at once) and the events are closed."""
    relay = asyncio.current_task()
    assert relay is not None
    client_left = asyncio.Event()
    watcher = asyncio.create_task(_cancel_on_disconnect(receive, relay, client_left))
    try:
        await send(start)
        async for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not client_left.is_set():
            raise
        relay.uncancel()
    finally:
        watcher.cancel()
        await events.aclose()


async def _cancel_on_disconnect(receive: Receive, relay: asyncio.Task[None], client_left: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while (await receive())["type"] != "http.disconnect":
            continue
        client_left.set()
        relay.cancel()
