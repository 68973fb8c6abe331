"""What the gateway measures of one request, with vLLM's definitions of TTFT, ITL and TPOT.

TTFT is counted from the moment the request reached the gateway, so it includes the gateway's own
overhead and the backend's queueing: it is the delay the base station sees (eq. 3's t^TTFT).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RequestTiming:
    clock: Callable[[], float] = time.perf_counter
    arrived: float = -1.0
    upstream_sent: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: float | None = None
    inter_token_gaps: list[float] = field(default_factory=list)
    token_chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.arrived < 0:
            self.arrived = self.clock()

    def restart(self) -> None:
        """Forget a failed attempt's upstream timing; the arrival stays (the retry's TTFT includes it)."""
        self.upstream_sent = self.first_token = self.last_token = self.finished = None
        self.inter_token_gaps = []
        self.token_chunks = self.prompt_tokens = 0
        self.completion_tokens = None

    def mark_upstream_sent(self) -> None:
        self.upstream_sent = self.clock()

    def mark_tokens(self, chunks: int = 1) -> None:
        """``chunks`` stream chunks carrying generated text arrived (together) and were relayed.

        Chunks that arrive in one network read share one arrival time, so they add one inter-token
        gap, not several zero gaps: a backend that batches its writes is timed by its batches.
        """
        now = self.clock()
        if self.first_token is None:
            self.first_token = now
        elif self.last_token is not None:
            self.inter_token_gaps.append(now - self.last_token)
        self.last_token = now
        self.token_chunks += chunks

    def mark_finished(self) -> None:
        self.finished = self.clock()

    @property
    def overhead(self) -> float:
        """Time spent in the gateway before the request left for the backend."""
        return (self.upstream_sent or self.clock()) - self.arrived

    @property
    def output_tokens(self) -> int:
        """Tokens generated: the backend's usage count when it gave one, else the chunks relayed."""
        return self.completion_tokens if self.completion_tokens is not None else self.token_chunks

    @property
    def e2e(self) -> float:
        return (self.finished or self.clock()) - self.arrived

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrived

    @property
    def tpot(self) -> float | None:
        """vLLM's TPOT: (e2e - TTFT) / (output tokens - 1), over the decode phase only."""
        if self.first_token is None or self.last_token is None or self.output_tokens < 2:
            return None
        return (self.last_token - self.first_token) / (self.output_tokens - 1)
