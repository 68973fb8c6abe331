"""Figures of the channel emulator's radio model, written as PNGs for docs/radio-model.md.

    .venv/bin/python scripts/plot_channel.py --out docs/channel

One function per figure, each taking the output directory and a seed and returning the file it wrote;
``FIGURES`` lists them, so a new figure is one function and one entry. Matplotlib is used through its
object API (``Figure``), which renders PNGs with the Agg backend and needs no display or pyplot state.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from edgecloud.channel.air import AirInterface
from edgecloud.channel.cell import Cell
from edgecloud.channel.radio import pathloss
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params
from edgecloud.channel.schedulers import make_scheduler
from edgecloud.channel.service import jain_index

DISTANCE_RANGE_M = (10.0, 2000.0)
DISTANCE_POINTS = 400
SINR_USERS = 2000
SINR_PERCENTILES = (5, 50, 95)
SINR_AXIS_PERCENTILES = (0.1, 99.9)
CELL_USERS = 20  # the paper's cell, Sec. IV-A
CELL_DURATION_S = 10.0  # virtual time of the full-buffer run
FULL_BUFFER_BITS = 1e15  # never drained in CELL_DURATION_S
PF_WINDOW_SLOTS = 100
STATS_WINDOW_SLOTS = 2000
SCHEDULERS = (  # name, label, colour, marker
    ("pf", "proportional fair", "tab:blue", "o"),
    ("rr", "round robin", "tab:orange", "s"),
    ("maxci", "max-C/I", "tab:green", "^"),
)
THROUGHPUT_FLOOR_MBPS = 0.01  # bottom of the log axis, where users served nothing are drawn
DPI = 150
FIGURE_SIZE_IN = (7.0, 4.5)


def pathloss_vs_distance(out: Path, seed: int) -> Path:
    """TR 38.901 Table 7.4.1-1 path loss of UMa and UMi street canyon, LOS and NLOS, with their breakpoints."""
    del seed  # deterministic
    distances = np.geomspace(*DISTANCE_RANGE_M, DISTANCE_POINTS)
    figure = Figure(figsize=FIGURE_SIZE_IN)
    axes = figure.subplots()
    curves = (
        ("uma", "UMa", pathloss.uma_los, pathloss.uma_nlos, "tab:blue"),
        ("umi", "UMi street canyon", pathloss.umi_los, pathloss.umi_nlos, "tab:orange"),
    )
    for scenario, label, los, nlos, colour in curves:
        params = load_radio_params(scenario=scenario)
        heights = (params.bs_height_m, params.ue_height_m, params.carrier_frequency_hz)
        axes.plot(distances, los(distances, *heights), color=colour, label=f"{label} LOS")
        axes.plot(distances, nlos(distances, *heights), color=colour, linestyle="--", label=f"{label} NLOS")
        breakpoint_m = pathloss.breakpoint_distance(*heights)
        axes.axvline(breakpoint_m, color=colour, linestyle=":", linewidth=1)
        axes.annotate(
            f"d'BP {breakpoint_m:.0f} m",
            (breakpoint_m, 0.03),
            xycoords=("data", "axes fraction"),
            rotation=90,
            color=colour,
            fontsize=8,
        )
    uma, umi = load_radio_params(scenario="uma"), load_radio_params(scenario="umi")
    axes.set_xscale("log")
    axes.set_xlabel("2D distance (m)")
    axes.set_ylabel("path loss (dB)")
    axes.set_title(
        f"TR 38.901 Table 7.4.1-1, f_c = {uma.carrier_frequency_hz / 1e9:g} GHz, h_UT = {uma.ue_height_m:g} m, "
        f"h_BS = {uma.bs_height_m:g} / {umi.bs_height_m:g} m",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    path = out / "pathloss_vs_distance.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def sinr_distribution(out: Path, seed: int) -> Path:
    """Empirical CDFs of the mean (large-scale) SINR and of the per-RB instantaneous SINR of a uniform drop."""
    params = load_radio_params(scenario="uma", activity_factor=1.0)
    radio = RadioModel(params, np.random.default_rng(seed))
    handles = [radio.add_ue() for _ in range(SINR_USERS)]
    mean_sinr = np.sort(radio.mean_sinr_db(handles))
    instantaneous = np.sort(radio.sinr_db(handles).ravel())
    for values, label in ((mean_sinr, "mean SINR"), (instantaneous, "instantaneous SINR per RB")):
        percentiles = ", ".join(f"p{q} {np.percentile(values, q):.1f} dB" for q in SINR_PERCENTILES)
        print(f"{label}: {percentiles}")
    figure = Figure(figsize=FIGURE_SIZE_IN)
    axes = figure.subplots()
    for values, label in (
        (mean_sinr, f"mean SINR (no fast fading), {len(mean_sinr)} users"),
        (instantaneous, f"instantaneous SINR per RB, {len(instantaneous)} user-RBs"),
    ):
        cdf = np.arange(1, len(values) + 1) / len(values)
        median = float(np.median(values))
        axes.plot(values, cdf, label=f"{label}; median {median:.1f} dB")
    axes.set_xlabel("SINR (dB)")
    axes.set_ylabel("CDF")
    axes.set_title(
        f"UMa, ISD {params.isd_m:g} m, {params.bs_tx_power_dbm:g} dBm over {params.num_rbs} RBs, "
        "omni sites, full-buffer interference from 6 sites,\nusers dropped where the serving site is the strongest",
        fontsize=9,
    )
    # The instantaneous SINR's extreme tails (deep fades, below 0.1 %) would stretch the axis for nothing.
    axes.set_xlim(*np.percentile(instantaneous, SINR_AXIS_PERCENTILES))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    path = out / "sinr_distribution.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def throughput_pf_vs_rr(out: Path, seed: int) -> Path:
    """Per-user full-buffer throughput of 20 dropped users under PF, round robin and max-C/I, same drops and fading."""
    params = load_radio_params(scenario="uma")
    duration_s = CELL_DURATION_S
    user_ids = [f"ue{i}" for i in range(CELL_USERS)]
    results = {}
    for name, *_ in SCHEDULERS:
        # Same seed per scheduler: the same drops, LOS states, shadowing and (all users always backlogged) fading.
        channel = RadioModel(params, np.random.default_rng(seed))
        cell = Cell(
            channel, make_scheduler(name), pf_window_slots=PF_WINDOW_SLOTS, stats_window_slots=STATS_WINDOW_SLOTS
        )
        for i, user_id in enumerate(user_ids):
            cell.attach(user_id)
            cell.enqueue(user_id, FULL_BUFFER_BITS, key=i, flow=0)
        started = time.perf_counter()
        AirInterface(cell).advance_to(duration_s)
        wall_s = time.perf_counter() - started
        traffic = [cell.traffic(user_id) for user_id in user_ids]
        results[name] = (
            np.array([channel.ue_state(cell.users[user_id].handle).mean_sinr_db for user_id in user_ids]),
            np.array([t.delivered_bits / duration_s for t in traffic]),
            np.array([t.granted_rbs for t in traffic], dtype=float),
            wall_s,
        )
    mean_sinr = results[SCHEDULERS[0][0]][0]
    order = np.argsort(mean_sinr)
    rank = np.arange(1, CELL_USERS + 1)
    figure = Figure(figsize=FIGURE_SIZE_IN)
    axes = figure.subplots()
    print(f"{'scheduler':<10} {'sum Mbit/s':>10} {'Jain':>6} {'min Mbit/s':>10} {'Jain RBs':>8} {'wall s':>7}")
    for name, label, colour, marker in SCHEDULERS:
        _, throughput_bps, rbs, wall_s = results[name]
        total_mbps, jain = throughput_bps.sum() / 1e6, jain_index(throughput_bps)
        print(
            f"{name:<10} {total_mbps:>10.1f} {jain:>6.3f} {throughput_bps.min() / 1e6:>10.3f} "
            f"{jain_index(rbs):>8.3f} {wall_s:>7.1f}"
        )
        mbps = throughput_bps[order] / 1e6
        starved = mbps < THROUGHPUT_FLOOR_MBPS
        legend = f"{label}: sum {total_mbps:.1f} Mbit/s, Jain {jain:.2f}"
        if starved.any():
            legend += f";\n{starved.sum()} users below {THROUGHPUT_FLOOR_MBPS * 1e3:g} kbit/s (hollow, at the floor)"
            axes.plot(
                rank[starved],
                np.full(starved.sum(), THROUGHPUT_FLOOR_MBPS),
                color=colour,
                marker=marker,
                markersize=5,
                markerfacecolor="none",
                linestyle="none",
                clip_on=False,
            )
        axes.plot(rank, np.where(starved, np.nan, mbps), color=colour, marker=marker, markersize=4, label=legend)
    axes.set_yscale("log")
    axes.set_ylim(bottom=THROUGHPUT_FLOOR_MBPS)
    # Rounded to whole dB; "+ 0.0" turns a -0 into 0.
    axes.set_xticks(rank, [f"{round(value) + 0.0:.0f}" for value in mean_sinr[order]], fontsize=8)
    axes.set_xlabel("users, sorted by mean SINR (dB)")
    axes.set_ylabel("throughput (Mbit/s)")
    axes.set_title(
        f"UMa, {CELL_USERS} users dropped in the cell, full buffer, {duration_s:g} s "
        f"({duration_s / params.slot_duration_s:.0f} slots), PF window {PF_WINDOW_SLOTS} slots, seed {seed}",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    path = out / "throughput_pf_vs_rr.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


FIGURES: dict[str, Callable[[Path, int], Path]] = {
    "pathloss": pathloss_vs_distance,
    "sinr": sinr_distribution,
    "throughput": throughput_pf_vs_rr,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/channel"), help="directory for the PNG files")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random drops and fading")
    parser.add_argument("--only", choices=sorted(FIGURES), nargs="+", help="draw only these figures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or FIGURES:
        print(FIGURES[name](args.out, args.seed))


if __name__ == "__main__":
    main()
