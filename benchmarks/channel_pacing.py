"""How late the live pacer releases chunks, and how fast the slot loop runs.

1. Release lateness: a constant-capacity channel delivers a token every 10 slots (5 ms); each
   delivered token is released with the pacer on the server's event loop (uvloop), and we record
   release time minus scheduled delivery time. Baseline, same run: plain deadline sleeps on the
   same loop (``release_at`` to the same deadlines, no pacer), i.e. the event loop's own timer error.
2. Slot loop speed: the 3GPP UMa model with 20 full-buffer users (the paper's cell) under PF, in
   virtual time; live pacing needs at least 2,000 slots per second of wall time (0.5 ms slots).
   benchmarks/slot_loop.py measures it in detail, today's loop beside the compiled one.
3. Release lateness under load: the same pacer on the UMa model with 7 scheduling cells of 20 users
   (issue 16), measured the same way on every token: (a) all 140 users stream tokens at 50 per second
   (an LLM's decoding pace); (b) all 140 users are backlogged (full buffer) and one more user per cell
   streams tokens. The baseline of (1) is the loop's own timer error.

    .venv/bin/python benchmarks/channel_pacing.py --tokens 2000 --out benchmarks/results/channel_pacing.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import uvloop

from edgecloud.channel import slot_kernel
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
LOADED_CELLS = 7
USERS_PER_CELL = 20
TOKEN_INTERVAL_S = 0.02  # 50 tokens per second per stream
FULL_BUFFER_BITS = 1e15


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


def loaded_cell(full_buffer: bool) -> Cell:
    """The UMa cell of (3), with the users of load (3a) or (3b): 7 scheduling cells, PF, seeded."""
    slot_kernel.compile_ahead()
    params = load_radio_params(scenario="uma", scheduling_cells=LOADED_CELLS)
    cell = Cell(RadioModel(params, np.random.default_rng(0)), make_scheduler("pf"), 100, 2000)
    backlogged, streaming = loaded_users(full_buffer)
    for user in backlogged + streaming:
        cell.attach(user)
    return cell


def loaded_users(full_buffer: bool) -> tuple[list[str], list[str]]:
    """The backlogged and the streaming users of load (3a) or (3b)."""
    backlogged = [f"b{i}" for i in range(LOADED_CELLS * USERS_PER_CELL)] if full_buffer else []
    streaming = [f"s{i}" for i in range(LOADED_CELLS if full_buffer else LOADED_CELLS * USERS_PER_CELL)]
    return backlogged, streaming


class LivePacer(Protocol):
    """What ``drive_load`` needs of a pacer: today's ``Pacer``, or ``pacer_process.ProcessPacer``."""

    def new_flow(self) -> int: ...

    def send(self, user_id: str, bits: float, flow: int, ready_at: float) -> asyncio.Future[float]: ...


async def drive_load(pacer: LivePacer, clock: RealClock, full_buffer: bool, seconds: float) -> list[float]:
    """Offer load (3a) or (3b) to a started pacer; the release lateness of every token."""
    backlogged, streaming = loaded_users(full_buffer)
    lateness: list[float] = []
    rng = np.random.default_rng(1)

    async def stream(user: str, offset_s: float) -> None:
        flow = pacer.new_flow()
        for k in range(int(seconds / TOKEN_INTERVAL_S)):
            delivered_at = await pacer.send(user, TOKEN_BITS, flow, ready_at=start + offset_s + k * TOKEN_INTERVAL_S)
            await release_at(clock, delivered_at)
            lateness.append(clock.now() - delivered_at)

    start = clock.now()
    for user in backlogged:
        pacer.send(user, FULL_BUFFER_BITS, pacer.new_flow(), ready_at=start)
    await asyncio.gather(*(stream(user, rng.uniform(0, TOKEN_INTERVAL_S)) for user in streaming))
    return lateness


async def loaded_pacer_lateness(seconds: float, full_buffer: bool) -> list[float]:
    """Release lateness of every token with 7 scheduling cells under load (see the module docstring, 3)."""
    cell = loaded_cell(full_buffer)
    gc.freeze()  # numba's objects out of the collector's view, as the channel service does
    clock = RealClock()
    pacer = Pacer(AirInterface(cell, start_time=clock.now()), clock, TICK_S)
    pacer.start()
    try:
        return await drive_load(pacer, clock, full_buffer, seconds)
    finally:
        await pacer.close()


def slot_loop_speed(users: int, seconds: float) -> dict[str, float]:
    slot_kernel.compile_ahead()
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
    parser.add_argument("--loaded-seconds", type=float, default=5.0, help="length of each run under load (3)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {
        "tick_ms": TICK_S * 1000,
        "pacer_release_lateness_ms": summary_ms(uvloop.run(pacer_lateness(args.tokens))),
        "baseline_timer_lateness_ms": summary_ms(uvloop.run(timer_lateness(args.tokens))),
        "slot_loop_uma_pf": slot_loop_speed(args.users, args.seconds),
        "loaded_7_cells_release_lateness_ms": {
            "140 token streams": summary_ms(uvloop.run(loaded_pacer_lateness(args.loaded_seconds, full_buffer=False))),
            "140 full-buffer users + 7 token streams": summary_ms(
                uvloop.run(loaded_pacer_lateness(args.loaded_seconds, full_buffer=True))
            ),
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
