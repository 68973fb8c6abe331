"""The sectorised radio model against the published 3GPP calibrations: coupling-gain and geometry CDFs (issue 16).

Runs each campaign of ``services/edgecloud/channel/data/calibration.yaml`` (drops of 570 users, 10 per sector:
``--drops`` for the direct-path signal strength, ``--multipath-drops`` for the multi-path one, about 30 times
slower), compares its 5th/50th/95th percentiles with the published ones in ``tests/data/calibration/`` (the same
figures the test uses), and draws the CDFs. Beside the two campaigns as configured it runs variants that show how
much each choice moves the percentiles: R1-165974 with the TR 38.900 V14.0.0 UMa LOS formula the companies ran;
RP-180524 with the direct-path signal strength (the previous model), with the below-6-GHz O2I model of TR 38.901
Table 7.4.3-3, with other building mixes, and with Table 7.2-1's heights and 35 m minimum distance. The variants
are reported, never compared with a tolerance: the configured campaigns are the result.

    nice -n 19 .venv/bin/python benchmarks/radio_calibration.py --drops 200 --multipath-drops 40

(about 2.5 minutes on the 2-core development machine, one core busy with other work). Writes
``benchmarks/results/radio_calibration.json`` (``--out``), ``docs/channel/calibration-rp-180524.png`` and
``docs/channel/calibration-r1-165974.png`` (``--plots``), and prints a markdown table. The R1-165974 plot draws
the band of the 20 companies' full CDFs, read from ``--published`` (``../shared/calibration`` beside the
repository); without that file the band is left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from edgecloud.channel.radio import calibration
from edgecloud.channel.radio.campaign import CalibrationCampaign, load_campaign

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "tests" / "data" / "calibration"
R1_165974 = "r1-165974_uma_6ghz"
RP_180524 = "rp-180524_uma_urllc_4ghz_model_a"
CAMPAIGNS = {  # campaign -> reference file, plot file, per-company CDF file in --published
    R1_165974: ("r1-165974_uma_6ghz.json", "calibration-r1-165974.png", "r1-165974_uma_6ghz.json"),
    RP_180524: ("rp-180524_uma_urllc_4ghz_model_a.json", "calibration-rp-180524.png", None),
}
PLOTTED_VARIANTS = {  # variants drawn beside the configured campaign, with their line style
    RP_180524: {
        "direct-path signal strength (the previous model)": ("tab:gray", ":"),
        "O2I model of Table 7.4.3-3 (below 6 GHz)": ("tab:green", "--"),
    },
}
TITLES = {
    R1_165974: "R1-165974: TR 38.901 large-scale calibration, UMa 6 GHz (20 companies)",
    RP_180524: "RP-180524: IMT-2020 calibration, UMa-URLLC 4 GHz, channel model A (mean of 15 companies)",
}
VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {  # what-if runs: label, field overrides
    R1_165974: [("UMa LOS formula of TR 38.900 V14.0.0", {"uma_los_formula": "tr38900"})],
    RP_180524: [
        ("direct-path signal strength (the previous model)", {"signal_strength": "direct_path"}),
        ("O2I model of Table 7.4.3-3 (below 6 GHz)", {"o2i_model": "legacy"}),
        ("20 % high-loss buildings", {"high_loss_fraction": 0.2}),
        ("all buildings high-loss", {"high_loss_fraction": 1.0}),
        ("Table 7.2-1 floors and 35 m minimum distance", {"building_floors": (4, 8), "min_distance_m": 35.0}),
    ],
}
METRICS = {"coupling_gain": "coupling gain (dB)", "geometry": "geometry, SINR without fast fading (dB)"}
COMPANY_METRICS = {"coupling_gain": "coupling_loss", "geometry": "geometry_sinr"}  # names in the R1-165974 file
LEVELS = calibration.REPORTED_PERCENTILES
CDF_POINTS = np.linspace(0.5, 99.5, 199)
DPI = 150
FIGURE_SIZE_IN = (10.0, 4.2)


def summarise(values: np.ndarray, published: dict[str, float]) -> dict[str, Any]:
    """Model percentiles, their standard errors and the differences to the published ones."""
    model = calibration.percentiles(values)
    return {
        f"p{level}": {
            "model": round(model[level], 3),
            "standard_error": round(calibration.percentile_standard_error(values, level), 3),
            "published": round(published[str(level)], 3),
            "difference": round(model[level] - published[str(level)], 3),
        }
        for level in LEVELS
    }


def run(campaign: CalibrationCampaign, drops: dict[str, int], seed: int) -> calibration.CalibrationSamples:
    """``drops[signal strength]`` drops of the campaign."""
    return calibration.run_campaign(campaign, np.random.default_rng(seed), drops[campaign.signal_strength])


def company_band(published_dir: Path, file_name: str | None, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(CDF levels, values per company) of the per-company CDFs, or None without the published file."""
    if file_name is None or not (published_dir / file_name).exists():
        return None
    document = json.loads((published_dir / file_name).read_text())["metrics"][COMPANY_METRICS[metric]]
    values = np.array([document["data"][company] for company in document["companies"]])
    return np.asarray(document["cdf_percentiles"]), values


def plot(
    path: Path,
    name: str,
    samples: calibration.CalibrationSamples,
    reference: dict[str, Any],
    published_dir: Path,
    variants: dict[str, calibration.CalibrationSamples],
) -> None:
    """The model's CDFs of both metrics against the published percentiles (and the companies' band if at hand)."""
    figure = Figure(figsize=FIGURE_SIZE_IN)
    for axes, metric in zip(figure.subplots(1, 2), METRICS, strict=True):
        values = getattr(samples, f"{metric}_db")
        band = company_band(published_dir, CAMPAIGNS[name][2], metric)
        if band is not None:
            levels, companies = band
            axes.fill_betweenx(levels, companies.min(axis=0), companies.max(axis=0), color="0.85", label="20 companies")
            axes.plot(np.median(companies, axis=0), levels, color="0.45", lw=1, ls="--", label="median of companies")
        axes.plot(np.percentile(values, CDF_POINTS), CDF_POINTS, color="tab:blue", lw=2, label="this model")
        for label, variant in variants.items():
            color, style = PLOTTED_VARIANTS[name][label]
            variant_values = getattr(variant, f"{metric}_db")
            axes.plot(np.percentile(variant_values, CDF_POINTS), CDF_POINTS, color=color, ls=style, lw=1.2, label=label)
        published = reference["metrics"][metric]["reference"]
        axes.plot(
            [published[str(level)] for level in LEVELS], LEVELS, "o", color="tab:red", label="published p5/p50/p95"
        )
        axes.set_xlabel(METRICS[metric])
        axes.set_ylabel("CDF (%)")
        axes.set_ylim(0, 100)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=7)
    figure.suptitle(TITLES[name])
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=200, help="drops of 570 users, direct-path signal strength")
    parser.add_argument("--multipath-drops", type=int, default=40, help="drops of 570 users, multi-path")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "radio_calibration.json")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "channel")
    parser.add_argument("--published", type=Path, default=ROOT.parent / "shared" / "calibration")
    args = parser.parse_args()

    drops = {"direct_path": args.drops, "multipath": args.multipath_drops}
    results: dict[str, Any] = {"drops": drops, "users_per_drop": calibration.USERS_PER_DROP, "seed": args.seed}
    rows = []
    for name, (reference_file, plot_file, _) in CAMPAIGNS.items():
        reference = json.loads((REFERENCES / reference_file).read_text())
        campaign = load_campaign(name)
        started = time.perf_counter()
        samples = run(campaign, drops, args.seed)
        entry: dict[str, Any] = {
            "seconds": round(time.perf_counter() - started, 2),
            "drops": drops[campaign.signal_strength],
            "campaign": dataclasses.asdict(campaign),
            "reference_provenance": reference["provenance"],
        }
        for metric in METRICS:
            entry[metric] = summarise(getattr(samples, f"{metric}_db"), reference["metrics"][metric]["reference"])
            rows.append((name, "as configured", metric, entry[metric]))
        entry["variants"] = {}
        plotted = {}
        for label, overrides in VARIANTS[name]:
            changed = dataclasses.replace(campaign, **overrides)
            variant = run(changed, drops, args.seed)
            if label in PLOTTED_VARIANTS.get(name, {}):
                plotted[label] = variant
            entry["variants"][label] = {"overrides": overrides, "drops": drops[changed.signal_strength]} | {
                metric: summarise(getattr(variant, f"{metric}_db"), reference["metrics"][metric]["reference"])
                for metric in METRICS
            }
            rows += [(name, label, metric, entry["variants"][label][metric]) for metric in METRICS]
        results[name] = entry
        plot(args.plots / plot_file, name, samples, reference, args.published, plotted)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("| campaign | run | metric | " + " | ".join(f"p{level} model / published / diff" for level in LEVELS) + " |")
    print("|---|---|---|" + "---|" * len(LEVELS))
    for name, label, metric, summary in rows:
        cells = " | ".join(
            f"{summary[f'p{level}']['model']:.1f} / {summary[f'p{level}']['published']:.1f} / "
            f"{summary[f'p{level}']['difference']:+.1f}"
            for level in LEVELS
        )
        print(f"| {name} | {label} | {metric} | {cells} |")


if __name__ == "__main__":
    main()
