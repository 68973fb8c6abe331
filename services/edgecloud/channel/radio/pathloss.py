"""Path loss, LOS probability and shadowing of 3GPP TR 38.901 (UMa and UMi street canyon), vectorised.

Every function takes numpy arrays (or scalars) of 2D distances and returns an array of the same shape;
nothing here draws random numbers. Distances are in metres, the carrier frequency in Hz (the tables
write ``f_c`` in GHz; the conversion is done here), heights in metres. The formulas are those of
TR 38.901 Table 7.4.1-1 (path loss, shadow fading std) and Table 7.4.2-1 (LOS probability).

Applicability: the tables hold for 10 m <= d_2D <= 5 km; a shorter distance is evaluated at 10 m
(``MIN_DISTANCE_2D_M``) so a user placed by hand next to a site gets the table's closest value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Scenario = Literal["uma", "umi"]
SCENARIOS: tuple[Scenario, ...] = ("uma", "umi")

SPEED_OF_LIGHT_M_S = 299_792_458.0
HZ_PER_GHZ = 1e9
MIN_DISTANCE_2D_M = 10.0  # lower end of the applicability range of Table 7.4.1-1
# Effective environment height h_E of Table 7.4.1-1 note 1. For UMi it is 1 m by definition; for UMa it is
# 1 m with probability 1 / (1 + C(d_2D, h_UT)), and C = 0 when h_UT < 13 m, so 1 m is exact for street-level
# users and a simplification (no random h_E) only for users 13 m or more above ground.
ENVIRONMENT_HEIGHT_M = 1.0

# Table 7.4.1-1, UMa.
UMA_LOS_PL1 = (28.0, 22.0, 20.0)  # PL1 = a + b log10(d_3D) + c log10(f_c)
UMA_LOS_PL2 = (28.0, 40.0, 20.0, 9.0)  # PL2 = a + b log10(d_3D) + c log10(f_c) - e log10(d'_BP^2 + (h_BS - h_UT)^2)
UMA_NLOS = (13.54, 39.08, 20.0, 0.6)  # PL' = a + b log10(d_3D) + c log10(f_c) - e (h_UT - 1.5)
# Table 7.4.1-1, UMi street canyon.
UMI_LOS_PL1 = (32.4, 21.0, 20.0)
UMI_LOS_PL2 = (32.4, 40.0, 20.0, 9.5)
UMI_NLOS = (22.4, 35.3, 21.3, 0.3)  # PL' = 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c) - 0.3 (h_UT - 1.5)
NLOS_REFERENCE_UT_HEIGHT_M = 1.5

# Shadow fading standard deviations of Table 7.4.1-1, dB.
SHADOWING_STD_DB: dict[Scenario, dict[bool, float]] = {
    "uma": {True: 4.0, False: 6.0},
    "umi": {True: 4.0, False: 7.82},
}

# Table 7.4.2-1 LOS probability: Pr = 1 for d_2D <= 18 m, else 18/d + exp(-d/d2)(1 - 18/d) (x UMa height term).
LOS_CERTAIN_DISTANCE_M = 18.0
LOS_DECAY_M: dict[Scenario, float] = {"uma": 63.0, "umi": 36.0}
# UMa C'(h_UT) = 0 for h_UT <= 13 m, ((h_UT - 13) / 10)^1.5 for 13 m < h_UT <= 23 m; the factor multiplies
# 5/4 (d_2D / 100)^3 exp(-d_2D / 150).
UMA_HEIGHT_TERM_MIN_UT_M = 13.0
UMA_HEIGHT_TERM_SPAN_M = 10.0
UMA_HEIGHT_TERM_EXPONENT = 1.5
UMA_HEIGHT_TERM_SCALE = 5.0 / 4.0
UMA_HEIGHT_TERM_DISTANCE_M = 100.0
UMA_HEIGHT_TERM_DECAY_M = 150.0


def distance_3d(d2d: ArrayLike, h_bs: float, h_ut: float) -> NDArray[np.float64]:
    """Straight-line distance between the BS and UT antennas (TR 38.901 Figure 7.4.1-1)."""
    return np.hypot(np.asarray(d2d, dtype=np.float64), h_bs - h_ut)


def breakpoint_distance(h_bs: float, h_ut: float, fc_hz: float) -> float:
    """d'_BP = 4 h'_BS h'_UT f_c / c with h' = h - h_E, h_E = 1 m (Table 7.4.1-1 note 1; f_c in Hz here)."""
    return 4.0 * (h_bs - ENVIRONMENT_HEIGHT_M) * (h_ut - ENVIRONMENT_HEIGHT_M) * fc_hz / SPEED_OF_LIGHT_M_S


def _dual_slope_los(
    d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float, pl1: tuple[float, ...], pl2: tuple[float, ...]
) -> NDArray[np.float64]:
    d2d = np.maximum(np.asarray(d2d, dtype=np.float64), MIN_DISTANCE_2D_M)
    d3d = distance_3d(d2d, h_bs, h_ut)
    log_fc = np.log10(fc_hz / HZ_PER_GHZ)
    d_bp = breakpoint_distance(h_bs, h_ut, fc_hz)
    near = pl1[0] + pl1[1] * np.log10(d3d) + pl1[2] * log_fc
    far = pl2[0] + pl2[1] * np.log10(d3d) + pl2[2] * log_fc - pl2[3] * np.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    return np.where(d2d <= d_bp, near, far)


def uma_los(d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float) -> NDArray[np.float64]:
    """UMa LOS path loss, dB: TR 38.901 Table 7.4.1-1, PL1 up to the breakpoint d'_BP, PL2 beyond it."""
    return _dual_slope_los(d2d, h_bs, h_ut, fc_hz, UMA_LOS_PL1, UMA_LOS_PL2)


def uma_nlos(d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float) -> NDArray[np.float64]:
    """UMa NLOS path loss, dB: TR 38.901 Table 7.4.1-1, max(PL_UMa-LOS, PL'_UMa-NLOS)."""
    return _nlos(d2d, h_bs, h_ut, fc_hz, UMA_NLOS, uma_los)


def umi_los(d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float) -> NDArray[np.float64]:
    """UMi street canyon LOS path loss, dB: TR 38.901 Table 7.4.1-1, PL1 up to d'_BP, PL2 beyond it."""
    return _dual_slope_los(d2d, h_bs, h_ut, fc_hz, UMI_LOS_PL1, UMI_LOS_PL2)


def umi_nlos(d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float) -> NDArray[np.float64]:
    """UMi street canyon NLOS path loss, dB: TR 38.901 Table 7.4.1-1, max(PL_UMi-LOS, PL'_UMi-NLOS)."""
    return _nlos(d2d, h_bs, h_ut, fc_hz, UMI_NLOS, umi_los)


def _nlos(
    d2d: ArrayLike,
    h_bs: float,
    h_ut: float,
    fc_hz: float,
    coefficients: tuple[float, float, float, float],
    los: Callable[[ArrayLike, float, float, float], NDArray[np.float64]],
) -> NDArray[np.float64]:
    """max(PL_LOS, PL'_NLOS), PL'_NLOS = a + b log10(d3D) + c log10(fc/GHz) - e (h_UT - 1.5): Table 7.4.1-1."""
    d2d = np.maximum(np.asarray(d2d, dtype=np.float64), MIN_DISTANCE_2D_M)
    a, b, c, e = coefficients
    nlos = (
        a
        + b * np.log10(distance_3d(d2d, h_bs, h_ut))
        + c * np.log10(fc_hz / HZ_PER_GHZ)
        - e * (h_ut - NLOS_REFERENCE_UT_HEIGHT_M)
    )
    return np.maximum(los(d2d, h_bs, h_ut, fc_hz), nlos)


def path_loss(
    scenario: Scenario, los: ArrayLike, d2d: ArrayLike, h_bs: float, h_ut: float, fc_hz: float
) -> NDArray[np.float64]:
    """Path loss in dB of each link in its LOS state (``los`` broadcasts against ``d2d``), Table 7.4.1-1."""
    if scenario == "uma":
        los_pl, nlos_pl = uma_los(d2d, h_bs, h_ut, fc_hz), uma_nlos(d2d, h_bs, h_ut, fc_hz)
    elif scenario == "umi":
        los_pl, nlos_pl = umi_los(d2d, h_bs, h_ut, fc_hz), umi_nlos(d2d, h_bs, h_ut, fc_hz)
    else:
        raise ValueError(f"unknown scenario {scenario!r}; known: {list(SCENARIOS)}")
    return np.where(np.asarray(los, dtype=bool), los_pl, nlos_pl)


def uma_height_factor(h_ut: float) -> float:
    """C'(h_UT) of the UMa LOS probability, TR 38.901 Table 7.4.2-1: 0 up to 13 m, ((h_UT - 13)/10)^1.5 above."""
    if h_ut <= UMA_HEIGHT_TERM_MIN_UT_M:
        return 0.0
    return float(((h_ut - UMA_HEIGHT_TERM_MIN_UT_M) / UMA_HEIGHT_TERM_SPAN_M) ** UMA_HEIGHT_TERM_EXPONENT)


def _los_base(d2d: NDArray[np.float64], decay_m: float) -> NDArray[np.float64]:
    far = np.maximum(d2d, LOS_CERTAIN_DISTANCE_M)  # avoids dividing by ~0; the near branch is replaced below
    ratio = LOS_CERTAIN_DISTANCE_M / far
    return ratio + np.exp(-far / decay_m) * (1.0 - ratio)


def uma_los_probability(d2d: ArrayLike, h_ut: float) -> NDArray[np.float64]:
    """UMa outdoor LOS probability, TR 38.901 Table 7.4.2-1.

    1 for d_2D <= 18 m, else [18/d + exp(-d/63)(1 - 18/d)] [1 + C'(h_UT) 5/4 (d/100)^3 exp(-d/150)].
    """
    d2d = np.asarray(d2d, dtype=np.float64)
    height = 1.0 + uma_height_factor(h_ut) * UMA_HEIGHT_TERM_SCALE * (d2d / UMA_HEIGHT_TERM_DISTANCE_M) ** 3 * np.exp(
        -d2d / UMA_HEIGHT_TERM_DECAY_M
    )
    probability = _los_base(d2d, LOS_DECAY_M["uma"]) * height
    return np.where(d2d <= LOS_CERTAIN_DISTANCE_M, 1.0, np.minimum(probability, 1.0))


def umi_los_probability(d2d: ArrayLike) -> NDArray[np.float64]:
    """UMi street canyon outdoor LOS probability, TR 38.901 Table 7.4.2-1.

    1 for d_2D <= 18 m, else 18/d + exp(-d/36)(1 - 18/d).
    """
    d2d = np.asarray(d2d, dtype=np.float64)
    return np.where(d2d <= LOS_CERTAIN_DISTANCE_M, 1.0, _los_base(d2d, LOS_DECAY_M["umi"]))


def los_probability(scenario: Scenario, d2d: ArrayLike, h_ut: float) -> NDArray[np.float64]:
    """LOS probability of Table 7.4.2-1 for ``scenario``."""
    if scenario == "uma":
        return uma_los_probability(d2d, h_ut)
    if scenario == "umi":
        return umi_los_probability(d2d)
    raise ValueError(f"unknown scenario {scenario!r}; known: {list(SCENARIOS)}")


def shadowing_std_db(scenario: Scenario, los: ArrayLike) -> NDArray[np.float64]:
    """Log-normal shadow fading std per link, dB, TR 38.901 Table 7.4.1-1 (UMa 4/6, UMi 4/7.82 LOS/NLOS)."""
    if scenario not in SHADOWING_STD_DB:
        raise ValueError(f"unknown scenario {scenario!r}; known: {list(SCENARIOS)}")
    std = SHADOWING_STD_DB[scenario]
    return np.where(np.asarray(los, dtype=bool), std[True], std[False])


# ---- UMa per link, for users of differing heights (the sectorised calibration scenario) -------------------------
# The functions above take one UT height and h_E = 1 m. Those below take a height per user (indoor users on upper
# floors, Table 7.2-1) and an effective environment height per link (Table 7.4.1-1 note 1), all as arrays.

UmaLosFormula = Literal["tr38901", "tr38900"]
UMA_LOS_FORMULAS: tuple[UmaLosFormula, ...] = ("tr38901", "tr38900")
# TR 38.900 V14.0.0 Table 7.4.1-1, UMa LOS, the formula the R1-165974 calibration ran on; TR 38.901 V14.1.0 replaced it
# by TR 36.873's (UMA_LOS_PL1/PL2 above). As coded by the ns-3 mmWave module, which implements TR 38.900
# (model/mmwave-3gpp-propagation-loss-model.cc): PL1 = 32.4 + 20 log10(d_3D) + 20 log10(f_c),
# PL2 = 32.4 + 40 log10(d_3D) + 20 log10(f_c) - 10 log10(d'_BP^2 + (h_BS - h_UT)^2).
UMA_LOS_PL1_TR38900 = (32.4, 20.0, 20.0)
UMA_LOS_PL2_TR38900 = (32.4, 40.0, 20.0, 10.0)
UMA_LOS_COEFFICIENTS: dict[UmaLosFormula, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tr38901": (UMA_LOS_PL1, UMA_LOS_PL2),
    "tr38900": (UMA_LOS_PL1_TR38900, UMA_LOS_PL2_TR38900),
}
# Table 7.4.1-1 note 1: for UMa, h_E = 1 m with probability 1 / (1 + C(d_2D, h_UT)), otherwise uniform on
# {12, 15, ..., h_UT - 1.5} m.
UMA_RANDOM_ENVIRONMENT_HEIGHT_MIN_M = 12.0
UMA_RANDOM_ENVIRONMENT_HEIGHT_STEP_M = 3.0
UMA_RANDOM_ENVIRONMENT_HEIGHT_TOP_GAP_M = 1.5


def uma_height_factors(h_ut: ArrayLike) -> NDArray[np.float64]:
    """C'(h_UT) of Tables 7.4.1-1 (note 1) and 7.4.2-1 per user: 0 up to 13 m, ((h_UT - 13) / 10)^1.5 above."""
    excess = np.maximum(np.asarray(h_ut, dtype=np.float64) - UMA_HEIGHT_TERM_MIN_UT_M, 0.0)
    return np.asarray((excess / UMA_HEIGHT_TERM_SPAN_M) ** UMA_HEIGHT_TERM_EXPONENT, dtype=np.float64)


def uma_distance_factor(d2d: ArrayLike) -> NDArray[np.float64]:
    """g(d_2D) of Table 7.4.1-1 note 1: 0 up to 18 m, (5/4) (d_2D / 100)^3 exp(-d_2D / 150) beyond."""
    d2d = np.asarray(d2d, dtype=np.float64)
    growth = UMA_HEIGHT_TERM_SCALE * (d2d / UMA_HEIGHT_TERM_DISTANCE_M) ** 3 * np.exp(-d2d / UMA_HEIGHT_TERM_DECAY_M)
    return np.where(d2d <= LOS_CERTAIN_DISTANCE_M, 0.0, growth)


def uma_los_probability_per_link(d2d_out: ArrayLike, h_ut: ArrayLike) -> NDArray[np.float64]:
    """UMa LOS probability of Table 7.4.2-1 with a height per user (``h_ut`` broadcasts against ``d2d_out``).

    The table is written in d_2D-out: for an indoor user, the outdoor part of the distance (section 7.4.3).
    """
    d2d_out = np.asarray(d2d_out, dtype=np.float64)
    height = 1.0 + uma_height_factors(h_ut) * uma_distance_factor(d2d_out)
    probability = _los_base(d2d_out, LOS_DECAY_M["uma"]) * height
    return np.where(d2d_out <= LOS_CERTAIN_DISTANCE_M, 1.0, np.minimum(probability, 1.0))


def uma_environment_heights(rng: np.random.Generator, d2d: ArrayLike, h_ut: ArrayLike) -> NDArray[np.float64]:
    """Effective environment height h_E of each link, Table 7.4.1-1 note 1 (``h_ut`` broadcasts against ``d2d``).

    1 m with probability 1 / (1 + C'(h_UT) g(d_2D)), otherwise uniform on {12, 15, ..., h_UT - 1.5} m; C' = 0 below
    13 m, so street-level users always get 1 m.
    """
    d2d = np.asarray(d2d, dtype=np.float64)
    h_ut = np.broadcast_to(np.asarray(h_ut, dtype=np.float64), d2d.shape)
    c = uma_height_factors(h_ut) * uma_distance_factor(d2d)
    raised = rng.random(d2d.shape) >= 1.0 / (1.0 + c)
    top = h_ut - UMA_RANDOM_ENVIRONMENT_HEIGHT_TOP_GAP_M
    candidates = np.floor((top - UMA_RANDOM_ENVIRONMENT_HEIGHT_MIN_M) / UMA_RANDOM_ENVIRONMENT_HEIGHT_STEP_M) + 1
    choice = np.floor(rng.random(d2d.shape) * np.maximum(candidates, 1.0))
    drawn = UMA_RANDOM_ENVIRONMENT_HEIGHT_MIN_M + UMA_RANDOM_ENVIRONMENT_HEIGHT_STEP_M * choice
    return np.where(raised, drawn, ENVIRONMENT_HEIGHT_M)


def uma_path_loss_per_link(
    los: ArrayLike,
    d2d: ArrayLike,
    h_bs: float,
    h_ut: ArrayLike,
    fc_hz: float,
    h_e: ArrayLike,
    formula: UmaLosFormula = "tr38901",
) -> NDArray[np.float64]:
    """UMa path loss in dB of each link in its LOS state, Table 7.4.1-1, with per-user h_UT and per-link h_E.

    LOS: PL1 up to d'_BP = 4 (h_BS - h_E)(h_UT - h_E) f_c / c, PL2 beyond; NLOS: max(PL_LOS, PL'_NLOS).
    ``formula`` picks the LOS coefficients: today's TR 38.901 or TR 38.900 V14.0.0's (``UMA_LOS_COEFFICIENTS``).
    ``los``, ``d2d``, ``h_ut`` and ``h_e`` broadcast; distances below 10 m are evaluated at 10 m.
    """
    if formula not in UMA_LOS_COEFFICIENTS:
        raise ValueError(f"unknown UMa LOS formula {formula!r}; known: {list(UMA_LOS_FORMULAS)}")
    d2d = np.maximum(np.asarray(d2d, dtype=np.float64), MIN_DISTANCE_2D_M)
    h_ut = np.asarray(h_ut, dtype=np.float64)
    h_e = np.asarray(h_e, dtype=np.float64)
    height_gap = h_bs - h_ut
    log_d3d = np.log10(np.hypot(d2d, height_gap))
    log_fc = np.log10(fc_hz / HZ_PER_GHZ)
    d_bp = 4.0 * (h_bs - h_e) * (h_ut - h_e) * fc_hz / SPEED_OF_LIGHT_M_S
    near, far = UMA_LOS_COEFFICIENTS[formula]
    pl1 = near[0] + near[1] * log_d3d + near[2] * log_fc
    pl2 = far[0] + far[1] * log_d3d + far[2] * log_fc - far[3] * np.log10(d_bp**2 + height_gap**2)
    los_loss = np.where(d2d <= d_bp, pl1, pl2)
    a, b, c, e = UMA_NLOS
    nlos_prime = a + b * log_d3d + c * log_fc - e * (h_ut - NLOS_REFERENCE_UT_HEIGHT_M)
    return np.where(np.asarray(los, dtype=bool), los_loss, np.maximum(los_loss, nlos_prime))
