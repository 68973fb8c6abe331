"""Two cells in containers: users of each cell served through their own air interface, sharing the cloud, the
decision service and Redis; each cell's experience pool learns on its own.

Brings up ``scripts/compose-testbed up sim --two-cells`` (deploy/compose/two-cells.yml): cell-0's users at
``:8080/v1``, cell-1's at ``:8081/v1``. Each cell gets ``--users`` users sending ``--requests`` streamed
chat and coding requests each, the type stated, one at a time per user. Per cell, from the client: delivered
TTFT (median, p90) and answers; from Prometheus, by its ``cell`` target label: the air interface's delivered
TTFT median, the gateway's requests by route, and the decision service's pool size per cell. Writes
``benchmarks/results/two_cells.json`` and prints a Markdown table.

    .venv/bin/python benchmarks/two_cells.py            # ~3 min with the image build cached
    .venv/bin/python benchmarks/two_cells.py --keep     # leave the project running afterwards
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from fault_load import PROMPTS, Outcome, one_request

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "two_cells.json"
SCRIPT = ROOT / "scripts" / "compose-testbed"
CELLS = {"cell-0": "http://127.0.0.1:8080/v1", "cell-1": "http://127.0.0.1:8081/v1"}
PROMETHEUS_URL = "http://127.0.0.1:9090"
SCRAPE_SETTLE_S = 12.0  # two scrapes at 5 s (deploy/prometheus/prometheus.two-cells.yml) after the last answer


async def drive(users: int, requests: int, seed: int) -> dict[str, list[Outcome]]:
    """``requests`` streamed requests of each of ``users`` users per cell, one at a time per user
    (``fault_load.one_request``: the same prompts and outcomes as the fault runs)."""
    rng = random.Random(seed)
    plans = {(cell, f"{cell}-user-{n}"): [rng.choice(list(PROMPTS)) for _ in range(requests)]
             for cell in CELLS for n in range(users)}  # fmt: skip
    records: dict[str, list[Outcome]] = {cell: [] for cell in CELLS}
    started = time.monotonic()

    async def user(http: httpx.AsyncClient, cell: str, name: str, types: list[str]) -> None:
        url = f"{CELLS[cell]}/chat/completions"
        for service_type in types:
            records[cell].append(await one_request(http, url, service_type, started, user=name))

    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(*(user(http, cell, name, types) for (cell, name), types in plans.items()))
    return records


def prometheus(query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{PROMETHEUS_URL}/api/v1/query", params={"query": query}, timeout=10)
    answer.raise_for_status()
    return list(answer.json()["data"]["result"])


def by_label(results: list[dict[str, Any]], *labels: str) -> dict[str, float]:
    return {"/".join(r["metric"].get(label, "") for label in labels): round(float(r["value"][1]), 4) for r in results}


def summarize(records: dict[str, list[Outcome]], args: argparse.Namespace) -> dict[str, Any]:
    delivered = by_label(prometheus(
        "histogram_quantile(0.5, sum by (cell, le) (edgecloud_channel_delivered_time_to_first_token_seconds_bucket))"
    ), "cell")  # fmt: skip
    routes = by_label(prometheus("sum by (cell, route) (edgecloud_gateway_requests_total)"), "cell", "route")
    pools = by_label(prometheus("edgecloud_decision_pool_size"), "cell", "policy")

    def of_cell(figures: dict[str, float], cell: str) -> dict[str, float]:
        return {key.split("/", 1)[1]: value for key, value in figures.items() if key.startswith(f"{cell}/")}

    cells = {}
    for cell, cell_records in records.items():
        ttfts = sorted(r.ttft_s for r in cell_records if r.result == "ok" and r.ttft_s is not None)
        seen = {route: sum(r.route == route for r in cell_records) for route in ("edge", "cloud")}
        cells[cell] = {
            "requests": len(cell_records),
            "answered": len(ttfts),
            "client_ttft_median_s": round(statistics.median(ttfts), 3) if ttfts else None,
            "client_ttft_p90_s": round(ttfts[int(0.9 * (len(ttfts) - 1))], 3) if ttfts else None,
            "routes_seen_by_client": seen,
            "air_delivered_ttft_median_s": delivered.get(cell),
            "gateway_requests_by_route": of_cell(routes, cell),
            "pool_size": of_cell(pools, cell),
        }
    return {
        "command": f".venv/bin/python benchmarks/two_cells.py --users {args.users} --requests {args.requests}",
        "cells": cells,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| cell | requests | answered | TTFT at the client, median / p90 (s) "
        "| delivered TTFT median, air interface (s) | edge / cloud (gateway) | pool examples |",
        "|---|---:|---:|---|---:|---|---:|",
    ]
    for cell, figures in result["cells"].items():
        routes = figures["gateway_requests_by_route"]
        lines.append(
            f"| {cell} | {figures['requests']} | {figures['answered']} | {figures['client_ttft_median_s']} / "
            f"{figures['client_ttft_p90_s']} | {figures['air_delivered_ttft_median_s']} | "
            f"{routes.get('edge', 0):g} / {routes.get('cloud', 0):g} | {sum(figures['pool_size'].values()):g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4, help="users per cell")
    parser.add_argument("--requests", type=int, default=12, help="requests per user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the project running")
    args = parser.parse_args()
    subprocess.run([str(SCRIPT), "up", "sim", "--two-cells"], cwd=ROOT, check=True, timeout=1800)
    try:
        records = asyncio.run(drive(args.users, args.requests, args.seed))
        time.sleep(SCRAPE_SETTLE_S)
        result = summarize(records, args)
    finally:
        if not args.keep:
            subprocess.run([str(SCRIPT), "down"], cwd=ROOT, timeout=300)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
