"""What was measured for one request: filled in by the client while it streams, read by metrics and reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecloud.loadgen.workload import PlannedRequest

UNKNOWN_ROUTE = "unknown"  # no x-route header: the target is not the gateway (or an error came first)
CANCELLED = "cancelled"  # still in flight at the run's deadline


@dataclass
class RequestRecord:
    planned: PlannedRequest
    point: str  # the sweep point's label, e.g. "rate-2"
    sent_s: float | None = None  # from the start of the run
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # gaps between successive content chunks
    content_chunks: int = 0
    usage_tokens: int | None = None  # completion_tokens of the usage chunk
    status: int | None = None
    route: str = UNKNOWN_ROUTE
    backend_model: str | None = None
    decision_source: str | None = None
    decision_latency_ms: float | None = None  # x-decision-latency-ms: the gateway's wait for the decision
    served_type: str | None = None  # x-service-type: the type the gateway used (stated or classified)
    quality_met: bool | None = None  # x-quality-met; None when the header is absent
    # http_<status>, timeout, connect, disconnect, stream_error, invalid_stream, no_content, client_error, cancelled
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.ttft_s is not None and self.e2e_s is not None

    @property
    def output_tokens(self) -> int | None:
        """From the usage chunk; else the number of content chunks (one token each on vLLM-like servers)."""
        if self.usage_tokens is not None:
            return self.usage_tokens
        return self.content_chunks if self.content_chunks else None

    @property
    def token_source(self) -> str | None:
        if self.usage_tokens is not None:
            return "usage"
        return "chunks" if self.content_chunks else None

    @property
    def tpot_s(self) -> float | None:
        """(e2e - TTFT) / (output tokens - 1); None for failed or one-token requests."""
        tokens = self.output_tokens
        if not self.ok or tokens is None or tokens < 2 or self.e2e_s is None or self.ttft_s is None:
            return None
        return (self.e2e_s - self.ttft_s) / (tokens - 1)

    def fail(self, kind: str, message: str) -> None:
        self.error_kind = kind
        self.error = message
