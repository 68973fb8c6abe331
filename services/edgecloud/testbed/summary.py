"""A one-line live summary of the testbed's traffic, read from the gateway's and the air interface's /metrics.

Printed by the testbed while it runs: requests and routes, the delays users saw, reward and quality.
Everything comes from the services' Prometheus counters and histograms (sums and counts), the same
numbers Grafana shows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 2.0


def scrape(url: str) -> dict[str, float]:
    """Samples of a /metrics page summed over labels, keyed ``name`` and ``name{label=value}`` per label."""
    text = httpx.get(url, timeout=SCRAPE_TIMEOUT_S).text
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
            for label, value in sample.labels.items():
                totals[f"{sample.name}{{{label}={value}}}"] += sample.value
    return totals


@dataclass(frozen=True)
class TrafficSummary:
    requests: int
    edge: int
    cloud: int
    delivered_ttft_s: float | None
    delivered_e2e_s: float | None
    reward: float | None
    quality_met: float | None

    def line(self) -> str:
        def number(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
            return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"

        return (
            f"requests={self.requests} (edge {self.edge}, cloud {self.cloud}) "
            f"delivered TTFT={number(self.delivered_ttft_s, ' s')} e2e={number(self.delivered_e2e_s, ' s')} "
            f"reward={number(self.reward, digits=1)} quality met={number(self.quality_met, '%', 100, 0)}"
        )


def _mean(samples: dict[str, float], name: str) -> float | None:
    count = samples.get(f"{name}_count", 0.0)
    return samples.get(f"{name}_sum", 0.0) / count if count else None


def summarize(gateway_metrics_url: str, air_metrics_url: str) -> TrafficSummary:
    gateway = scrape(gateway_metrics_url)
    air = scrape(air_metrics_url)
    success = "edgecloud_gateway_requests_total{outcome=success}"
    met = gateway.get("edgecloud_gateway_quality_outcomes_total{met=true}", 0.0)
    judged = gateway.get("edgecloud_gateway_quality_outcomes_total", 0.0)
    return TrafficSummary(
        requests=int(gateway.get(success, 0.0)),
        edge=int(gateway.get("edgecloud_gateway_decisions_total{route=edge}", 0.0)),
        cloud=int(gateway.get("edgecloud_gateway_decisions_total{route=cloud}", 0.0)),
        delivered_ttft_s=_mean(air, "edgecloud_channel_delivered_time_to_first_token_seconds"),
        delivered_e2e_s=_mean(air, "edgecloud_channel_delivered_e2e_request_latency_seconds"),
        reward=_mean(gateway, "edgecloud_gateway_reward"),
        quality_met=met / judged if judged else None,
    )
