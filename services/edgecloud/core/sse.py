"""Server-sent events as the OpenAI streaming API writes them: ``data: <json>\\n\\n``, then ``[DONE]``."""

from __future__ import annotations

import re

SSE_MEDIA_TYPE = "text/event-stream"
DONE_EVENT = b"data: [DONE]\n\n"
# Byte-level tests on raw chunks, so that only the rare usage chunk is ever parsed as JSON:
# a chunk carries a token if it has non-empty generated text (chat delta content or completion text).
_TOKEN_TEXT = re.compile(rb'"(?:content|text)":\s*"(?!")')
_USAGE_OBJECT = re.compile(rb'"usage":\s*\{')


def sse_event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def carries_usage(data: bytes) -> bool:
    return _USAGE_OBJECT.search(data) is not None


def carries_token(data: bytes) -> bool:
    return _TOKEN_TEXT.search(data) is not None


class SSEEventSplitter:
    """Cuts a byte stream into complete SSE events; a partial event waits for the next read."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, block: bytes) -> list[bytes]:
        data = self._pending + block.replace(b"\r\n", b"\n")
        *events, self._pending = data.split(b"\n\n")
        return [event for event in events if event.strip()]
