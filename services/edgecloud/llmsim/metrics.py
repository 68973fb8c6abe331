"""The simulator's Prometheus metrics, under vLLM's names, on a registry the app owns.

Names, labels and buckets follow vLLM's ``PrometheusStatLogger`` so dashboards and the testbed
read the simulator and the real edge vLLM alike. ``prometheus_client`` appends ``_total`` to
counters, as in vLLM's own exposition (``vllm:prompt_tokens_total``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgecloud.core.metrics import REQUEST_LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, TTFT_BUCKETS

FINISHED_REASONS = ("stop", "length", "abort")


class EngineMetrics:
    """What the engine reports about each request; one instance per app and registry."""

    def __init__(self, registry: CollectorRegistry, model_name: str):
        self.registry = registry

        def metric(kind: type[Any], name: str, documentation: str, **options: Any) -> Any:
            return kind(name, documentation, ["model_name"], registry=registry, **options).labels(model_name)

        self.running = metric(Gauge, "vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = metric(Gauge, "vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.prompt_tokens = metric(Counter, "vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = metric(Counter, "vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            ["model_name", "finished_reason"],
            registry=registry,
        )
        self.success = {reason: success.labels(model_name, reason) for reason in FINISHED_REASONS}
        self.ttft = metric(
            Histogram,
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            buckets=TTFT_BUCKETS,
        )
        self.inter_token_latency = metric(
            Histogram,
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            buckets=TOKEN_LATENCY_BUCKETS,
        )
        self.tpot = metric(
            Histogram,
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            buckets=TOKEN_LATENCY_BUCKETS,
        )
        self.e2e = metric(
            Histogram,
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            buckets=REQUEST_LATENCY_BUCKETS,
        )
        self.queue_time = metric(
            Histogram,
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            buckets=REQUEST_LATENCY_BUCKETS,
        )

    def set_load(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)

    def record_first_token(self, prompt_tokens: int, queue_time: float, ttft: float) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.queue_time.observe(queue_time)
        self.ttft.observe(ttft)

    def record_inter_token(self, latency: float, count: int = 1) -> None:
        """``count`` tokens released together: the first after ``latency``, the others at once."""
        if count > 0:
            self.inter_token_latency.observe(latency)
        if count > 1:
            _observe_zeros(self.inter_token_latency, count - 1)

    def record_finished(self, reason: str, output_tokens: int, e2e: float, ttft: float | None) -> None:
        """A request left the engine; latency histograms count only requests that finished."""
        self.generation_tokens.inc(output_tokens)
        self.success[reason].inc()
        if reason == "abort":
            return
        self.e2e.observe(e2e)
        if ttft is not None and output_tokens > 1:
            self.tpot.observe((e2e - ttft) / (output_tokens - 1))


def _observe_zeros(histogram: Any, count: int) -> None:
    """``count`` observations of 0 s at once: the zero-latency profile releases tokens in batches.

    prometheus_client has no bulk observe; a zero lands in the first bucket and adds nothing to
    the sum, so that bucket's counter is raised directly (one lock instead of ``count``).
    """
    buckets = getattr(histogram, "_buckets", None)
    if buckets and histogram._upper_bounds[0] >= 0:
        buckets[0].inc(count)
        return
    for _ in range(count):
        histogram.observe(0.0)
