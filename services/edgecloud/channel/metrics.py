"""Prometheus metrics of the air interface: the user's view of every answer, and the cell's state.

Names sit under ``edgecloud_channel_``. Latencies are measured from the request's arrival at the
emulator to the release of chunks to the user, so they include generation, the gateway, the
backhaul delay of offloaded answers and the radio (eqs. 1 and 3). Labels are bounded: the route
the gateway chose (edge, cloud, other) and the service type it found (seven, or other), never a user
or request id. Per-user throughput and
queueing delay are histograms over users and chunks, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecloud.core.metrics import REQUEST_LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, TTFT_BUCKETS

PREFIX = "edgecloud_channel"
LABELS = ("route", "service_type")
# Queueing at the BS: from a few slots to seconds at the cell edge under load.
QUEUEING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# Release lateness after delivery: bounded by the tick (2 ms by default) plus event-loop delay.
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)
# User throughput: 100 kbit/s at a loaded cell edge to the ~700 Mbit/s Shannon peak of 20 MHz.
THROUGHPUT_BUCKETS = (1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9)


class ChannelMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.ttft = Histogram(
            f"{PREFIX}_delivered_time_to_first_token_seconds",
            "Arrival at the air interface to the first token chunk released to the user (streams only).",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            f"{PREFIX}_delivered_time_per_output_token_seconds",
            "Per answer, (e2e - TTFT) / (output tokens - 1) as released to the user (streams only).",
            LABELS,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            f"{PREFIX}_delivered_e2e_request_latency_seconds",
            "Arrival at the air interface to the last byte released to the user.",
            LABELS,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Answers by route and outcome: success, upstream_error, client_disconnect.",
            (*LABELS, "outcome"),
            registry=self.registry,
        )
        self.delivered_tokens = Counter(
            f"{PREFIX}_delivered_tokens",
            "Output tokens released to users.",
            LABELS,
            registry=self.registry,
        )
        self.delivered_bytes = Counter(
            f"{PREFIX}_delivered_bytes",
            "Bytes carried over the air as accounted (tokens x bytes per token, or wire bytes).",
            LABELS,
            registry=self.registry,
        )
        self.transmission = Histogram(
            f"{PREFIX}_transmission_seconds",
            "Per answer, the BS's last byte of it to the user's: eq. 1's t_tran as measured (reported to the gateway).",
            LABELS,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queueing_delay = Histogram(
            f"{PREFIX}_queueing_delay_seconds",
            "Per chunk, from ready at the BS (after any backhaul delay) to delivered over the air.",
            buckets=QUEUEING_BUCKETS,
            registry=self.registry,
        )
        self.release_lateness = Histogram(
            f"{PREFIX}_release_lateness_seconds",
            "Per chunk, from its scheduled delivery to its release to the client: the pacing error.",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.user_throughput = Histogram(
            f"{PREFIX}_user_served_throughput_bits_per_second",
            "At the end of each answer, the user's delivered bits per second of backlog since it attached.",
            buckets=THROUGHPUT_BUCKETS,
            registry=self.registry,
        )

    def watch_cell(self, read: Callable[[], dict[str, float]]) -> None:
        """Gauges read from the cell at scrape time (no bookkeeping in the slot loop), one read per scrape."""
        self.registry.register(_CellGauges(read))


# The cell's state, exported as gauges named edgecloud_channel_cell_<key>.
CELL_GAUGES = {
    "attached_ues": "Users attached to the serving cell.",
    "backlogged_ues": "Users with bytes waiting at the BS.",
    "sum_throughput_bps": "Cell throughput, bit/s, averaged over the stats window.",
    "rb_utilisation": "Share of RBs carrying data, averaged over the stats window.",
    "jain_fairness": "Jain's fairness index of the users' served throughputs.",
}


class _CellGauges(Collector):
    def __init__(self, read: Callable[[], dict[str, float]]):
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(f"{PREFIX}_cell_{name}", text) for name, text in CELL_GAUGES.items()]

    def collect(self) -> Iterable[Metric]:
        values = self._read()
        return [
            GaugeMetricFamily(f"{PREFIX}_cell_{name}", text, value=values[name]) for name, text in CELL_GAUGES.items()
        ]
