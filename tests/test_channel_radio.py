"""The 3GPP TR 38.901 radio model: formulas, statistics of the random draws, eq. (2) rates, bookkeeping.

Formulas are typed out here again, independently of ``pathloss.py``, from TR 38.901 Tables 7.4.1-1 and
7.4.2-1. Stochastic checks are seeded and use tolerances of about 4 standard errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecloud.channel.radio import fading, layout, pathloss
from edgecloud.channel.radio.base import ChannelModel, UeRadioState
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import DEFAULT_RADIO_FILE, RadioParams, load_radio_params

C = 299_792_458.0
FC_HZ = 3.5e9
FC_GHZ = 3.5
H_UT = 1.5
DISTANCES = [50.0, 200.0, 400.0, 1000.0, 3000.0]
STANDARD_ERRORS = 4.0
# The slot kernel computes SINR and log2 in single precision (float32 resolves 6e-8); it was 1e-9 in double.
RATE_RTOL = 1e-6


def model(seed: int = 7, **overrides: Any) -> RadioModel:
    return RadioModel(load_radio_params(**overrides), np.random.default_rng(seed))


def dbm_to_w(dbm: float) -> float:
    return 10 ** ((dbm - 30) / 10)


# ---- path loss (Table 7.4.1-1) ---------------------------------------------------------------------------------


def expected_uma_los(d2d: float, h_bs: float = 25.0) -> float:
    d3d = math.sqrt(d2d**2 + (h_bs - H_UT) ** 2)
    d_bp = 4 * (h_bs - 1) * (H_UT - 1) * FC_HZ / C
    if d2d <= d_bp:
        return 28.0 + 22 * math.log10(d3d) + 20 * math.log10(FC_GHZ)
    return 28.0 + 40 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 9 * math.log10(d_bp**2 + (h_bs - H_UT) ** 2)


def expected_uma_nlos(d2d: float, h_bs: float = 25.0) -> float:
    d3d = math.sqrt(d2d**2 + (h_bs - H_UT) ** 2)
    nlos = 13.54 + 39.08 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 0.6 * (H_UT - 1.5)
    return max(expected_uma_los(d2d, h_bs), nlos)


def expected_umi_los(d2d: float, h_bs: float = 10.0) -> float:
    d3d = math.sqrt(d2d**2 + (h_bs - H_UT) ** 2)
    d_bp = 4 * (h_bs - 1) * (H_UT - 1) * FC_HZ / C
    if d2d <= d_bp:
        return 32.4 + 21 * math.log10(d3d) + 20 * math.log10(FC_GHZ)
    return 32.4 + 40 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 9.5 * math.log10(d_bp**2 + (h_bs - H_UT) ** 2)


def expected_umi_nlos(d2d: float, h_bs: float = 10.0) -> float:
    d3d = math.sqrt(d2d**2 + (h_bs - H_UT) ** 2)
    nlos = 35.3 * math.log10(d3d) + 22.4 + 21.3 * math.log10(FC_GHZ) - 0.3 * (H_UT - 1.5)
    return max(expected_umi_los(d2d, h_bs), nlos)


@pytest.mark.parametrize(
    ("function", "expected", "h_bs"),
    [
        (pathloss.uma_los, expected_uma_los, 25.0),
        (pathloss.uma_nlos, expected_uma_nlos, 25.0),
        (pathloss.umi_los, expected_umi_los, 10.0),
        (pathloss.umi_nlos, expected_umi_nlos, 10.0),
    ],
)
def test_path_loss_matches_table_7_4_1_1(function, expected, h_bs):
    got = function(np.array(DISTANCES), h_bs, H_UT, FC_HZ)
    assert got.shape == (len(DISTANCES),)
    np.testing.assert_allclose(got, [expected(d, h_bs) for d in DISTANCES], rtol=0, atol=1e-9)


def test_breakpoints_fall_inside_the_tested_distances():
    # UMa d'_BP = 4 * 24 * 0.5 * 3.5 GHz / c = 560 m; UMi 4 * 9 * 0.5 * 3.5 GHz / c = 210 m: both slopes are tested.
    assert pathloss.breakpoint_distance(25.0, H_UT, FC_HZ) == pytest.approx(560.0, rel=1e-3)
    assert pathloss.breakpoint_distance(10.0, H_UT, FC_HZ) == pytest.approx(210.0, rel=1e-3)


def test_path_loss_selects_state_and_clamps_below_10_m():
    d = np.array([100.0, 100.0])
    got = pathloss.path_loss("uma", np.array([True, False]), d, 25.0, H_UT, FC_HZ)
    assert got.tolist() == pytest.approx([expected_uma_los(100.0), expected_uma_nlos(100.0)])
    assert pathloss.uma_los(2.0, 25.0, H_UT, FC_HZ) == pytest.approx(expected_uma_los(10.0))
    with pytest.raises(ValueError, match="unknown scenario"):
        pathloss.path_loss("rma", True, d, 25.0, H_UT, FC_HZ)  # type: ignore[arg-type]


# ---- LOS probability (Table 7.4.2-1) and shadowing ---------------------------------------------------------------


def expected_uma_los_probability(d: float, h_ut: float = H_UT) -> float:
    if d <= 18:
        return 1.0
    c_prime = 0.0 if h_ut <= 13 else ((h_ut - 13) / 10) ** 1.5
    return (18 / d + math.exp(-d / 63) * (1 - 18 / d)) * (1 + c_prime * 5 / 4 * (d / 100) ** 3 * math.exp(-d / 150))


def expected_umi_los_probability(d: float) -> float:
    return 1.0 if d <= 18 else 18 / d + math.exp(-d / 36) * (1 - 18 / d)


LOS_DISTANCES = [1.0, 10.0, 18.0, 18.5, 50.0, 100.0, 250.0, 600.0]


@pytest.mark.parametrize("h_ut", [1.5, 13.0, 20.0])
def test_uma_los_probability(h_ut):
    got = pathloss.uma_los_probability(np.array(LOS_DISTANCES), h_ut)
    np.testing.assert_allclose(got, [expected_uma_los_probability(d, h_ut) for d in LOS_DISTANCES], atol=1e-12)
    assert got[:3].tolist() == [1.0, 1.0, 1.0]


def test_uma_height_term_raises_los_probability_above_13_m():
    assert pathloss.uma_height_factor(13.0) == 0.0
    assert pathloss.uma_height_factor(23.0) == pytest.approx(1.0)
    assert pathloss.uma_los_probability(100.0, 20.0) > pathloss.uma_los_probability(100.0, 1.5)


def test_umi_los_probability():
    got = pathloss.umi_los_probability(np.array(LOS_DISTANCES))
    np.testing.assert_allclose(got, [expected_umi_los_probability(d) for d in LOS_DISTANCES], atol=1e-12)


def test_shadowing_std_per_scenario_and_state():
    assert pathloss.shadowing_std_db("uma", np.array([True, False])).tolist() == [4.0, 6.0]
    assert pathloss.shadowing_std_db("umi", np.array([True, False])).tolist() == [4.0, 7.82]


@pytest.fixture(scope="module")
def fixed_position_drops() -> tuple[RadioModel, list[int]]:
    """3,000 users at the same spot: 3,000 LOS and shadowing draws toward each of the 7 sites."""
    radio = model(seed=11, fast_fading=False)
    return radio, [radio.add_ue((100.0, 0.0)) for _ in range(3000)]


def test_empirical_los_ratio_matches_the_probability(fixed_position_drops):
    radio, handles = fixed_position_drops
    rows = radio._rows(handles)
    distances = layout.distances_to_sites(np.array([[100.0, 0.0]]), 500.0)[0]
    for site, distance in enumerate(distances):
        p = expected_uma_los_probability(float(distance))
        observed = radio._los[rows, site].mean()
        tolerance = STANDARD_ERRORS * math.sqrt(p * (1 - p) / len(handles)) + 1e-3
        assert observed == pytest.approx(p, abs=tolerance), f"site {site} at {distance:.0f} m"


def test_shadowing_std_matches_sigma_per_state(fixed_position_drops):
    radio, handles = fixed_position_drops
    rows = radio._rows(handles)
    los, shadowing = [radio._los[rows]], [radio._shadowing_db[rows]]
    for _ in range(4):  # four more independent draws of every link's state and shadowing
        radio._update_large_scale(rows, redraw_all=True)
        los.append(radio._los[rows])
        shadowing.append(radio._shadowing_db[rows])
    for state, sigma in ((True, 4.0), (False, 6.0)):
        samples = np.concatenate(shadowing)[np.concatenate(los) == state]
        assert len(samples) > 8000
        assert samples.std() == pytest.approx(sigma, rel=0.03)
        assert abs(samples.mean()) < STANDARD_ERRORS * sigma / math.sqrt(len(samples))


# ---- layout ----------------------------------------------------------------------------------------------------


def test_sites_form_the_first_hexagonal_ring():
    sites = layout.site_positions(500.0)
    assert sites.shape == (7, 2)
    assert sites[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(np.hypot(*sites[1:].T), 500.0)
    neighbours = np.hypot(*(sites[1:] - np.roll(sites[1:], 1, axis=0)).T)
    np.testing.assert_allclose(neighbours, 500.0)  # adjacent ring sites are ISD apart too


@pytest.mark.parametrize(("isd", "min_distance"), [(500.0, 35.0), (200.0, 10.0)])
def test_drops_are_uniform_in_the_hexagon_beyond_the_minimum_distance(isd, min_distance):
    points = layout.drop_uniform(np.random.default_rng(3), 20_000, isd, min_distance)
    r = np.hypot(points[:, 0], points[:, 1])
    assert points.shape == (20_000, 2)
    assert layout.in_serving_cell(points, isd).all()
    assert r.min() >= min_distance
    assert r.max() <= isd / math.sqrt(3) + 1e-9
    # Closest to the serving site: the cell is its Voronoi region.
    assert (layout.distances_to_sites(points, isd).argmin(axis=1) == 0).all()
    # E[r^2] over a regular hexagon of side a minus a disk of radius r0: (5 sqrt3/8 a^4 - pi r0^4/2) / (area).
    a = isd / math.sqrt(3)
    area = 3 * math.sqrt(3) / 2 * a**2 - math.pi * min_distance**2
    mean_r2 = (5 * math.sqrt(3) / 8 * a**4 - math.pi * min_distance**4 / 2) / area
    assert (r**2).mean() == pytest.approx(mean_r2, rel=0.01)
    # Radial CDF inside the inscribed circle (radius isd / 2): P(r <= rho) = pi (rho^2 - r0^2) / area.
    for rho in (0.25 * isd, 0.45 * isd):
        p = math.pi * (rho**2 - min_distance**2) / area
        assert (r <= rho).mean() == pytest.approx(p, abs=STANDARD_ERRORS * math.sqrt(p * (1 - p) / len(r)))


def test_in_serving_cell_edges():
    isd = 500.0
    assert layout.in_serving_cell(np.array([[isd / math.sqrt(3) - 1e-6, 0.0]]), isd)[0]  # a vertex on the x axis
    assert not layout.in_serving_cell(np.array([[0.0, isd / 2 + 1.0]]), isd)[0]  # just past an edge


def test_random_waypoint_walks_the_distance_and_stays_in_the_cell():
    rng = np.random.default_rng(5)
    start = layout.drop_uniform(rng, 200, 500.0, 35.0)
    positions, waypoints = start.copy(), layout.drop_uniform(rng, 200, 500.0, 35.0)
    layout.walk_waypoints(rng, positions, waypoints, 30.0, 500.0, 35.0)
    moved = np.hypot(*(positions - start).T)
    assert (moved <= 30.0 + 1e-9).all()
    assert np.median(moved) == pytest.approx(30.0)  # most users do not reach their waypoint
    assert layout.in_serving_cell(positions, 500.0).all()


# ---- fast fading ---------------------------------------------------------------------------------------------


# Trapezoidal intervals for Bessel's integral: the rule's error is 2 (J_2N(x) + J_4N(x) + ...), below 1e-15
# for |x| < 200 with N = 256 (the tests need x = 2 pi f_d tau up to a few tens).
BESSEL_NODES = 256


def bessel_j0(x: Any) -> np.ndarray:
    """Clarke's correlation J0, by Bessel's integral (1/pi) int_0^pi cos(x sin t) dt and the trapezoidal rule
    (no scipy here; the rule converges geometrically for this smooth periodic integrand)."""
    theta = np.linspace(0.0, np.pi, BESSEL_NODES + 1)
    weights = np.full(BESSEL_NODES + 1, 1.0 / BESSEL_NODES)
    weights[[0, -1]] *= 0.5
    return np.cos(np.asarray(x, dtype=np.float64)[..., None] * np.sin(theta)) @ weights


def test_bessel_j0_known_values():
    x = np.array([0.0, 1.0, 2.404825557695773, 5.0, 10.0])
    expected = [1.0, 0.7651976865579666, 0.0, -0.1775967713143383, -0.2459357644513483]
    np.testing.assert_allclose(bessel_j0(x), expected, atol=1e-12)


def test_doppler_shift_and_its_nyquist_limit():
    assert model(ue_speed_kmh=3.0).params.doppler_hz == pytest.approx((3 / 3.6) * FC_HZ / C)
    assert model(ue_speed_kmh=120.0).params.doppler_hz == pytest.approx((120 / 3.6) * FC_HZ / C)
    with pytest.raises(ValueError, match="Nyquist"):
        load_radio_params(ue_speed_kmh=400.0)  # 1.3 kHz at 3.5 GHz, past the 1 kHz of 0.5 ms slots


def jakes_process(doppler: float, n_slots: int, links: int, seed: int) -> np.ndarray:
    """Complex gains from the trace generator's filter (fading.power_trace keeps only |h|^2)."""
    shaped = fading.jakes_filter(doppler, 0.5e-3, n_slots)
    rng = np.random.default_rng(seed)
    h = np.fft.ifft(fading.complex_gaussian(rng, (n_slots, links)) * shaped[:, None], axis=0)
    return h * n_slots / np.sqrt(np.sum(shaped**2))


@pytest.mark.parametrize("speed_kmh", [3.0, 120.0])
def test_jakes_trace_is_rayleigh_with_clarke_autocorrelation_at_every_lag(speed_kmh):
    # Was an AR(1) process, whose correlation is J0 at lag 1 only (rho^n after); the trace follows J0(2 pi f_d tau).
    doppler = speed_kmh / 3.6 * FC_HZ / C
    h = jakes_process(doppler, 8192, 400, seed=9)
    power = np.abs(h) ** 2
    assert power.mean() == pytest.approx(1.0, abs=0.02)
    for lag in (1, 5, 20, 80):
        correlation = np.mean(np.roll(h, -lag, axis=0) * np.conj(h)) / power.mean()
        assert correlation.real == pytest.approx(float(bessel_j0(2 * math.pi * doppler * lag * 0.5e-3)), abs=0.03)
        assert abs(correlation.imag) < 0.03
    # |h|^2 ~ Exp(1): P(|h|^2 > x) = exp(-x), over samples a coherence time apart.
    sample = power[:: max(1, int(0.4 / (doppler * 0.5e-3)))].ravel()
    for x in (0.1, 0.5, 1.0, 2.0, 4.0):
        p = math.exp(-x)
        assert (sample > x).mean() == pytest.approx(p, abs=STANDARD_ERRORS * math.sqrt(p * (1 - p) / len(sample)) * 2)


def test_jakes_filter_of_young_and_beaulieu():
    doppler, n_slots = 10.0, 1000  # k_m = floor(10 x 1000 x 0.5e-3) = 5
    shaped = fading.jakes_filter(doppler, 0.5e-3, n_slots)
    assert shaped[0] == 0.0 and np.all(shaped[6 : n_slots - 5] == 0.0)
    np.testing.assert_allclose(shaped[1:5], np.sqrt(1 / (2 * np.sqrt(1 - (np.arange(1, 5) / 5) ** 2))))
    assert shaped[5] == pytest.approx(math.sqrt(5 / 2 * (math.pi / 2 - math.atan(4 / math.sqrt(9)))))
    np.testing.assert_array_equal(shaped[n_slots - 5 :], shaped[5:0:-1])
    with pytest.raises(ValueError):
        fading.jakes_filter(1000.0, 0.5e-3, n_slots)  # a Doppler band past the slot rate's Nyquist frequency


def test_power_trace_moves_in_time_and_a_static_one_has_independent_rows():
    moving, moves = fading.power_trace(np.random.default_rng(1), 10.0, 0.5e-3, 4096, 51)
    assert moves and moving.shape == (4096, 51) and moving.dtype == np.float32
    assert np.corrcoef(moving[:-1, 0], moving[1:, 0])[0, 1] > 0.9
    static, moves = fading.power_trace(np.random.default_rng(1), 0.0, 0.5e-3, 4096, 51)
    assert not moves
    assert abs(np.corrcoef(static[:-1, 0], static[1:, 0])[0, 1]) < 0.1
    assert static.mean() == pytest.approx(1.0, abs=0.02)


def test_model_fading_power_is_exponential_and_correlated_slot_to_slot():
    # Without interference SINR = SNR_mean |h|^2, so |h|^2 of the serving link is SINR / mean SINR.
    radio = model(seed=10, activity_factor=0.0, ue_speed_kmh=120.0)
    handles = [radio.add_ue() for _ in range(40)]
    mean_snr = 10 ** (radio.mean_sinr_db(handles) / 10)
    trace = []
    for _ in range(20):
        trace.append(10 ** (radio.sinr_db(handles) / 10) / mean_snr[:, None])
        radio.advance(1)
    power = np.array(trace)
    assert power.mean() == pytest.approx(1.0, abs=0.03)
    assert (power > 1.0).mean() == pytest.approx(math.exp(-1), abs=0.02)
    rho = float(bessel_j0(2 * math.pi * radio.params.doppler_hz * 0.5e-3))
    assert rho == pytest.approx(0.66, abs=0.005)  # J0(2 pi 389 Hz x 0.5 ms) = J0(1.22) at 120 km/h
    centred = power - power.mean()
    lag1 = np.mean(centred[1:] * centred[:-1]) / centred.var()
    assert lag1 == pytest.approx(rho**2, abs=0.04)  # corr(|h_t|^2, |h_t+1|^2) = |corr(h_t, h_t+1)|^2, Gaussian h


# ---- rates: eq. (2) ------------------------------------------------------------------------------------------


def test_numerology_power_and_noise():
    radio = model()
    assert (radio.num_rbs, radio.rb_bandwidth_hz, radio.slot_duration_s) == (51, 360e3, 0.5e-3)
    params = radio.params
    assert params.rb_power_dbm == pytest.approx(46 - 10 * math.log10(51))
    assert params.noise_per_rb_dbm == pytest.approx(-174 + 10 * math.log10(360e3) + 9)


def test_hand_computed_sinr_and_rate_without_fading():
    radio = model(seed=21, fast_fading=False)
    position = (120.0, -80.0)
    handle = radio.add_ue(position)
    row = radio._row(handle)
    los, shadowing = radio._los[row], radio._shadowing_db[row]
    d2d = np.hypot(*(np.array(position) - layout.site_positions(500.0)).T)
    gains = []
    for site in range(7):
        pl = expected_uma_los(d2d[site]) if los[site] else expected_uma_nlos(d2d[site])
        gains.append(10 ** (-(pl + shadowing[site]) / 10))
    p_rb = dbm_to_w(46 - 10 * math.log10(51))
    noise = dbm_to_w(-174 + 10 * math.log10(360e3) + 9)
    sinr = p_rb * gains[0] / (p_rb * sum(gains[1:]) + noise)
    rates = radio.rates_bps([handle])
    np.testing.assert_allclose(rates, 360e3 * math.log2(1 + sinr), rtol=RATE_RTOL)
    state = radio.ue_state(handle)
    assert state.mean_sinr_db == pytest.approx(10 * math.log10(sinr))
    assert state.distance_2d_m == pytest.approx(math.hypot(*position))
    assert state.los == bool(los[0])
    assert state.shadowing_db == pytest.approx(shadowing[0])
    expected_pl = expected_uma_los(d2d[0]) if los[0] else expected_uma_nlos(d2d[0])
    assert state.path_loss_db == pytest.approx(expected_pl)
    np.testing.assert_allclose(radio.sinr_db([handle]), 10 * math.log10(sinr), rtol=RATE_RTOL)


def test_activity_zero_gives_the_snr_rate():
    radio = model(seed=2, fast_fading=False, activity_factor=0.0)
    handle = radio.add_ue((200.0, 0.0))
    state = radio.ue_state(handle)
    snr = dbm_to_w(46 - 10 * math.log10(51) - state.path_loss_db - state.shadowing_db) / dbm_to_w(
        -174 + 10 * math.log10(360e3) + 9
    )
    np.testing.assert_allclose(radio.rates_bps([handle]), 360e3 * math.log2(1 + snr), rtol=RATE_RTOL)
    radio.advance(3)
    np.testing.assert_allclose(radio.rates_bps([handle]), 360e3 * math.log2(1 + snr), rtol=RATE_RTOL)
    assert state.mean_sinr_db == pytest.approx(10 * math.log10(snr))


def test_partial_activity_halves_the_mean_interference():
    radio = model(seed=4, fast_fading=False, activity_factor=0.5)
    handle = radio.add_ue((230.0, 60.0))
    full = model(seed=4, fast_fading=False, activity_factor=1.0)
    full_handle = full.add_ue((230.0, 60.0))  # same seed and calls: same LOS states and shadowing
    signal_w = dbm_to_w(
        46 - 10 * math.log10(51) - radio.ue_state(handle).path_loss_db - radio.ue_state(handle).shadowing_db
    )
    noise_w = dbm_to_w(-174 + 10 * math.log10(360e3) + 9)
    full_interference = signal_w / 10 ** (full.ue_state(full_handle).mean_sinr_db / 10) - noise_w
    samples = []
    for _ in range(300):
        radio.advance(1)
        samples.append(signal_w / 10 ** (radio.sinr_db([handle])[0] / 10) - noise_w)
    interference = np.array(samples)
    assert interference.mean() == pytest.approx(0.5 * full_interference, rel=0.05)
    assert interference.min() >= -1e-3 * full_interference
    assert radio.ue_state(handle).mean_sinr_db == pytest.approx(
        10 * math.log10(signal_w / (0.5 * full_interference + noise_w))
    )


def test_gap_and_cap():
    plain = model(seed=6, fast_fading=False)
    h_plain = plain.add_ue((60.0, 10.0))
    sinr = 10 ** (plain.sinr_db([h_plain]) / 10)
    gapped = model(seed=6, fast_fading=False, snr_gap_db=3.0)
    h_gapped = gapped.add_ue((60.0, 10.0))
    np.testing.assert_allclose(gapped.rates_bps([h_gapped]), 360e3 * np.log2(1 + sinr / 10**0.3), rtol=RATE_RTOL)
    uncapped_efficiency = float(plain.rates_bps([h_plain])[0, 0]) / 360e3
    capped = model(seed=6, fast_fading=False, max_spectral_efficiency_bps_hz=uncapped_efficiency / 2)
    h_capped = capped.add_ue((60.0, 10.0))
    np.testing.assert_allclose(capped.rates_bps([h_capped]), uncapped_efficiency / 2 * 360e3)
    loose = model(seed=6, fast_fading=False, max_spectral_efficiency_bps_hz=uncapped_efficiency * 2)
    h_loose = loose.add_ue((60.0, 10.0))
    np.testing.assert_allclose(loose.rates_bps([h_loose]), plain.rates_bps([h_plain]))


def test_rates_shape_dtype_order_and_fading_variation():
    radio = model(seed=8)
    handles = [radio.add_ue() for _ in range(5)]
    rates = radio.rates_bps(handles)
    assert rates.shape == (5, 51)
    assert rates.dtype == np.float64
    assert (rates > 0).all()
    assert np.ptp(rates[0]) > 0  # independent fading per RB
    np.testing.assert_array_equal(radio.rates_bps(handles[::-1]), rates[::-1])
    np.testing.assert_array_equal(radio.rates_bps(np.array(handles)), rates)  # the cell passes integer arrays
    assert radio.rates_bps([]).shape == (0, 51)
    radio.advance(2000)  # one second: about 0.2 coherence times at 3 km/h, so the fading has moved
    assert not np.allclose(radio.rates_bps(handles), rates)


def test_fading_block_holds_the_channel_between_updates():
    radio = model(seed=8, fading_block_slots=4)
    handle = radio.add_ue()
    first = radio.rates_bps([handle])
    radio.advance(3)
    np.testing.assert_array_equal(radio.rates_bps([handle]), first)
    radio.advance(1)
    assert not np.array_equal(radio.rates_bps([handle]), first)


def test_same_seed_same_rates():
    a, b = model(seed=3), model(seed=3)
    handles_a, handles_b = [a.add_ue() for _ in range(4)], [b.add_ue() for _ in range(4)]
    a.advance(7)
    b.advance(7)
    np.testing.assert_array_equal(a.rates_bps(handles_a), b.rates_bps(handles_b))


def test_umi_scenario():
    radio = model(scenario="umi")
    assert (radio.params.isd_m, radio.params.bs_height_m, radio.params.min_distance_m) == (200.0, 10.0, 10.0)
    handles = [radio.add_ue() for _ in range(50)]
    states = [radio.ue_state(h) for h in handles]
    assert all(10.0 <= s.distance_2d_m <= 200 / math.sqrt(3) for s in states)
    assert radio.rates_bps(handles).shape == (50, 51)


# ---- users: add, remove, place, move ---------------------------------------------------------------------------


def test_add_remove_place_and_handles():
    radio = model(seed=12)
    handles = [radio.add_ue() for _ in range(150)]  # past the initial capacity of 64 rows
    assert handles == list(range(150))
    before = radio.rates_bps(handles)
    for handle in handles[:100:3]:
        radio.remove_ue(handle)
    kept = [h for h in handles if h not in handles[:100:3]]
    assert radio.num_ues == len(kept)
    np.testing.assert_array_equal(radio.rates_bps(kept), before[kept])
    for handle in kept[:5]:
        np.testing.assert_array_equal(radio.rates_bps([handle])[0], before[handle])
    assert radio.add_ue() == 150  # handles are never reused
    with pytest.raises(KeyError):
        radio.rates_bps([0])
    with pytest.raises(KeyError):
        radio.ue_state(999)
    with pytest.raises(KeyError):
        radio.remove_ue(0)
    with pytest.raises(ValueError, match="position"):
        radio.add_ue((float("nan"), 0.0))


def test_place_ue_recomputes_path_loss_and_redraws_past_decorrelation():
    radio = model(seed=13, fast_fading=False)
    handle = radio.add_ue((100.0, 0.0))
    start = radio.ue_state(handle)
    radio.place_ue(handle, (105.0, 0.0))  # 5 m: closer than every decorrelation distance
    near = radio.ue_state(handle)
    assert (near.x_m, near.y_m) == (105.0, 0.0)
    assert (near.los, near.shadowing_db) == (start.los, start.shadowing_db)
    expected = expected_uma_los(105.0) if near.los else expected_uma_nlos(105.0)
    assert near.path_loss_db == pytest.approx(expected)
    redrawn = 0
    for step in range(1, 21):
        radio.place_ue(handle, (100.0 + 60.0 * (step % 2), 50.0 * (step % 3)))  # >= 50 m jumps
        redrawn += radio.ue_state(handle).shadowing_db != near.shadowing_db
        near = radio.ue_state(handle)
    assert redrawn == 20


def test_mobility_moves_users_and_updates_path_loss():
    radio = model(seed=14, mobility=True, ue_speed_kmh=36.0, fast_fading=False)
    handles = [radio.add_ue() for _ in range(20)]
    start = [radio.ue_state(h) for h in handles]
    radio.advance(2000)  # 1 s at 10 m/s
    end = [radio.ue_state(h) for h in handles]
    moved = [math.hypot(b.x_m - a.x_m, b.y_m - a.y_m) for a, b in zip(start, end, strict=True)]
    assert max(moved) <= 10.0 + 1e-6
    assert np.median(moved) == pytest.approx(10.0, abs=0.5)
    assert layout.in_serving_cell(np.array([[s.x_m, s.y_m] for s in end]), 500.0).all()
    for a, b in zip(start, end, strict=True):
        assert b.shadowing_db == a.shadowing_db and b.los == a.los  # 10 m < every decorrelation distance
        expected = expected_uma_los(b.distance_2d_m) if b.los else expected_uma_nlos(b.distance_2d_m)
        assert b.path_loss_db == pytest.approx(expected)


def test_static_users_do_not_move():
    radio = model(seed=15)
    handle = radio.add_ue((100.0, 20.0))
    radio.advance(4000)
    state = radio.ue_state(handle)
    assert (state.x_m, state.y_m) == (100.0, 20.0)
    with pytest.raises(ValueError, match="n_slots"):
        radio.advance(-1)


def test_radio_model_implements_the_channel_model_protocol():
    radio: ChannelModel = model()
    handle = radio.add_ue()
    assert isinstance(radio.ue_state(handle), UeRadioState)


# ---- parameters ------------------------------------------------------------------------------------------------


def test_default_parameters_load():
    params = load_radio_params()
    assert isinstance(params, RadioParams)
    assert params.scenario == "uma"
    assert params.carrier_frequency_hz == 3.5e9
    assert params.numerology == 1
    assert params.max_spectral_efficiency_bps_hz is None
    assert load_radio_params(snr_gap_db=None).snr_gap_db == 0.0  # None overrides are ignored
    assert load_radio_params(max_spectral_efficiency_bps_hz=5).max_spectral_efficiency_bps_hz == 5.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scenario": "rma"}, "unknown scenario 'rma'"),
        ({"bogus": 1}, r"unknown radio parameters \['bogus'\]"),
        ({"num_rbs": 0}, r"num_rbs must be in \[1, 275\]"),
        ({"num_rbs": 51.5}, "num_rbs must be an integer"),
        ({"activity_factor": 1.5}, r"activity_factor must be in \[0, 1\]"),
        ({"subcarrier_spacing_hz": 20e3}, "subcarrier_spacing_hz must be one of"),
        ({"min_distance_m": 300.0}, "min_distance_m must be in"),
        ({"carrier_frequency_hz": 0.1e9}, "carrier_frequency_hz must be in"),
        ({"ue_height_m": 30.0}, "ue_height_m must be in"),
        ({"snr_gap_db": -1.0}, "snr_gap_db must be >= 0"),
        ({"max_spectral_efficiency_bps_hz": 0}, "max_spectral_efficiency_bps_hz must be > 0 or null"),
        ({"fast_fading": "yes"}, "fast_fading must be true or false"),
        ({"isd_m": "far"}, "isd_m must be a number"),
        ({"isd_m": True}, "isd_m must be a number"),
        ({"ue_speed_kmh": float("inf")}, "ue_speed_kmh must be finite"),
        ({"fading_block_slots": 0}, "fading_block_slots must be >= 1"),
        ({"los_decorrelation_m": 0}, "los_decorrelation_m must be > 0"),
    ],
)
def test_parameter_validation_messages(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_radio_params(**overrides)


def test_several_problems_are_reported_together():
    with pytest.raises(ValueError, match=r"activity_factor.*snr_gap_db"):
        load_radio_params(activity_factor=2.0, snr_gap_db=-3.0)


def test_yaml_structure_errors(tmp_path: Path):
    text = DEFAULT_RADIO_FILE.read_text(encoding="utf-8")
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace("  num_rbs: 51\n", ""), encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['num_rbs'\] are missing"):
        load_radio_params(missing)
    flat = tmp_path / "flat.yaml"
    flat.write_text("num_rbs: 51\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a 'common:' mapping"):
        load_radio_params(flat)
    string_number = tmp_path / "string.yaml"
    string_number.write_text(text.replace("3.5e+9", "3.5e9"), encoding="utf-8")  # YAML 1.1 reads 3.5e9 as a string
    assert load_radio_params(string_number).carrier_frequency_hz == 3.5e9
