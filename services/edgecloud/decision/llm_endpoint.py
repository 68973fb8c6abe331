"""One OpenAI-compatible LLM endpoint for the decision scorers: HTTP, errors, and answer checks.

Every failure becomes a ``ScoringError`` with a clear message (never the request body: it holds the
prompt), so the decision service can fall back. ``PathUnsupported`` marks the ones that say "this
endpoint does not offer what was asked", on which ``scoring.AutoScorer`` tries the next path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S

logger = logging.getLogger(__name__)

# Ours: under the paper's method (the whole pool shown) the first decision after the pool changed prefills a
# ~1,500-token prompt: 8.8 s on the idle 2-core CPU testbed, ~30 s under load (BENCHMARKS.md, "Decision
# latency"); the shipped method's prompts share a cached prefix (0.55 s p50).
DEFAULT_TIMEOUT_S = 120.0
# Status codes with which an endpoint says it does not offer a path (bad parameter, no such route).
UNSUPPORTED_STATUS = frozenset({400, 404, 422})
# How much of an endpoint's error message goes into an exception.
ERROR_SNIPPET_CHARS = 200


class ScoringError(Exception):
    """Scoring failed (transport, status, malformed answer); the decision service falls back."""


class PathUnsupported(ScoringError):
    """The endpoint does not offer this path (HTTP 400/404/422, or not what was asked in its answer)."""

    def __init__(self, message: str, requests: int = 1) -> None:
        super().__init__(message)
        self.requests = requests
        """LLM requests the failed attempt made (0 when it failed before asking the LLM)."""


class CannotScore(ScoringError):
    """The endpoint offered no way to score (every path refused, or its answers were none of the candidates).

    ``scoring.AutoScorer`` remembers it for ``retry_after_s`` and answers at once in that time, so a
    decision does not probe an endpoint that cannot score (a simulator, say) on every request.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OpenAIEndpoint:
    """One base URL (with ``/v1``) and model, over one shared ``httpx.AsyncClient``.

    ``transport`` is a test seam (``httpx.MockTransport``); None uses the real network. The API key,
    if any, goes only into the ``Authorization`` header, never into a log or an exception.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        """The server's root, for routes outside the OpenAI API (vLLM's ``/tokenize``)."""
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(keepalive_expiry=IDLE_CLIENT_CONNECTION_S),
        )

    async def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` plus the model to ``route`` (under the base URL, or absolute); the JSON answer."""
        started = time.perf_counter()
        try:
            response = await self._client.post(route, json={"model": self.model, **body})
        except httpx.HTTPError as error:
            raise ScoringError(f"POST {route} at {self.base_url}: {type(error).__name__}: {error}") from error
        logger.debug("POST %s -> %d in %.3f s", route, response.status_code, time.perf_counter() - started)
        if response.status_code != 200:
            detail = f"POST {route} at {self.base_url}: HTTP {response.status_code}: {_error_message(response)}"
            if response.status_code in UNSUPPORTED_STATUS:
                raise PathUnsupported(detail)
            raise ScoringError(detail)
        try:
            answer = response.json()
        except ValueError as error:
            raise ScoringError(f"POST {route} at {self.base_url}: answer is not JSON") from error
        if not isinstance(answer, dict):
            raise ScoringError(f"POST {route} at {self.base_url}: answer is not a JSON object")
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    """The OpenAI-shaped error's message if there is one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_SNIPPET_CHARS]
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if message is None and isinstance(body, dict):
        message = body.get("message")
    return str(message if message is not None else body)[:ERROR_SNIPPET_CHARS]


def field(value: Any, key: str, what: str) -> Any:
    """``value[key]``, or a ``ScoringError`` saying that ``what`` was malformed."""
    if not isinstance(value, dict) or key not in value:
        raise ScoringError(f"malformed answer: {what} has no {key!r}")
    return value[key]


def choices(answer: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    """The answer's ``expected`` choices, in ``index`` order (one per prompt of a batched request)."""
    listed = field(answer, "choices", "the answer")
    if not isinstance(listed, list) or len(listed) != expected:
        raise ScoringError(f"malformed answer: expected {expected} choice(s)")
    if not all(isinstance(choice, dict) for choice in listed):
        raise ScoringError("malformed answer: a choice is not an object")
    return sorted(listed, key=lambda choice: choice.get("index", 0))


def completion_tokens(answer: dict[str, Any]) -> int | None:
    """``usage.completion_tokens`` if the endpoint reported it."""
    usage = answer.get("usage")
    count = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) else None
