"""Server-sent events as the OpenAI streaming API writes them: ``data: <json>\\n\\n``, then ``[DONE]``."""

from __future__ import annotations

SSE_MEDIA_TYPE = "text/event-stream"
DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()
