"""The live pacer with its slot loop in a process of its own, beside today's in-loop pacer (issue 16).

Today the pacer's ticker runs ``AirInterface.advance_to`` on the server's event loop: each wake-up
blocks the loop for 0.6-1.5 ms with 7 scheduling cells (BENCHMARKS.md), which delays every other
timer on it. A thread does not help, since the cell's Python bookkeeping holds the GIL. Here the
same ``AirInterface`` runs in a child process without an event loop. The child waits in
``select`` (microsecond timeouts) until the next slot start or the next message, queues the
submissions it received, runs the slots that have started, and sends their deliveries back in one
message. The event loop only batches its sends, once per loop iteration, resolves the futures
when the child's message arrives, and sleeps until each delivery time as today (``release_at``).
Both processes read ``time.monotonic`` (CLOCK_MONOTONIC, one clock for the whole machine), so
the child's slot times are the parent's.

Same loads as ``channel_pacing.py`` (3a, 3b), the same seeded cell, and the event loop's own timer
lateness as the baseline. Each round runs, in turn: the timer, then each load with the in-loop pacer
and then with the process pacer.

    .venv/bin/python benchmarks/pacer_process.py --rounds 4 --out benchmarks/results/pacer_process.json

This is a measurement of the design, not the channel service's pacer. The service also reads the
cell's state synchronously (attach and detach, the UE's radio state, the traffic gauges), so moving
it into the child needs those calls over the same channel.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import multiprocessing
import os
import select
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop
from channel_pacing import TOKEN_BITS, drive_load, loaded_cell, loaded_pacer_lateness, summary_ms, timer_lateness

from edgecloud.channel.air import AirInterface, Transmission
from edgecloud.channel.pacing import ChunkKey
from edgecloud.core.clock import RealClock

# (user, bits, flow, key, ready time): one submission, as the parent sends it.
Submission = tuple[str, float, int, ChunkKey, float]
LOAD_NAMES = {False: "140 token streams", True: "140 full-buffer users + 7 token streams"}


def run_air(connection: Connection, full_buffer: bool, lead_s: float, tick_s: float) -> None:
    """The child: the cell of ``channel_pacing.loaded_cell`` driven by the wall clock until told to stop.

    Each slot is decided ``lead_s`` before it begins, from the submissions the child holds by then,
    and the child runs at most once per ``tick_s`` (an ``advance_to`` costs ~0.4 ms however few slots).
    With no lead, a slot is decided at its start, as today's pacer does, and its deliveries, due
    one slot later, reach the event loop late whenever a run takes longer than a slot. A real gNB
    also prepares its transmissions ahead of the air (OpenAirInterface's ``sf_ahead``: 3 ms).
    """
    cell = loaded_cell(full_buffer)
    gc.freeze()  # numba's objects out of the collector's view, as the channel service does
    air = AirInterface(cell, start_time=time.monotonic())
    connection.send(air.start_time)
    advance_s: list[float] = []
    advance_cpu_s: list[float] = []
    last_advance = -math.inf

    def next_run() -> float:
        return max(air.next_event_time() - lead_s, last_advance + tick_s)

    while True:
        wake = next_run()
        timeout = None if wake == math.inf else max(wake - time.monotonic(), 0.0)
        readable, _, _ = select.select([connection], [], [], timeout)
        while readable:
            batch: list[Submission] | None = connection.recv()
            if batch is None:
                connection.send({"wall": advance_s, "cpu": advance_cpu_s})
                return
            for user, bits, flow, key, ready_at in batch:
                air.submit(Transmission(user, ready_at, bits, key, flow))
            readable, _, _ = select.select([connection], [], [], 0)
        if (now := time.monotonic()) < next_run():
            continue  # only submissions arrived
        last_advance, cpu = now, time.thread_time()
        deliveries = air.advance_to(now + lead_s)
        advance_s.append(time.monotonic() - now)
        advance_cpu_s.append(time.thread_time() - cpu)
        if deliveries:
            connection.send([(delivery.key, delivery.time) for delivery in deliveries])


class ProcessPacer:
    """``Pacer.send`` and ``new_flow`` in front of a child process running the air interface."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._waiting: dict[ChunkKey, asyncio.Future[float]] = {}
        self._outbox: list[Submission] = []
        self._flows = itertools.count(1)
        self._sequence = itertools.count()
        self.receipt_lead_s: list[float] = []  # delivery time minus the time its message arrived
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(connection.fileno(), self._receive)
        # uvloop made the socket non-blocking; a message read must not stop half-way, nor a send fail.
        os.set_blocking(connection.fileno(), True)

    def close(self) -> dict[str, list[float]]:
        """Stop the child; the wall and CPU time of each of its ``advance_to`` calls."""
        self._loop.remove_reader(self._connection.fileno())
        self._connection.send(None)
        while not isinstance(reply := self._connection.recv(), dict):
            pass  # deliveries still on their way
        return reply

    def new_flow(self) -> int:
        return next(self._flows)

    def send(self, user_id: str, bits: float, flow: int, ready_at: float) -> asyncio.Future[float]:
        key = (flow, next(self._sequence))
        future = self._loop.create_future()
        self._waiting[key] = future
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append((user_id, bits, flow, key, ready_at))
        return future

    def _flush(self) -> None:
        self._connection.send(self._outbox)
        self._outbox = []

    def _receive(self) -> None:
        now = time.monotonic()
        for key, delivered_at in self._connection.recv():
            self.receipt_lead_s.append(delivered_at - now)
            future = self._waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result(delivered_at)


async def process_pacer_lateness(seconds: float, full_buffer: bool, lead_s: float, tick_s: float) -> dict[str, Any]:
    """Load (3a) or (3b) on the process pacer: release lateness, and where it comes from."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=run_air, args=(child_end, full_buffer, lead_s, tick_s))
    child.start()
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, parent_end.poll, None)  # the child compiles or loads its kernel first
        parent_end.recv()
        pacer = ProcessPacer(parent_end)
        try:
            lateness = await drive_load(pacer, RealClock(), full_buffer, seconds)
        finally:
            advance = pacer.close()
        return {
            "release lateness": summary_ms(lateness),
            "child: advance_to wall time": summary_ms(advance["wall"]),
            "child: advance_to CPU time": summary_ms(advance["cpu"]),
            "delivery time minus its message's arrival": summary_ms(pacer.receipt_lead_s),
            "share of deliveries whose message came after their time": round(
                sum(lead < 0 for lead in pacer.receipt_lead_s) / len(pacer.receipt_lead_s), 5
            ),
        }
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


def one_round(tokens: int, seconds: float, variants: list[tuple[float, float]]) -> dict[str, Any]:
    """The timer, then each load with the in-loop pacer and with the process pacer at each (lead, tick)."""
    result: dict[str, Any] = {"timer_lateness_ms": summary_ms(uvloop.run(timer_lateness(tokens)))}
    for full_buffer, name in LOAD_NAMES.items():
        result[name] = {"in-loop pacer": summary_ms(uvloop.run(loaded_pacer_lateness(seconds, full_buffer)))} | {
            f"process pacer, lead {lead_s * 1000:g} ms, tick {tick_s * 1000:g} ms": uvloop.run(
                process_pacer_lateness(seconds, full_buffer, lead_s, tick_s)
            )
            for lead_s, tick_s in variants
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=2000, help="timer baseline: deadlines 5 ms apart")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each loaded run")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["0:1", "3:1"],
        help="process pacers to measure, LEAD:TICK in ms: how long before its start a slot is decided, "
        "and the child's shortest interval between runs",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = [(float(lead) / 1000, float(tick) / 1000) for lead, tick in (pair.split(":") for pair in args.variants)]
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(args.tokens, args.seconds, variants))
        print(json.dumps({"round": index + 1} | rounds[-1]), flush=True)
    result = {"token_bits": TOKEN_BITS, "seconds_per_run": args.seconds, "rounds": rounds}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
