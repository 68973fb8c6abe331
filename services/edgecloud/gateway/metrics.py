"""Prometheus metrics measured at the gateway, per route, backend model and service type.

Names sit under the ``edgecloud_gateway_`` prefix and mirror vLLM's definitions, so the gateway's
view (what the base station sees) can be set beside the backend's own ``vllm:*`` histograms and the
air interface's delivered ones (``edgecloud_channel_*``). Labels are bounded sets: routes, model
names from the configuration, the seven service types, decision sources, outcomes. Never a user or
a request id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from edgecloud.core.metrics import REQUEST_LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, TTFT_BUCKETS
from edgecloud.gateway.timing import RequestTiming

PREFIX = "edgecloud_gateway"
LABELS = ("route", "model", "service_type")
# The decision service answers from its cache in well under a millisecond, from an LLM in seconds.
DECISION_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0)
# The prompt classifier takes about 0.1 ms (p99 0.4 ms, docs/classifier.md); a megabyte prompt up to ~1 ms.
CLASSIFIER_LATENCY_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
# |estimated - actual| / actual output tokens.
LENGTH_ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from the request reaching the gateway to the first generated token relayed (streams only).",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            f"{PREFIX}_inter_token_latency_seconds",
            "Time between consecutive relayed stream chunks carrying tokens.",
            LABELS,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            f"{PREFIX}_request_time_per_output_token_seconds",
            "Per request, (e2e - TTFT) / (output tokens - 1), as vLLM defines TPOT (streams only).",
            LABELS,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "Request arrival at the gateway to its last byte relayed.",
            LABELS,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens, as the backend reported them.", LABELS, registry=r
        )
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "Generated tokens relayed.", LABELS, registry=r)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests by outcome: success, upstream_error, upstream_disconnect, client_disconnect.",
            (*LABELS, "outcome"),
            registry=r,
        )
        self.in_flight = Gauge(f"{PREFIX}_requests_in_flight", "Requests being relayed now.", ("route",), registry=r)
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Routes chosen, by source: the decision service's (llm, explore, cache, fallback, baseline), "
            "gateway_fallback (it did not answer), backend_down (routed around a failed backend), client.",
            ("route", "source", "service_type"),
            registry=r,
        )
        self.decision_latency = Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "Time to get a route from the decision service, as the gateway saw it.",
            ("source",),
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_memory = Counter(
            f"{PREFIX}_decision_memory",
            "Auto decisions by what the gateway's memory did: hit (answered without asking), explore (a remembered "
            "answer, but the draw asked the decision service to explore), miss (nothing remembered for this x, pool "
            "version and scorer), off (the pool's version could not be read: not trusted).",
            ("outcome",),
            registry=r,
        )
        self.classifications = Counter(
            f"{PREFIX}_classifications",
            "Service types, by origin: header, metadata or classifier.",
            ("service_type", "origin"),
            registry=r,
        )
        self.classifier_latency = Histogram(
            f"{PREFIX}_classifier_latency_seconds",
            "Time to classify a prompt (static embeddings distilled from MiniLM, and the head).",
            buckets=CLASSIFIER_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Requests retried on the other side after a failure before the first token.",
            ("from_route", "to_route"),
            registry=r,
        )
        self.backend_down = Gauge(
            f"{PREFIX}_backend_down", "1 while the gateway routes around a backend that failed.", ("route",), registry=r
        )
        self.length_error = Histogram(
            f"{PREFIX}_output_length_relative_error",
            "|estimated - actual| / actual output tokens, by estimate source",
            ("source",),
            buckets=LENGTH_ERROR_BUCKETS,
            registry=r,
        )
        # A summary, not a histogram: prometheus_client exports no _sum for histograms with negative
        # buckets, and the mean reward (rate of _sum over rate of _count) is what the dashboard shows.
        self.reward = Summary(
            f"{PREFIX}_reward",
            "Reward of eq. 10 from measured delays, as the decision service computed it.",
            ("route", "service_type"),
            registry=r,
        )
        self.quality = Counter(
            f"{PREFIX}_quality_outcomes",
            "Requests by whether the serving model met the required quality (4e).",
            ("route", "service_type", "met"),
            registry=r,
        )
        self.experiences = Counter(
            f"{PREFIX}_experiences",
            "Experiences by outcome: stored, buffered (Redis down), refused, spooled_at_stop, dropped_*.",
            ("outcome",),
            registry=r,
        )
        self.experience_queue = Gauge(
            f"{PREFIX}_experience_queue", "Experiences waiting to be posted to the decision service.", registry=r
        )

    def record(self, route: str, model: str, service_type: str, timing: RequestTiming, outcome: str) -> None:
        """Record one finished request; latency histograms only for requests that succeeded."""
        labels = (route, model, service_type)
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
