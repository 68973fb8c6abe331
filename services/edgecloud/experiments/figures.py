"""The PNGs of Fig. 5: one per panel (fig5a.png ... fig5f.png) and all six together (fig5.png).

Each ``draw_*`` fills one matplotlib Axes, so the single panels and the overview are the same drawing.
Learning curves show a moving average over ``SMOOTHING_EPISODES`` episodes (the raw per-episode means are
in results.json); the oracle is drawn dashed as the reference, as it knows the true outcomes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from edgecloud.experiments.analysis import EpisodeSeries
from edgecloud.experiments.reproduce import SweepPoint

SMOOTHING_EPISODES = 5
PANEL_SIZE_IN = (5.0, 3.6)
DPI = 120
SWEEP_AXES = {
    "d": ("users", "users in the cell"),
    "e": ("mean_output_tokens", "mean output tokens"),
    "f": ("quality_share", "share of quality-preferred tasks"),
}


def smoothed(values: Sequence[float], window: int = SMOOTHING_EPISODES) -> np.ndarray:
    """Trailing moving average; the first points average what exists so far."""
    data = np.asarray(values, dtype=float)
    sums = np.cumsum(np.nan_to_num(data))
    counts = np.cumsum(~np.isnan(data))
    upper = np.arange(len(data))
    lower = upper - window
    window_sums = sums - np.where(lower >= 0, sums[np.maximum(lower, 0)], 0.0)
    window_counts = counts - np.where(lower >= 0, counts[np.maximum(lower, 0)], 0)
    return np.divide(window_sums, window_counts, out=np.full(len(data), np.nan), where=window_counts > 0)


def _curve(ax: Axes, item: EpisodeSeries, series: str) -> None:
    values = getattr(item, series)
    style = "--" if item.policy == "oracle" else "-"
    ax.plot(np.arange(1, len(values) + 1), smoothed(values), style, label=item.label, linewidth=1.5)


def _pick(series: Sequence[EpisodeSeries], policies: Sequence[str]) -> list[EpisodeSeries]:
    return [item for policy in policies for item in series if item.policy == policy]


def draw_reward_by_class(axes: Sequence[Axes], series: Sequence[EpisodeSeries]) -> None:
    for ax, (field, title) in zip(
        axes, (("reward_regular", "regular tasks"), ("reward_quality", "quality-preferred tasks")), strict=True
    ):
        for item in _pick(series, ("icl", "icl_paper", "dqn", "oracle")):
            _curve(ax, item, field)
        ax.set(title=f"(a) reward, {title}", xlabel="episode", ylabel="mean reward (eq. 10)")
        ax.legend(fontsize=7)


def draw_success(ax: Axes, series: Sequence[EpisodeSeries]) -> None:
    for item in _pick(series, ("icl", "dqn", "always_edge", "oracle")):
        _curve(ax, item, "success_quality")
    ax.set(title="(b) success rate, quality-preferred", xlabel="episode", ylabel="requirement met", ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)


def draw_replay(ax: Axes, series: Sequence[EpisodeSeries]) -> None:
    for item in _pick(series, ("icl", "icl_paper", "icl_latest", "icl_greedy", "dqn", "oracle")):
        _curve(ax, item, "reward")
    ax.set(title="(c) replay and exploration", xlabel="episode", ylabel="mean reward (eq. 10)")
    ax.legend(fontsize=7)


def draw_sweep(ax: Axes, points: Sequence[SweepPoint], panel: str) -> None:
    axis, label = SWEEP_AXES[panel]
    for pair in dict.fromkeys(point.pair for point in points):
        line = [point for point in points if point.pair == pair and point.axis == axis]
        ax.plot([point.value for point in line], [point.mean_delay_s for point in line], "o-", label=pair)
    ax.set(title=f"({panel}) service delay vs {label}", xlabel=label, ylabel="mean t_total (s)")
    ax.legend(fontsize=7)


def draw_sweep_panel(axes: list[Axes], points: Sequence[SweepPoint], panel: str) -> None:
    draw_sweep(axes[0], points, panel)


def write_figures(series: Sequence[EpisodeSeries], points: Sequence[SweepPoint], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, columns: int, draw: Callable[[list[Axes]], None]) -> None:
        figure, axes = plt.subplots(1, columns, figsize=(PANEL_SIZE_IN[0] * columns, PANEL_SIZE_IN[1]), squeeze=False)
        draw(list(axes[0]))
        figure.tight_layout()
        figure.savefig(directory / name, dpi=DPI)
        plt.close(figure)
        written.append(directory / name)

    save("fig5a.png", 2, lambda axes: draw_reward_by_class(axes, series))
    save("fig5b.png", 1, lambda axes: draw_success(axes[0], series))
    save("fig5c.png", 1, lambda axes: draw_replay(axes[0], series))
    for panel in SWEEP_AXES:
        save(f"fig5{panel}.png", 1, functools.partial(draw_sweep_panel, points=points, panel=panel))

    figure, grid = plt.subplots(2, 4, figsize=(PANEL_SIZE_IN[0] * 4, PANEL_SIZE_IN[1] * 2))
    axes = list(grid.flat)
    draw_reward_by_class(axes[0:2], series)
    draw_success(axes[2], series)
    draw_replay(axes[3], series)
    for ax, panel in zip(axes[4:7], SWEEP_AXES, strict=True):
        draw_sweep(ax, points, panel)
    axes[7].axis("off")
    figure.tight_layout()
    figure.savefig(directory / "fig5.png", dpi=DPI)
    plt.close(figure)
    written.append(directory / "fig5.png")
    return written
