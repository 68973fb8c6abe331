"""The compiled slot loop (channel/slot_kernel.py) against the Python one it transcribes, and its own pieces.

The Python path of ``Cell`` (``compiled=False``) is today's loop; the kernel must hand out the same grants,
bits and deliveries, slot for slot, for every scheduler it covers, one cell or seven, any queue sizes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgecloud.channel import slot_kernel
from edgecloud.channel.air import AirInterface, Delivery, Transmission
from edgecloud.channel.cell import Cell
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params
from edgecloud.channel.schedulers import make_scheduler

SLOT_S = 0.5e-3
TOKEN_BITS = 32.0


def radio_cell(scheduler: str, compiled: bool, seed: int = 5, **overrides: Any) -> Cell:
    channel = RadioModel(load_radio_params(**overrides), np.random.default_rng(seed))
    return Cell(channel, make_scheduler(scheduler), pf_window_slots=100, stats_window_slots=2000, compiled=compiled)


def mixed_traffic(users: int, seconds: float, seed: int) -> list[Transmission]:
    """Long bodies that keep their user backlogged for a while, token streams (items far smaller than a slot's
    grant, every seventh one empty, as an SSE comment is) and bodies of a few kbit to a few hundred."""
    rng = np.random.default_rng(seed)
    transmissions = []
    for user in range(users):
        kind = user % 3
        if kind == 0:
            transmissions += [Transmission(f"u{user}", start, 2e6, key=(user, i)) for i, start in enumerate((0.0, 0.2))]
        elif kind == 1:
            times = np.sort(rng.uniform(0, seconds, 40))
            transmissions += [
                Transmission(f"u{user}", float(t), TOKEN_BITS if i % 7 else 0.0, key=(user, i))
                for i, t in enumerate(times)
            ]
        else:
            times = np.sort(rng.uniform(0, seconds, 4))
            sizes = rng.uniform(1e3, 2e5, 4)
            transmissions += [
                Transmission(f"u{user}", float(t), float(b), key=(user, i))
                for i, (t, b) in enumerate(zip(times, sizes, strict=True))
            ]
    return transmissions


def run(cell: Cell, users: int, transmissions: list[Transmission], until_s: float, tick_s: float) -> list[Delivery]:
    for user in range(users):
        cell.attach(f"u{user}")
    air = AirInterface(cell)
    for transmission in transmissions:
        air.submit(transmission)
    deliveries = []
    now = 0.0
    while now < until_s:
        now += tick_s
        deliveries += air.advance_to(now)
    return deliveries


def traffic(cell: Cell) -> list[tuple[float, float, int, int, float]]:
    rows = []
    for user_id in sorted(cell.users):
        t = cell.traffic(user_id)
        rows.append((t.delivered_bits, t.granted_bits, t.granted_rbs, t.backlogged_slots, t.average_bps))
    return rows


@pytest.mark.parametrize(
    ("scheduler", "overrides"),
    [
        ("pf", {}),
        ("maxci", {}),
        ("pf", {"activity_factor": 0.5, "fading_block_slots": 4}),
        ("pf", {"scheduling_cells": 7}),
        ("pf", {"scheduling_cells": 7, "interference_activity": "scheduled"}),
        ("pf", {"fast_fading": False}),
    ],
)
def test_compiled_slots_equal_the_python_loop(scheduler, overrides):
    users, seconds = 14 if overrides.get("scheduling_cells") else 9, 0.4
    transmissions = mixed_traffic(users, seconds, seed=3)
    compiled = radio_cell(scheduler, compiled=True, **overrides)
    python = radio_cell(scheduler, compiled=False, **overrides)
    assert compiled.compiled and not python.compiled
    fast = run(compiled, users, transmissions, seconds, tick_s=0.002)
    slow = run(python, users, transmissions, seconds, tick_s=0.002)
    assert len(fast) > 100
    assert fast == slow
    counters, averages = zip(*((row[:4], row[4]) for row in traffic(compiled)), strict=True)
    python_counters, python_averages = zip(*((row[:4], row[4]) for row in traffic(python)), strict=True)
    assert counters == python_counters
    # The PF averages to rounding: a slot inside a batch in which nobody waits (arrivals are queued inside batches)
    # decays them one slot at a time, where the Python loop's idle stretch multiplies by (1 - 1/W)^n at once.
    assert averages == pytest.approx(python_averages, rel=1e-12)
    assert (compiled.slot, compiled.cell_throughput_bps) == (python.slot, pytest.approx(python.cell_throughput_bps))
    assert compiled.rb_utilisation == pytest.approx(python.rb_utilisation)


def test_the_schedule_does_not_depend_on_how_often_the_loop_is_driven():
    users, seconds = 9, 0.3
    transmissions = mixed_traffic(users, seconds, seed=8)
    often = run(radio_cell("pf", compiled=True, activity_factor=0.5), users, transmissions, seconds, tick_s=0.0005)
    rarely = run(radio_cell("pf", compiled=True, activity_factor=0.5), users, transmissions, seconds, tick_s=0.05)
    assert sorted(often, key=repr) == sorted(rarely, key=repr)


def test_a_tick_runs_one_compiled_batch_whatever_the_slots_its_arrivals_fall_in(monkeypatch):
    # Arrivals are queued inside the batch, at their slots: before, every slot at which something arrived cost a
    # batch of its own (and its Python bookkeeping), which is what made the loaded live pacer late.
    streams, seconds, tick_s = 13, 0.2, 0.005  # ticks of 10 slots; 13 streams of 200 tokens/s, one full buffer
    rng = np.random.default_rng(4)
    transmissions = [Transmission("u0", 0.0, 1e12, key="full")] + [
        Transmission(f"u{user}", float(t), TOKEN_BITS, key=(user, i))
        for user in range(1, streams + 1)
        for i, t in enumerate(np.sort(rng.uniform(0.0, seconds, int(200 * seconds))))
    ]
    batches = []
    run_slots = slot_kernel.run_slots
    monkeypatch.setattr(slot_kernel, "run_slots", lambda *args: batches.append(args[2]) or run_slots(*args))
    cell = radio_cell("pf", compiled=True, scheduling_cells=7)
    deliveries = run(cell, streams + 1, transmissions, seconds, tick_s)
    ticks = round(seconds / tick_s)
    arrival_slots_per_tick = len({(math.ceil(t.ready_time / SLOT_S - 1e-9)) for t in transmissions}) / ticks
    assert arrival_slots_per_tick > 5  # the old loop ran a batch for each of these
    assert len(batches) == ticks
    assert len(deliveries) > 0.9 * (len(transmissions) - 1)


def test_round_robin_and_the_constant_channel_stay_on_the_python_path():
    assert not radio_cell("rr", compiled=True).compiled
    from edgecloud.channel.radio.constant import ConstantCapacityChannel

    constant = Cell(ConstantCapacityChannel(1e6, 51, 360e3, SLOT_S), make_scheduler("pf"), 100, 2000)
    assert not constant.compiled


def test_every_site_schedules_its_own_users_under_seven_cells():
    cell = radio_cell("pf", compiled=True, seed=2, scheduling_cells=7)
    for user in range(35):
        cell.attach(f"u{user}")
        cell.enqueue(f"u{user}", 1e12, key=user, flow=0)
    slots = 400
    cell.run_until(slots)
    serving = cell.channel.serving_cells([cell.users[f"u{user}"].handle for user in range(35)])
    assert set(serving.tolist()) == set(range(7))  # users were dropped over the seven hexagons
    for site in range(7):
        granted = sum(cell.traffic(f"u{user}").granted_rbs for user in range(35) if serving[user] == site)
        assert granted == slots * 51  # each site grants all of its own RBs, to its own users only


def test_an_idle_neighbour_does_not_interfere_when_interference_follows_the_schedule():
    cell = radio_cell(
        "pf", compiled=True, seed=4, scheduling_cells=7, interference_activity="scheduled", fast_fading=False
    )
    channel = cell.channel
    alone = cell.attach("alone")
    cell.enqueue("alone", 1e12, key=0, flow=0)
    cell.run_until(5)  # after the first slot only its own site has granted anything
    rx = channel._rx_power_w[channel._rows([alone.handle])[0]]
    own = channel.serving_cells([alone.handle])[0]
    snr_rate = 360e3 * np.log2(1 + rx[own] / channel._noise_w)
    np.testing.assert_allclose(channel.rates_bps([alone.handle]), snr_rate * np.ones((1, 51)), rtol=1e-5)


def test_positions_may_lie_in_any_hexagon_when_every_site_schedules():
    seven = RadioModel(load_radio_params(scheduling_cells=7), np.random.default_rng(1))
    handle = seven.add_ue((500.0 * np.cos(np.pi / 6), 500.0 * np.sin(np.pi / 6) + 60.0))  # near site 1
    assert seven.ue_state(handle).cell == 1
    one = RadioModel(load_radio_params(), np.random.default_rng(1))
    with pytest.raises(ValueError, match="outside"):
        one.add_ue((500.0 * np.cos(np.pi / 6), 500.0 * np.sin(np.pi / 6) + 60.0))


def test_single_precision_log2_matches_numpy():
    x = np.concatenate([1 + np.logspace(-7, 12, 20_000), [1.0, 2.0, np.sqrt(2.0), 1e15]]).astype(np.float32)
    expected = np.log2(x.astype(np.float64))
    np.testing.assert_allclose(slot_kernel.log2(x), expected, rtol=3e-7, atol=3e-7)
