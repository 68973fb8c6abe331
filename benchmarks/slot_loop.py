"""How much faster than real time the slot loop runs: today's Python loop beside the compiled one.

Backlogged users (full buffer) on the 3GPP UMa model under PF, 51 RBs, 0.5 ms slots, in virtual time;
real-time factor = virtual seconds / wall seconds (live pacing needs at least 1). Each configuration is
run by both loops (``Cell(compiled=False)``: the Python loop, today's; ``compiled=True``: ``slot_kernel``),
alternating, ``--repeats`` times; the table reports the median and the best repeat (the machine's two
cores are shared, so the spread is reported, not hidden). Configurations:

- the targets: one cell with 20 users; 7 scheduling cells with 20 users each, neighbours interfering
  always (full buffer) and as they actually scheduled (``interference_activity: scheduled``);
- the curves: 5 to 160 users in one cell; 1 to 7 scheduling cells of 20 users.

    .venv/bin/python benchmarks/slot_loop.py --out benchmarks/results/slot_loop.json \\
        --plot docs/channel/slot-loop-speed.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecloud.channel.air import AirInterface, Transmission
from edgecloud.channel.cell import Cell
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params
from edgecloud.channel.schedulers import make_scheduler

FULL_BUFFER_BITS = 1e15  # never drains within a run
PF_WINDOW_SLOTS = 100  # the channel service's default (channel/settings.py)
STATS_WINDOW_SLOTS = 2000
WARM_UP_S = 0.01  # compiles the kernel and fills the PF averages before timing
TARGET_USERS = 20  # the paper's cell
USER_CURVE = (5, 10, 20, 40, 80, 160)
CELL_CURVE = (1, 2, 3, 4, 5, 6, 7)


@dataclass
class Run:
    """One configuration driven by one loop: a cell with its air interface, timed in spans of virtual time."""

    name: str
    compiled: bool
    air: AirInterface
    span_s: float
    now_s: float = WARM_UP_S
    factors: list[float] = field(default_factory=list)

    def step(self) -> None:
        started = time.perf_counter()
        self.air.advance_to(self.now_s + self.span_s)
        self.factors.append(self.span_s / (time.perf_counter() - started))
        self.now_s += self.span_s

    def summary(self) -> dict[str, Any]:
        return {
            "configuration": self.name,
            "loop": "compiled" if self.compiled else "python",
            "users": len(self.air.cell.users),
            "real_time_factor_median": round(statistics.median(self.factors), 2),
            "real_time_factor_best": round(max(self.factors), 2),
            "repeats": len(self.factors),
        }


def backlogged_cell(users_per_cell: int, cells: int, compiled: bool, seed: int, **radio: Any) -> AirInterface:
    channel = RadioModel(
        load_radio_params(scenario="uma", scheduling_cells=cells, **radio), np.random.default_rng(seed)
    )
    cell = Cell(channel, make_scheduler("pf"), PF_WINDOW_SLOTS, STATS_WINDOW_SLOTS, compiled=compiled)
    air = AirInterface(cell)
    for index in range(users_per_cell * cells):
        cell.attach(f"u{index}")
        air.submit(Transmission(f"u{index}", 0.0, FULL_BUFFER_BITS, key=index))
    air.advance_to(WARM_UP_S)
    return air


def span_for(users: int, compiled: bool) -> float:
    """Virtual seconds per timed repeat: about 0.2 s of wall time for either loop."""
    slot_cost_s = (0.6e-6 if compiled else 15e-6) * users + (5e-6 if compiled else 60e-6)
    return float(np.clip(0.2 / slot_cost_s * 0.5e-3, 0.01, 2.0))


def configurations() -> list[tuple[str, int, int, dict[str, Any]]]:
    """(name, users per cell, cells, radio overrides) of every measured point."""
    points = [
        ("target: 1 cell", TARGET_USERS, 1, {}),
        ("target: 7 cells, full-buffer neighbours", TARGET_USERS, 7, {}),
        ("target: 7 cells, scheduled neighbours", TARGET_USERS, 7, {"interference_activity": "scheduled"}),
    ]
    points += [(f"users: {users}", users, 1, {}) for users in USER_CURVE if users != TARGET_USERS]
    points += [(f"cells: {cells}", TARGET_USERS, cells, {}) for cells in CELL_CURVE if cells not in (1, 7)]
    return points


def measure(repeats: int, seed: int, python_curves: bool) -> list[dict[str, Any]]:
    runs: list[Run] = []
    for name, users, cells, radio in configurations():
        loops = (False, True) if name.startswith("target") or python_curves else (True,)
        for compiled in loops:
            air = backlogged_cell(users, cells, compiled, seed, **radio)
            runs.append(Run(name, compiled, air, span_for(users * cells, compiled)))
    for _ in range(repeats):
        for run in runs:  # alternating, so a slow patch of the machine hits every configuration alike
            run.step()
    return [run.summary() for run in runs]


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_users, by_cells) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for loop, style in (("compiled", "o-"), ("python", "s--")):
        mine = [r for r in results if r["loop"] == loop]
        users = sorted(
            (r for r in mine if r["configuration"].startswith("users") or r["configuration"] == "target: 1 cell"),
            key=lambda r: r["users"],
        )
        cells = sorted(
            (
                r
                for r in mine
                if r["configuration"].startswith("cells")
                or r["configuration"] in ("target: 1 cell", "target: 7 cells, full-buffer neighbours")
            ),
            key=lambda r: r["users"],
        )
        if users:
            by_users.plot([r["users"] for r in users], [r["real_time_factor_median"] for r in users], style, label=loop)
        if cells:
            by_cells.plot(
                [r["users"] // TARGET_USERS for r in cells],
                [r["real_time_factor_median"] for r in cells],
                style,
                label=loop,
            )
    for axis, label, target in (
        (by_users, "backlogged users in one cell", 50),
        (by_cells, "scheduling cells of 20 users", 10),
    ):
        axis.axhline(1, color="grey", lw=0.8)
        axis.axhline(target, color="tab:red", lw=0.8, ls=":", label=f"target {target}x")
        axis.set_xlabel(label)
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    by_users.set_xscale("log")
    by_users.set_ylabel("real-time factor (median)")
    figure.suptitle("Slot loop speed: UMa, PF, 51 RBs, 0.5 ms slots, full buffer")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def cpu_model() -> str:
    """The processor's name: the speeds differ by about two between the machines this project runs on."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python-curves", action="store_true", help="also run the Python loop on the curves")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    results = measure(args.repeats, args.seed, args.python_curves)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(
            json.dumps({"command": "benchmarks/slot_loop.py", "cpu": cpu_model(), "results": results}, indent=2) + "\n"
        )
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
