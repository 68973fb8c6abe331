"""Prometheus metrics of the decision service, under ``edgecloud_decision_`` (labels: bounded sets only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "edgecloud_decision"
# Decision latency spans a cache hit (tens of microseconds) to an LLM call on CPU (seconds).
LATENCY_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


class DecisionMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            f"{PREFIX}_decisions", "Decisions by policy, source and action.", ("policy", "source", "decision"),
            registry=self.registry,
        )  # fmt: skip
        self.remembered = Counter(
            f"{PREFIX}_remembered_decisions",
            "Decisions a gateway answered from its memory, by policy, as it reported them (with its next request).",
            ("policy",), registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            f"{PREFIX}_latency_seconds", "Time to decide, by policy and source.", ("policy", "source"),
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.experiences = Counter(
            f"{PREFIX}_experiences", "Experiences by policy and replay outcome (duplicate: recorded before, skipped).",
            ("policy", "outcome"), registry=self.registry,
        )  # fmt: skip
        self.reward = Histogram(
            f"{PREFIX}_reward", "Rewards of eq. 10, by policy and decision.", ("policy", "decision"),
            buckets=(-60, -30, -10, -5, 0, 5, 10, 15, 20, 25, 30), registry=self.registry,
        )  # fmt: skip
        self.pool_version = Gauge(
            f"{PREFIX}_pool_version", "Experience pool version last seen.", ("cell", "policy"), registry=self.registry
        )
        self.pool_size = Gauge(
            f"{PREFIX}_pool_size", "Examples in the pool last seen.", ("cell", "policy"), registry=self.registry
        )
        self.buffered = Gauge(
            f"{PREFIX}_buffered_experiences", "Experiences held in memory while Redis is down.", registry=self.registry
        )
