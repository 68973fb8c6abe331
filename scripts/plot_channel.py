"""Figures of the channel emulator's radio model, written as PNGs for docs/radio-model.md.

    .venv/bin/python scripts/plot_channel.py --out docs/channel

One function per figure, each taking the output directory and a seed and returning the file it wrote;
``FIGURES`` lists them, so a new figure is one function and one entry. Matplotlib is used through its
object API (``Figure``), which renders PNGs with the Agg backend and needs no display or pyplot state.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from edgecloud.channel.radio import pathloss
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params

DISTANCE_RANGE_M = (10.0, 2000.0)
DISTANCE_POINTS = 400
SINR_USERS = 2000
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
        "omni sites, full-buffer interference from 6 sites",
        fontsize=9,
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    path = out / "sinr_distribution.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


FIGURES: dict[str, Callable[[Path, int], Path]] = {
    "pathloss": pathloss_vs_distance,
    "sinr": sinr_distribution,
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
