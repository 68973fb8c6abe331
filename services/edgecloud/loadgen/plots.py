"""PNG figures of a run (matplotlib, Agg backend: no display needed).

Per point: ``latency-<label>.png``, the distributions (empirical CDFs) of TTFT, TPOT and e2e per route;
``timeline-<label>.png``, TTFT and e2e of each request against the time it was sent. For a sweep of two
or more points, ``sweep.png``: p50, p90 and p99 of TTFT, TPOT and e2e against the rate (or concurrency).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from edgecloud.loadgen.metrics import MS_PER_S, PERCENTILES
from edgecloud.loadgen.records import RequestRecord
from edgecloud.loadgen.runner import PointResult, RunResult

DPI = 110
PANEL_SIZE_IN = (4.6, 3.4)
MARKER_SIZE = 10  # points^2: hundreds of requests stay distinguishable
GRID_ALPHA = 0.3
LEGEND_SIZE = "small"
ROUTE_COLORS = {"edge": "tab:green", "cloud": "tab:blue", "unknown": "tab:gray"}
FALLBACK_COLOR = "tab:purple"
LATENCIES: tuple[tuple[str, Callable[[RequestRecord], float | None]], ...] = (
    ("TTFT", lambda record: record.ttft_s),
    ("TPOT", lambda record: record.tpot_s),
    ("e2e", lambda record: record.e2e_s),
)


def _routes(records: list[RequestRecord]) -> dict[str, list[RequestRecord]]:
    routes: dict[str, list[RequestRecord]] = {}
    for record in records:
        if record.ok:
            routes.setdefault(record.route, []).append(record)
    return dict(sorted(routes.items()))


def _values_ms(records: list[RequestRecord], metric: Callable[[RequestRecord], float | None]) -> np.ndarray:
    return np.array([value * MS_PER_S for record in records if (value := metric(record)) is not None])


def _empty(axes: Axes, title: str) -> None:
    axes.set_title(title)
    axes.text(0.5, 0.5, "no successful requests", ha="center", va="center", transform=axes.transAxes)


def latency_distributions(result: PointResult, path: Path) -> Path:
    routes = _routes(result.records)
    figure, panels = plt.subplots(1, len(LATENCIES), figsize=(PANEL_SIZE_IN[0] * len(LATENCIES), PANEL_SIZE_IN[1]))
    for axes, (name, metric) in zip(panels, LATENCIES, strict=True):
        drawn = False
        for route, records in routes.items():
            values = np.sort(_values_ms(records, metric))
            if values.size:
                share = np.arange(1, values.size + 1) / values.size
                color = ROUTE_COLORS.get(route, FALLBACK_COLOR)
                axes.step(values, share, where="post", color=color, label=f"{route} (n={values.size})")
                drawn = True
        if not drawn:
            _empty(axes, name)
            continue
        axes.set_title(f"{name} distribution")
        axes.set_xlabel(f"{name} (ms)")
        axes.set_ylabel("share of requests ≤ x")
        axes.grid(alpha=GRID_ALPHA)
        axes.legend(fontsize=LEGEND_SIZE)
    figure.suptitle(f"{result.point.label}: latency per route")
    figure.tight_layout()
    return _save(figure, path)


def timeline(result: PointResult, path: Path) -> Path:
    routes = _routes(result.records)
    failed = sum(not record.ok for record in result.records)
    shown = (("TTFT", LATENCIES[0][1]), ("e2e", LATENCIES[2][1]))
    figure, panels = plt.subplots(
        len(shown), 1, sharex=True, figsize=(len(shown) * PANEL_SIZE_IN[0], len(shown) * PANEL_SIZE_IN[1])
    )
    for axes, (name, metric) in zip(panels, shown, strict=True):
        for route, records in routes.items():
            sent = [record.sent_s for record in records if metric(record) is not None]
            color = ROUTE_COLORS.get(route, FALLBACK_COLOR)
            axes.scatter(sent, _values_ms(records, metric), s=MARKER_SIZE, color=color, label=route)
        axes.set_ylabel(f"{name} (ms)")
        axes.grid(alpha=GRID_ALPHA)
        if routes:
            axes.legend(fontsize=LEGEND_SIZE)
    panels[-1].set_xlabel("sent at (s from the start of the run)")
    figure.suptitle(f"{result.point.label}: latency over time ({failed} failed requests not shown)")
    figure.tight_layout()
    return _save(figure, path)


def sweep(run: RunResult, path: Path) -> Path:
    open_loop = run.points[0].point.request_rate is not None
    xs = [result.point.request_rate if open_loop else result.point.concurrency for result in run.points]
    figure, panels = plt.subplots(1, len(LATENCIES), figsize=(PANEL_SIZE_IN[0] * len(LATENCIES), PANEL_SIZE_IN[1]))
    for axes, (name, metric) in zip(panels, LATENCIES, strict=True):
        for percentile in PERCENTILES:
            ys = []
            for result in run.points:
                values = _values_ms([record for record in result.records if record.ok], metric)
                ys.append(float(np.percentile(values, percentile)) if values.size else np.nan)
            axes.plot(xs, ys, marker="o", label=f"p{percentile}")
        axes.set_title(f"{name} percentiles")
        axes.set_xlabel("request rate (req/s)" if open_loop else "concurrency (requests in flight)")
        axes.set_ylabel(f"{name} (ms)")
        axes.grid(alpha=GRID_ALPHA)
        axes.legend(fontsize=LEGEND_SIZE)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def write_plots(run: RunResult, output_dir: Path) -> list[Path]:
    paths = []
    for result in run.points:
        paths.append(latency_distributions(result, output_dir / f"latency-{result.point.label}.png"))
        paths.append(timeline(result, output_dir / f"timeline-{result.point.label}.png"))
    if len(run.points) > 1:
        paths.append(sweep(run, output_dir / "sweep.png"))
    return paths
