"""Indoor users: their heights (TR 38.901 Table 7.2-1) and the outdoor-to-indoor (O2I) loss of section 7.4.3.

An indoor user's path loss is PL = PL_b + PL_tw + PL_in + N(0, sigma_P^2) (section 7.4.3.1), where PL_b is the
outdoor path loss of Table 7.4.1-1 over the whole distance, PL_tw the loss through the external wall,
PL_in = 0.5 d_2D-in the loss inside the building and sigma_P the spread of the penetration loss. Table 7.4.3-2
has two wall models built from the material losses of Table 7.4.3-1 (f in GHz):

    low loss:  PL_tw = 5 - 10 log10(0.3 10^(-L_glass/10) + 0.7 10^(-L_concrete/10)),      sigma_P = 4.4 dB
    high loss: PL_tw = 5 - 10 log10(0.7 10^(-L_IRRglass/10) + 0.3 10^(-L_concrete/10)),   sigma_P = 6.5 dB
    L_glass = 2 + 0.2 f,  L_IRRglass = 23 + 0.3 f,  L_concrete = 5 + 4 f

For UMa and UMi d_2D-in is the smaller of two independent U(0, 25 m) draws (Table 7.4.3-2).

Below 6 GHz, UMa and UMi single-frequency simulations may use instead the model of Table 7.4.3-3, kept for
backwards compatibility with TR 36.873: PL_tw = 20 dB, PL_in = 0.5 d_2D-in with d_2D-in ~ U(0, 25 m) (one draw),
sigma_P = 0 (``model="legacy"``); ns-3, Sionna and MATLAB's h38901Channel switch to it automatically below 6 GHz.

The building type, d_2D-in and the N(0, sigma_P^2) draw belong to the user: every link of an indoor user carries
the same O2I loss.
Indoor users stand on floor n_fl ~ U{1..N_fl} of a building of N_fl ~ U{4..8} floors at h_UT = 3 (n_fl - 1) + 1.5 m
(Table 7.2-1); outdoor users at 1.5 m.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio.pathloss import HZ_PER_GHZ

# Table 7.4.3-1: penetration loss L = a + b f (f in GHz) of a material, dB.
STANDARD_GLASS = (2.0, 0.2)
IRR_GLASS = (23.0, 0.3)  # infrared-reflecting glass
CONCRETE = (5.0, 4.0)
# Table 7.4.3-2: PL_tw = 5 - 10 log10(sum_i share_i 10^(-L_i / 10)); the shares of glass and concrete in the wall.
WALL_LOSS_OFFSET_DB = 5.0
LOW_LOSS_WALL = ((0.3, STANDARD_GLASS), (0.7, CONCRETE))
HIGH_LOSS_WALL = ((0.7, IRR_GLASS), (0.3, CONCRETE))
LOW_LOSS_STD_DB = 4.4  # sigma_P, Table 7.4.3-2
HIGH_LOSS_STD_DB = 6.5
INDOOR_LOSS_DB_PER_M = 0.5  # PL_in = 0.5 d_2D-in, Table 7.4.3-2
INDOOR_DISTANCE_DRAWS = 2  # d_2D-in = min of two U(0, d_max), Table 7.4.3-2 (UMa, UMi)
LEGACY_WALL_LOSS_DB = 20.0  # Table 7.4.3-3 (below 6 GHz, UMa and UMi): PL_tw = 20 dB, sigma_P = 0
LEGACY_INDOOR_DISTANCE_DRAWS = 1  # Table 7.4.3-3: d_2D-in ~ U(0, 25 m)
O2iModel = Literal["tr38901", "legacy"]  # Table 7.4.3-2's low/high-loss walls, or Table 7.4.3-3
O2I_MODELS: tuple[O2iModel, ...] = ("tr38901", "legacy")
# Shadow fading std of an O2I link, UMa: the O2I column of Table 7.5-6 Part-1 (LOS 4 dB and NLOS 6 dB are Table
# 7.4.1-1's); the large-scale parameters of a link are drawn by its condition, LOS, NLOS or O2I (section 7.5 step 4).
# The value is TR 36.873's 3D-UMa O2I std, carried into TR 38.901; the nrsls simulator uses the same 4/6/7 dB.
UMA_O2I_SHADOWING_STD_DB = 7.0
# Table 7.2-1: h_UT = 3 (n_fl - 1) + 1.5 m.
FLOOR_HEIGHT_M = 3.0
GROUND_FLOOR_UT_HEIGHT_M = 1.5
DB_PER_DECADE = 10.0

Wall = tuple[tuple[float, tuple[float, float]], ...]


def material_loss_db(material: tuple[float, float], fc_hz: float) -> float:
    """Penetration loss a + b f_GHz of a Table 7.4.3-1 material, dB."""
    a, b = material
    return a + b * fc_hz / HZ_PER_GHZ


def wall_loss_db(wall: Wall, fc_hz: float) -> float:
    """PL_tw of a Table 7.4.3-2 wall model: 5 - 10 log10(sum of the materials' shares of transmitted power)."""
    transmitted = sum(share * 10 ** (-material_loss_db(material, fc_hz) / DB_PER_DECADE) for share, material in wall)
    return WALL_LOSS_OFFSET_DB - DB_PER_DECADE * float(np.log10(transmitted))


def low_loss_wall_db(fc_hz: float) -> float:
    """PL_tw of the low-loss model (standard glass and concrete), Table 7.4.3-2."""
    return wall_loss_db(LOW_LOSS_WALL, fc_hz)


def high_loss_wall_db(fc_hz: float) -> float:
    """PL_tw of the high-loss model (IRR glass and concrete), Table 7.4.3-2."""
    return wall_loss_db(HIGH_LOSS_WALL, fc_hz)


def draw_indoor_distances(
    rng: np.random.Generator, indoor: ArrayLike, max_distance_m: float, model: O2iModel = "tr38901"
) -> NDArray[np.float64]:
    """d_2D-in per user: the smaller of two U(0, ``max_distance_m``) draws for indoor users (one draw for the
    ``legacy`` model of Table 7.4.3-3), 0 outdoors."""
    indoor = np.asarray(indoor, dtype=bool)
    count = LEGACY_INDOOR_DISTANCE_DRAWS if model == "legacy" else INDOOR_DISTANCE_DRAWS
    draws = rng.uniform(0.0, max_distance_m, size=(count, *indoor.shape)).min(axis=0)
    return np.where(indoor, draws, 0.0)


def draw_o2i_loss_db(
    rng: np.random.Generator,
    fc_hz: float,
    indoor_distance_m: ArrayLike,
    indoor: ArrayLike,
    high_loss_fraction: float,
    model: O2iModel = "tr38901",
) -> NDArray[np.float64]:
    """PL_tw + PL_in + N(0, sigma_P^2) per user (0 outdoors); a building is high-loss with ``high_loss_fraction``.

    ``model="legacy"``: 20 dB + 0.5 d_2D-in, no spread (Table 7.4.3-3); ``high_loss_fraction`` does not apply.
    """
    indoor = np.asarray(indoor, dtype=bool)
    if model == "legacy":
        legacy = LEGACY_WALL_LOSS_DB + INDOOR_LOSS_DB_PER_M * np.asarray(indoor_distance_m, dtype=np.float64)
        return np.where(indoor, legacy, 0.0)
    high_loss = rng.random(indoor.shape) < high_loss_fraction
    wall = np.where(high_loss, high_loss_wall_db(fc_hz), low_loss_wall_db(fc_hz))
    spread = np.where(high_loss, HIGH_LOSS_STD_DB, LOW_LOSS_STD_DB) * rng.standard_normal(indoor.shape)
    loss = wall + INDOOR_LOSS_DB_PER_M * np.asarray(indoor_distance_m, dtype=np.float64) + spread
    return np.where(indoor, loss, 0.0)


def draw_ut_heights(
    rng: np.random.Generator, indoor: ArrayLike, floors: tuple[int, int], outdoor_height_m: float
) -> NDArray[np.float64]:
    """h_UT per user: indoors 3 (n_fl - 1) + 1.5 m, n_fl ~ U{1..N_fl}, N_fl ~ U{floors}; outdoors as given."""
    indoor = np.asarray(indoor, dtype=bool)
    fewest, most = floors
    building_floors = rng.integers(fewest, most, size=indoor.shape, endpoint=True)
    floor = np.floor(rng.random(indoor.shape) * building_floors) + 1  # uniform on 1..N_fl
    indoor_height = FLOOR_HEIGHT_M * (floor - 1) + GROUND_FLOOR_UT_HEIGHT_M
    return np.where(indoor, indoor_height, outdoor_height_m)
