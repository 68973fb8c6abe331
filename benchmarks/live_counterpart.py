"""The live counterpart of the virtual-time experiments: the load generator against the local testbed.

Starts ``scripts/testbed --sim`` (the paper's Llama-3-8B edge and GPT-4o cloud profiles, the decision
service, the gateway and the air interface with the emulator's default UMa cell), runs the load generator
through the air interface with the experiment file's workload (20 users, 40 % quality-preferred tasks of
its five types, 1,000 output tokens on average), then predicts every measured request in virtual time:
the same user, type, arrival, output length and route through the experiments' system model (eq. 3 with
the same profiles, eq. 1 through the same cell). The table puts measured and predicted t_total side by side.

    .venv/bin/python benchmarks/live_counterpart.py        # ~5 min; writes docs/live/
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from testbed_process import ROOT, start_testbed

from edgecloud.channel.settings import ChannelSettings
from edgecloud.core.reward import RewardParams, reward
from edgecloud.core.vocabulary import Action, ServiceType
from edgecloud.experiments.config import ExperimentConfig
from edgecloud.experiments.system import EdgeCloudSystem, Served
from edgecloud.experiments.workload import Task
from edgecloud.gateway.quality import QualityTable
from edgecloud.llmsim.profiles import load_profiles
from edgecloud.testbed.settings import TestbedSettings

ROUTE_ACTION = {"edge": Action.LOCAL, "cloud": Action.OFFLOAD}
PERCENTILES = (50, 90)
PREDICTION_SEED = 0
MS_PER_S = 1000.0


def run_loadgen(air_port: int, config: ExperimentConfig, args: argparse.Namespace, output_dir: Path) -> None:
    workload = config.workload
    types = ",".join(kind.value for kind in (*workload.regular_types, *workload.quality_types))
    command = [
        sys.executable, "-m", "edgecloud.loadgen",
        "--base-url", f"http://127.0.0.1:{air_port}/v1",
        "--num-users", str(workload.users),
        "--quality-share", str(workload.quality_share),
        "--service-types", types,
        "--output-tokens-mean", str(workload.mean_output_tokens),
        "--request-rate", str(args.request_rate),
        "--num-requests", str(args.num_requests),
        "--seed", str(config.seed),
        "--goodput", "e2e:30000",
        "--output-dir", str(output_dir),
    ]  # fmt: skip
    print("[live] " + " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def read_requests(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if not row["error_kind"] and row["route"] in ROUTE_ACTION]


def predict(rows: list[dict[str, str]], testbed: TestbedSettings) -> list[Served]:
    """Every measured request again in virtual time: same user, type, arrival, length and route."""
    profiles, quality = load_profiles(), QualityTable.load()
    edge, cloud = profiles[testbed.edge_sim_profile], profiles[testbed.cloud_sim_profile]
    users = sorted({row["user"] for row in rows})
    system = EdgeCloudSystem(edge, cloud, quality, ChannelSettings(), users, ChannelSettings().bytes_per_token,
                             edge.jitter, PREDICTION_SEED)  # fmt: skip
    decided = []
    for row in sorted(rows, key=lambda row: float(row["sent_s"])):
        kind = ServiceType(row["service_type"])
        task = Task(0, row["user"], float(row["sent_s"]), kind, int(row["output_tokens"]),
                    quality.default_requirement(kind))  # fmt: skip
        decided.append((system.outcomes(task), ROUTE_ACTION[row["route"]], "live"))
    return system.serve(decided)


def describe(values: list[float]) -> dict[str, float]:
    data = np.asarray(values)
    return {
        "n": int(data.size),
        "mean": float(data.mean()),
        **{f"p{p}": float(np.percentile(data, p)) for p in PERCENTILES},
    }


def compare(rows: list[dict[str, str]], predicted: list[Served], params: RewardParams) -> dict[str, dict]:
    by_id = sorted(rows, key=lambda row: float(row["sent_s"]))
    groups: dict[str, dict[str, list[float]]] = {}
    for row, served in zip(by_id, predicted, strict=True):
        for name in ("all", f"route={row['route']}", f"class={served.task.task_class}"):
            group = groups.setdefault(name, {key: [] for key in ("live", "virtual", "decision", "live_r", "virtual_r")})
            group["live"].append(float(row["e2e_ms"]) / MS_PER_S)
            group["virtual"].append(served.total_s)
            group["decision"].append(float(row["decision_latency_ms"] or 0) / MS_PER_S)
            group["live_r"].append(float(row["reward"]))
            group["virtual_r"].append(reward(params, served.transmission_s, served.generation_s, served.quality_met))
    return {
        name: {
            "live_e2e_s": describe(group["live"]),
            "virtual_t_total_s": describe(group["virtual"]),
            "difference_of_means": (np.mean(group["live"]) - np.mean(group["virtual"])) / np.mean(group["virtual"]),
            "live_decision_wait_s": float(np.mean(group["decision"])),
            "difference_without_decision_wait": (
                np.mean(group["live"]) - np.mean(group["decision"]) - np.mean(group["virtual"])
            )
            / np.mean(group["virtual"]),
            "live_reward": float(np.mean(group["live_r"])),
            "virtual_reward": float(np.mean(group["virtual_r"])),
        }
        for name, group in sorted(groups.items())
    }


def markdown(table: dict[str, dict]) -> str:
    lines = [
        "| requests | n | live e2e mean / p50 / p90 (s) | virtual t_total mean / p50 / p90 (s) | difference | "
        "live decision wait (s) | difference without it | reward live / virtual |",
        "|---|---:|---|---|---:|---:|---:|---|",
    ]
    for name, row in table.items():
        live, virtual = row["live_e2e_s"], row["virtual_t_total_s"]
        lines.append(
            f"| {name} | {live['n']} | {live['mean']:.2f} / {live['p50']:.2f} / {live['p90']:.2f} | "
            f"{virtual['mean']:.2f} / {virtual['p50']:.2f} / {virtual['p90']:.2f} | "
            f"{row['difference_of_means']:+.1%} | {row['live_decision_wait_s']:.2f} | "
            f"{row['difference_without_decision_wait']:+.1%} | {row['live_reward']:.2f} / {row['virtual_reward']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request-rate", type=float, default=0.5, help="requests/s (Poisson)")
    parser.add_argument("--num-requests", type=int, default=90)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "docs" / "live")
    parser.add_argument("--compare-only", action="store_true", help="compare an existing run's requests.csv again")
    args = parser.parse_args()
    config = ExperimentConfig.load()
    if not args.compare_only:
        with tempfile.TemporaryDirectory(prefix="live-testbed-") as state:
            testbed = start_testbed(Path(state))
            try:
                run_loadgen(testbed.ports["air"], config, args, args.output_dir / "loadgen")
            finally:
                testbed.stop()
    rows = read_requests(args.output_dir / "loadgen" / "requests.csv")
    params = RewardParams(config.decision.target_delay_s, config.decision.quality_penalty)
    table = compare(rows, predict(rows, TestbedSettings()), params)
    (args.output_dir / "comparison.json").write_text(json.dumps(table, indent=1) + "\n")
    (args.output_dir / "comparison.md").write_text(markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
