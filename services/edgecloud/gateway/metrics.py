"""Prometheus metrics measured at the gateway, per route and backend model.

Names sit under the ``edgecloud_gateway_`` prefix and mirror vLLM's definitions, so the gateway's
view (what the base station sees) can be set beside the backend's own ``vllm:*`` histograms.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgecloud.core.metrics import REQUEST_LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, TTFT_BUCKETS
from edgecloud.gateway.timing import RequestTiming

PREFIX = "edgecloud_gateway"
LABELS = ("route", "model")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from the request reaching the gateway to the first generated token relayed (streams only).",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            f"{PREFIX}_inter_token_latency_seconds",
            "Time between consecutive relayed stream chunks carrying tokens.",
            LABELS,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            f"{PREFIX}_request_time_per_output_token_seconds",
            "Per request, (e2e - TTFT) / (output tokens - 1), as vLLM defines TPOT (streams only).",
            LABELS,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "Time from the request reaching the gateway to its last byte relayed.",
            LABELS,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens, as the backend reported them.", LABELS, registry=self.registry
        )
        self.generation_tokens = Counter(
            f"{PREFIX}_generation_tokens", "Generated tokens relayed.", LABELS, registry=self.registry
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests by outcome: success, client_error, upstream_error, upstream_disconnect, client_disconnect.",
            (*LABELS, "outcome"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being relayed now.", LABELS, registry=self.registry
        )

    def record(self, route: str, model: str, timing: RequestTiming, outcome: str) -> None:
        """Record one finished request; latency histograms only for requests that succeeded."""
        labels = (route, model)
        self.requests.labels(*labels, outcome).inc()
        if timing.prompt_tokens:
            self.prompt_tokens.labels(*labels).inc(timing.prompt_tokens)
        if timing.output_tokens:
            self.generation_tokens.labels(*labels).inc(timing.output_tokens)
        if outcome != "success":
            return
        self.e2e.labels(*labels).observe(timing.e2e)
        if timing.ttft is not None:
            self.ttft.labels(*labels).observe(timing.ttft)
        if timing.tpot is not None:
            self.tpot.labels(*labels).observe(timing.tpot)
        histogram = self.inter_token_latency.labels(*labels)
        for gap in timing.inter_token_gaps:
            histogram.observe(gap)
