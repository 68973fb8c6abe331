"""How late the live pacer releases chunks, and how fast the slot loop runs.

1. Release lateness: a constant-capacity channel delivers a token every 10 slots (5 ms); each
   delivered token is released with the pacer on the server's event loop (uvloop), and we record
   release time minus scheduled delivery time. Baseline, same run: plain deadline sleeps on the
   same loop (``release_at`` to the same deadlines, no pacer), i.e. the event loop's own timer error.
2. Slot loop speed: the 3GPP UMa model with 20 full-buffer users (the paper's cell) under PF, in
   virtual time; live pacing needs at least 2,000 slots per second of wall time (0.5 ms slots).

    .venv/bin/python benchmarks/channel_pacing.py --tokens 2000 --out benchmarks/results/channel_pacing.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import uvloop

from edgecloud.channel.air import AirInterface, Transmission
from edgecloud.channel.cell import Cell
from edgecloud.channel.pacing import Pacer, release_at
from edgecloud.channel.radio.constant import ConstantCapacityChannel
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params
from edgecloud.channel.schedulers import make_scheduler
from edgecloud.core.clock import RealClock

SLOT_S = 0.5e-3
TOKEN_BITS = 32
SLOTS_PER_TOKEN = 10
TICK_S = 0.002


def summary_ms(values: list[float]) -> dict[str, float]:
    array = np.array(values) * 1000
    return {f"p{q}": round(float(np.percentile(array, q)), 3) for q in (50, 90, 99)} | {
        "max": round(float(array.max()), 3),
        "min": round(float(array.min()), 3),
    }


async def pacer_lateness(tokens: int) -> list[float]:
    capacity = TOKEN_BITS / (SLOTS_PER_TOKEN * SLOT_S)
    cell = Cell(ConstantCapacityChannel(capacity, 51, 360e3, SLOT_S), make_scheduler("pf"), 100, 2000)
    cell.attach("user")
    clock = RealClock()
    air = AirInterface(cell, start_time=clock.now())
    pacer = Pacer(air, clock, TICK_S)
    pacer.start()
    lateness = []
    try:
        futures = [pacer.send("user", TOKEN_BITS, flow=1, ready_at=air.start_time) for _ in range(tokens)]
        for future in futures:
            delivered_at = await future
            await release_at(clock, delivered_at)
            lateness.append(clock.now() - delivered_at)
    finally:
        await pacer.close()
    return lateness


async def timer_lateness(tokens: int) -> list[float]:
    clock = RealClock()
    start = clock.now()
    lateness = []
    for k in range(1, tokens + 1):
        deadline = start + k * SLOTS_PER_TOKEN * SLOT_S
        await release_at(clock, deadline)
        lateness.append(clock.now() - deadline)
    return lateness


def slot_loop_speed(users: int, seconds: float) -> dict[str, float]:
    channel = RadioModel(load_radio_params(scenario="uma"), np.random.default_rng(0))
    cell = Cell(channel, make_scheduler("pf"), 100, 2000)
    air = AirInterface(cell)
    for index in range(users):
        cell.attach(f"u{index}")
        air.submit(Transmission(f"u{index}", 0.0, 1e15, key=index))
    started = time.perf_counter()
    air.advance_to(seconds)
    wall = time.perf_counter() - started
    return {
        "users": users,
        "virtual_s": seconds,
        "wall_s": round(wall, 3),
        "slots_per_wall_s": round(cell.slot / wall),
        "real_time_factor": round(seconds / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {
        "tick_ms": TICK_S * 1000,
        "pacer_release_lateness_ms": summary_ms(uvloop.run(pacer_lateness(args.tokens))),
        "baseline_timer_lateness_ms": summary_ms(uvloop.run(timer_lateness(args.tokens))),
        "slot_loop_uma_pf": slot_loop_speed(args.users, args.seconds),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
