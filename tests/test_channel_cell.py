"""The cell, schedulers and air interface in virtual time: grants, fidelity to eq. 1, no banking, fairness."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.channel.air import AirInterface, Transmission
from edgecloud.channel.cell import Cell
from edgecloud.channel.radio.constant import ConstantCapacityChannel
from edgecloud.channel.schedulers import SCHEDULERS, make_scheduler

NUM_RBS = 51
RB_HZ = 360e3
SLOT_S = 0.5e-3
BITS_PER_TOKEN = 4 * 8  # eq. 1: s^token = 4 bytes


def constant_air(capacity_bps: float, scheduler: str = "pf", users: int = 1) -> AirInterface:
    channel = ConstantCapacityChannel(capacity_bps, NUM_RBS, RB_HZ, SLOT_S)
    cell = Cell(channel, make_scheduler(scheduler), pf_window_slots=100, stats_window_slots=2000)
    for index in range(users):
        cell.attach(f"u{index}")
    return AirInterface(cell)


def test_n_tokens_arrive_after_n_times_token_bits_over_capacity():
    """Eq. 1 with C constant: token k of a burst arrives at k * 4 * 8 / C (C chosen so a token fills whole slots)."""
    capacity = BITS_PER_TOKEN / (10 * SLOT_S)  # one token per 10 slots: 6,400 bit/s
    air = constant_air(capacity)
    deliveries = air.deliver(Transmission("u0", 0.0, BITS_PER_TOKEN, key=k) for k in range(1, 101))
    times = {d.key: d.time for d in deliveries}
    for k in (1, 2, 50, 100):
        assert times[k] == pytest.approx(k * BITS_PER_TOKEN / capacity, abs=1e-9)


def test_arbitrary_capacity_is_late_by_less_than_one_slot():
    capacity = 1.234e6
    air = constant_air(capacity)
    deliveries = air.deliver(Transmission("u0", 0.0, BITS_PER_TOKEN, key=k) for k in range(1, 1001))
    for delivery in deliveries:
        exact = delivery.key * BITS_PER_TOKEN / capacity
        assert exact <= delivery.time < exact + SLOT_S


def test_bits_wait_for_the_next_slot_boundary():
    """The scheduler decides at slot starts: bits ready mid-slot compete from the next slot."""
    air = constant_air(BITS_PER_TOKEN / SLOT_S)  # one token per slot
    (delivery,) = air.deliver([Transmission("u0", 0.3 * SLOT_S, BITS_PER_TOKEN, key="x")])
    assert delivery.time == pytest.approx(2 * SLOT_S)


def test_idle_capacity_is_not_banked():
    """After a long idle period a burst still takes n * bits / C: nothing saved up from the idle slots."""
    capacity = BITS_PER_TOKEN / (4 * SLOT_S)
    air = constant_air(capacity)
    start = 10.0
    deliveries = air.deliver(Transmission("u0", start, BITS_PER_TOKEN, key=k) for k in range(1, 21))
    assert max(d.time for d in deliveries) == pytest.approx(start + 20 * BITS_PER_TOKEN / capacity)


def test_capacity_beyond_the_queue_is_lost_within_a_slot():
    """A 1-bit item in a slot that could carry 1,000 bits: the next item ready later waits for its own slot."""
    air = constant_air(1000 / SLOT_S)
    deliveries = air.deliver([Transmission("u0", 0.0, 1, key="small"), Transmission("u0", 0.1 * SLOT_S, 1, key="next")])
    times = {d.key: d.time for d in deliveries}
    assert times == {"small": pytest.approx(SLOT_S), "next": pytest.approx(2 * SLOT_S)}
    assert air.cell.traffic("u0").delivered_bits == pytest.approx(2)


def test_a_backlogged_users_bytes_equal_its_granted_capacity_over_10_s():
    """Fidelity: delivered bits = the integral of the capacity granted, within 1%, for each backlogged user."""
    air = constant_air(8e6, users=3)
    for index in range(3):
        air.submit(Transmission(f"u{index}", 0.0, 1e12, key=index))
    air.advance_to(10.0 - SLOT_S)  # slots run at their start: 20,000 slots have started by then
    for index in range(3):
        traffic = air.cell.traffic(f"u{index}")
        assert traffic.delivered_bits == pytest.approx(traffic.granted_bits, rel=1e-9)
        assert traffic.backlogged_slots == 20_000
    total = sum(air.cell.traffic(f"u{i}").delivered_bits for i in range(3))
    assert total == pytest.approx(8e6 * 10.0, rel=0.01)


@pytest.mark.parametrize("scheduler", ["pf", "rr"])
def test_identical_channels_get_equal_shares(scheduler):
    air = constant_air(6e6, scheduler, users=4)
    for index in range(4):
        air.submit(Transmission(f"u{index}", 0.0, 1e12, key=index))
    air.advance_to(5.0)
    shares = np.array([air.cell.traffic(f"u{i}").delivered_bits for i in range(4)]) / (6e6 * 5.0)
    assert shares == pytest.approx([0.25] * 4, abs=0.005)


def test_max_ci_gives_identical_channels_to_one_user():
    air = constant_air(6e6, "maxci", users=2)
    for index in range(2):
        air.submit(Transmission(f"u{index}", 0.0, 1e12, key=index))
    air.advance_to(1.0)
    delivered = sorted(air.cell.traffic(f"u{i}").delivered_bits for i in range(2))
    assert delivered[0] == 0


def test_only_users_with_bytes_waiting_are_served():
    """A lone waiting user gets the whole carrier even with other users attached and idle."""
    air = constant_air(2e6, users=5)
    (delivery,) = air.deliver([Transmission("u3", 0.0, 2e6, key="all")])
    assert delivery.time == pytest.approx(1.0, abs=SLOT_S)


def test_a_satisfied_user_hands_its_spare_rbs_to_the_others():
    """A user needing one RB keeps one; the other 50 go to the backlogged user in the same slot."""
    rate_per_rb = 1e6
    air = constant_air(rate_per_rb * NUM_RBS, users=2)
    rb_bits = rate_per_rb * SLOT_S
    air.submit(Transmission("u0", 0.0, rb_bits / 2, key="small"))
    air.submit(Transmission("u1", 0.0, 1e12, key="big"))
    air.advance_to(0.0)  # the first slot only
    assert air.cell.traffic("u0").delivered_bits == pytest.approx(rb_bits / 2)
    assert air.cell.traffic("u1").delivered_bits == pytest.approx((NUM_RBS - 1) * rb_bits)


def test_schedule_does_not_depend_on_how_often_time_is_advanced():
    """The live ticker and one virtual-time call produce the same delivery times."""
    rng = np.random.default_rng(7)
    plan = [
        Transmission(f"u{rng.integers(3)}", float(t), float(rng.integers(1, 4000)), key=i)
        for i, t in enumerate(np.sort(rng.uniform(0, 0.5, 300)))
    ]
    at_once = {d.key: d.time for d in constant_air(2e6, users=3).deliver(plan)}
    ticked_air = constant_air(2e6, users=3)
    for transmission in plan:
        ticked_air.submit(transmission)
    ticked = {}
    for now in np.arange(0, 2.0, 0.0021):
        ticked.update((d.key, d.time) for d in ticked_air.advance_to(float(now)))
    assert ticked == pytest.approx(at_once)


def test_a_cancelled_flow_leaves_the_queue_and_later_items_move_up():
    air = constant_air(BITS_PER_TOKEN / SLOT_S)  # one token per slot
    for k in range(10):
        air.submit(Transmission("u0", 0.0, BITS_PER_TOKEN, key=("gone", k), flow=1))
    air.submit(Transmission("u0", 0.0, BITS_PER_TOKEN, key="kept", flow=2))
    air.advance_to(SLOT_S)  # two slots: two tokens of the flow delivered
    air.cancel("u0", flow=1)
    times = {d.key: d.time for d in air.deliver([])}
    assert times == {"kept": pytest.approx(3 * SLOT_S)}


def test_empty_items_follow_the_items_ahead_of_them():
    air = constant_air(BITS_PER_TOKEN / (2 * SLOT_S))
    deliveries = air.deliver(
        [
            Transmission("u0", 0.0, 0, key="role"),
            Transmission("u0", 0.0, BITS_PER_TOKEN, key="token"),
            Transmission("u0", 0.0, 0, key="done"),
        ]
    )
    times = {d.key: d.time for d in deliveries}
    assert times == {"role": 0.0, "token": pytest.approx(2 * SLOT_S), "done": pytest.approx(2 * SLOT_S)}


def test_unknown_scheduler_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        make_scheduler("fifo")
    assert set(SCHEDULERS) == {"pf", "rr", "maxci"}
