"""One streamed chat completion with its timing, over aiohttp; and the reachability check before a run.

Timing follows ``vllm bench serve`` (docs/loadgen.md has the definitions): the clock starts just
before the request is written; TTFT stops at the first SSE event whose delta has non-empty content;
each later content event adds an inter-token gap; e2e stops when the stream has ended (the last
byte). Events that arrive in one network read share its arrival time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp

from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.core.headers import (
    BACKEND_MODEL_HEADER,
    DECISION_LATENCY_MS_HEADER,
    DECISION_SOURCE_HEADER,
    QUALITY_MET_HEADER,
    ROUTE_HEADER,
    SERVICE_TYPE_HEADER,
    USER_ID_HEADER,
)
from edgecloud.core.sse import SSEEventSplitter
from edgecloud.loadgen.records import UNKNOWN_ROUTE, RequestRecord

ERROR_TEXT_LIMIT = 300  # characters of an error body kept in the record
DATA_PREFIX = b"data:"
DONE = b"[DONE]"


class TargetUnreachable(Exception):
    """The target did not answer the reachability check; the run does not start."""


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    api_key: str | None
    timeout_s: float
    type_hint: bool

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def new_session() -> aiohttp.ClientSession:
    """No connection limit (aiohttp's default of 100 would cap the load) and no session timeout (per request)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CLIENT_CONNECTION_S)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def check_reachable(session: aiohttp.ClientSession, target: Target, timeout_s: float) -> list[str]:
    """``GET /models``: the served model ids. Any answer but 401/403 counts as reachable."""
    url = f"{target.base_url}/models"
    try:
        async with asyncio.timeout(timeout_s), session.get(url, headers=target.headers()) as response:
            if response.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                raise TargetUnreachable(f"{url} refused the API key (HTTP {response.status}): check --api-key")
            if response.status != HTTPStatus.OK:
                return []
            body = await response.json(content_type=None)
    except TimeoutError:
        raise TargetUnreachable(f"{url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientConnectorError as error:
        raise TargetUnreachable(f"cannot connect to {url} (is the server running?): {error}") from None
    except (aiohttp.ClientError, ValueError) as error:
        raise TargetUnreachable(f"{url} did not answer properly: {error}") from None
    data = body.get("data") if isinstance(body, dict) else None
    return [str(card.get("id")) for card in data or [] if isinstance(card, dict)]


def request_body(record: RequestRecord, model: str) -> dict[str, Any]:
    planned = record.planned
    return {
        "model": model,
        "messages": [{"role": "user", "content": planned.prompt}],
        "max_tokens": planned.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": planned.user,
    }


def request_headers(record: RequestRecord, target: Target) -> dict[str, str]:
    headers = {**target.headers(), USER_ID_HEADER: record.planned.user}
    if target.type_hint:
        headers[SERVICE_TYPE_HEADER] = record.planned.service_type.value
    return headers


async def send(session: aiohttp.ClientSession, target: Target, record: RequestRecord, run_start: float) -> None:
    """Send ``record``'s request and fill the record in; failures become its error, never an exception.

    Cancellation (the run's deadline) propagates: the runner marks the record cancelled.
    """
    body = request_body(record, target.model)
    headers = request_headers(record, target)
    started = time.perf_counter()
    record.sent_s = started - run_start
    try:
        async with (
            asyncio.timeout(target.timeout_s),
            session.post(f"{target.base_url}/chat/completions", json=body, headers=headers) as response,
        ):
            record.status = response.status
            _read_headers(record, response)
            if response.status != HTTPStatus.OK:
                record.fail(f"http_{response.status}", _error_message(await response.text()))
                return
            await _read_stream(record, response, started)
    except TimeoutError:
        record.fail("timeout", f"no complete answer within {target.timeout_s:g} s")
    except aiohttp.ClientConnectorError as error:
        record.fail("connect", str(error))
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
        record.fail("disconnect", str(error) or type(error).__name__)
    except aiohttp.ClientError as error:
        record.fail("client_error", str(error) or type(error).__name__)
    except ValueError as error:  # an SSE event that is not JSON
        record.fail("invalid_stream", str(error)[:ERROR_TEXT_LIMIT])


def _read_headers(record: RequestRecord, response: aiohttp.ClientResponse) -> None:
    headers = response.headers
    record.route = headers.get(ROUTE_HEADER, UNKNOWN_ROUTE)
    record.backend_model = headers.get(BACKEND_MODEL_HEADER)
    record.decision_source = headers.get(DECISION_SOURCE_HEADER)
    latency = headers.get(DECISION_LATENCY_MS_HEADER)
    record.decision_latency_ms = float(latency) if latency and _is_number(latency) else None
    record.served_type = headers.get(SERVICE_TYPE_HEADER)
    met = headers.get(QUALITY_MET_HEADER)
    record.quality_met = None if met is None else met.strip().lower() == "true"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


async def _read_stream(record: RequestRecord, response: aiohttp.ClientResponse, started: float) -> None:
    splitter = SSEEventSplitter()
    last_content: float | None = None
    done = False
    async for block in response.content.iter_any():
        arrived = time.perf_counter()
        for event in splitter.feed(block):
            for line in event.splitlines():
                if not line.startswith(DATA_PREFIX):
                    continue  # comments (keep-alives) and other fields
                data = line[len(DATA_PREFIX) :].strip()
                if data == DONE:
                    done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    record.fail("stream_error", _error_message(data.decode(errors="replace")))
                    return
                if chunk.get("usage"):
                    record.usage_tokens = chunk["usage"].get("completion_tokens")
                if _content(chunk):
                    record.content_chunks += 1
                    if last_content is None:
                        record.ttft_s = arrived - started
                    else:
                        record.itl_s.append(arrived - last_content)
                    last_content = arrived
    record.e2e_s = time.perf_counter() - started
    if record.ttft_s is None:
        record.fail("no_content", "the stream ended without any content")
    elif not done:
        record.fail("disconnect", "the stream ended without [DONE]")


def _content(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _error_message(text: str) -> str:
    """The OpenAI error's message if the body is one, else the start of the body."""
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text
    return str(message)[:ERROR_TEXT_LIMIT]
