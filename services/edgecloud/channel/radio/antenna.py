"""Base-station antenna of the 3GPP calibrations: the TR 38.901 element pattern and a tilted vertical panel.

The element is that of TR 38.901 section 7.3, Table 7.3-1 (angles in degrees, in the antenna's local coordinate
system: zenith theta, 90 deg on the horizon; azimuth phi, 0 on boresight):

    A_V(theta) = -min(12 ((theta - 90) / theta_3dB)^2, SLA_V)       vertical cut
    A_H(phi)   = -min(12 (phi / phi_3dB)^2, A_max)                   horizontal cut
    A(theta, phi) = -min(-(A_V + A_H), A_max) + G_E,max               3D pattern, dBi

with theta_3dB = phi_3dB = 65 deg, SLA_V = A_max = 30 dB and G_E,max = 8 dBi.

The panel is a column of M elements d_V apart (TR 38.901 section 7.3, one column, one polarisation) driven by one
transceiver unit (TXRU) with the sub-array virtualisation of TR 36.897 section 5.2.2:

    w_m = M^-1/2 exp(-j 2 pi (m - 1) d_V cos(theta_etilt)),    v_m(theta) = exp(j 2 pi (m - 1) d_V cos(theta))

(d_V in wavelengths), so the beam points at the electrical tilt theta_etilt and the panel's gain is the element's
plus the array gain 10 log10 |sum_m w_m v_m|^2, at most 10 log10 M. The calibrations of TR 38.901 Table 7.8-1
(M = 10, d_V = 0.5 lambda, 102 deg) and RP-180524 (M = 8, 99 deg) map one such column to the reference-signal port.
No mechanical tilt: the local and global zenith coincide, and the local azimuth is the global one minus the
sector's boresight.

For the multi-path signal strength (``multipath.py``) the element is polarised: TR 38.901 section 7.3.2, model 2
(eq. 7.3-5), gives an element slanted by zeta the field components

    F_theta(theta, phi) = sqrt(A(theta, phi)) cos(zeta),    F_phi(theta, phi) = sqrt(A(theta, phi)) sin(zeta)

(linear A), so a +-45 deg element radiates half its power in each of the theta and phi polarisations in every
direction; zeta = 0 is the vertically polarised element. Without mechanical tilt the rotation from the local to the
global frame is about the z axis only, which leaves the theta and phi components unchanged (eq. 7.1-15, psi = 0).
The column's power gain |sum_m w_m v_m|^2 has the closed form sin^2(M x / 2) / (M sin^2(x / 2)) with
x = 2 pi d_V (cos theta - cos theta_etilt) (``array_power_gain``), which the ray sums use.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

ELEMENT_MAX_GAIN_DBI = 8.0  # G_E,max, Table 7.3-1
HALF_POWER_BEAMWIDTH_DEG = 65.0  # theta_3dB = phi_3dB, Table 7.3-1
SIDE_LOBE_LIMIT_DB = 30.0  # SLA_V, Table 7.3-1
FRONT_TO_BACK_LIMIT_DB = 30.0  # A_max, Table 7.3-1
PATTERN_CURVATURE_DB = 12.0  # the 12 of 12 (x / x_3dB)^2: 3 dB down at half the half-power beamwidth
HORIZON_ZENITH_DEG = 90.0
HALF_TURN_DEG = 180.0
FULL_TURN_DEG = 360.0
DB_PER_DECADE = 10.0
DEGENERATE_ARRAY_FACTOR = 1e-12  # below this M sin^2(x / 2), the column's gain is its limit M (x a multiple of 2 pi)


def element_gain_dbi(
    zenith_deg: ArrayLike, azimuth_deg: ArrayLike, max_gain_dbi: float = ELEMENT_MAX_GAIN_DBI
) -> NDArray[np.float64]:
    """Gain of the Table 7.3-1 element in the direction (zenith, azimuth), local coordinates, dBi."""
    zenith = np.asarray(zenith_deg, dtype=np.float64)
    azimuth = wrap_azimuth_deg(azimuth_deg)
    vertical = -np.minimum(
        PATTERN_CURVATURE_DB * ((zenith - HORIZON_ZENITH_DEG) / HALF_POWER_BEAMWIDTH_DEG) ** 2, SIDE_LOBE_LIMIT_DB
    )
    horizontal = -np.minimum(PATTERN_CURVATURE_DB * (azimuth / HALF_POWER_BEAMWIDTH_DEG) ** 2, FRONT_TO_BACK_LIMIT_DB)
    return -np.minimum(-(vertical + horizontal), FRONT_TO_BACK_LIMIT_DB) + max_gain_dbi


def array_gain_db(
    zenith_deg: ArrayLike, num_elements: int, spacing_wavelengths: float, tilt_deg: float
) -> NDArray[np.float64]:
    """10 log10 |sum_m w_m v_m(theta)|^2 of an M-element vertical column steered to ``tilt_deg`` (TR 36.897 5.2.2)."""
    if num_elements < 1:
        raise ValueError(f"num_elements must be >= 1, got {num_elements}")
    zenith = np.radians(np.asarray(zenith_deg, dtype=np.float64))
    offset = 2 * np.pi * spacing_wavelengths * (np.cos(zenith) - np.cos(np.radians(tilt_deg)))
    element_index = np.arange(num_elements)
    response = np.exp(1j * offset[..., None] * element_index).sum(axis=-1) / np.sqrt(num_elements)
    return np.asarray(DB_PER_DECADE * np.log10(np.abs(response) ** 2), dtype=np.float64)


def array_power_gain(
    zenith_deg: ArrayLike, num_elements: int, spacing_wavelengths: float, tilt_deg: float
) -> NDArray[np.floating]:
    """|sum_m w_m v_m(theta)|^2 of the column, linear, in closed form: sin^2(M x / 2) / (M sin^2(x / 2)).

    Keeps the precision of ``zenith_deg`` if it is a float array (the ray sums pass single precision).
    """
    if num_elements < 1:
        raise ValueError(f"num_elements must be >= 1, got {num_elements}")
    zenith = np.asarray(zenith_deg)
    zenith = np.radians(zenith if np.issubdtype(zenith.dtype, np.floating) else zenith.astype(np.float64))
    tilt_cosine = float(np.cos(np.radians(tilt_deg)))  # a Python float: NumPy scalars would promote float32
    half = np.pi * spacing_wavelengths * (np.cos(zenith) - tilt_cosine)  # x / 2
    denominator = num_elements * np.sin(half) ** 2
    singular = denominator < DEGENERATE_ARRAY_FACTOR
    ratio = np.sin(num_elements * half) ** 2 / np.where(singular, 1.0, denominator)
    return np.where(singular, zenith.dtype.type(num_elements), ratio)


def slant_power_split(slant_deg: float) -> tuple[float, float]:
    """(cos^2 zeta, sin^2 zeta): the shares of an element's power in F_theta and F_phi (eq. 7.3-5, model 2)."""
    slant = np.radians(slant_deg)
    return float(np.cos(slant) ** 2), float(np.sin(slant) ** 2)


def slant_field_pattern(
    zenith_deg: ArrayLike, azimuth_deg: ArrayLike, slant_deg: float, max_gain_dbi: float = ELEMENT_MAX_GAIN_DBI
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(F_theta, F_phi) of the Table 7.3-1 element slanted by ``slant_deg``, model 2 (eq. 7.3-5), amplitudes."""
    amplitude = np.sqrt(10 ** (element_gain_dbi(zenith_deg, azimuth_deg, max_gain_dbi) / DB_PER_DECADE))
    slant = np.radians(slant_deg)
    return amplitude * np.cos(slant), amplitude * np.sin(slant)


def panel_gain_dbi(
    zenith_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    num_elements: int,
    spacing_wavelengths: float,
    tilt_deg: float,
    max_gain_dbi: float = ELEMENT_MAX_GAIN_DBI,
) -> NDArray[np.float64]:
    """Gain of the tilted vertical panel toward (zenith, azimuth): element gain plus array gain, dBi."""
    return element_gain_dbi(zenith_deg, azimuth_deg, max_gain_dbi) + array_gain_db(
        zenith_deg, num_elements, spacing_wavelengths, tilt_deg
    )


def wrap_azimuth_deg(azimuth_deg: ArrayLike) -> NDArray[np.float64]:
    """Azimuth folded into [-180, 180) degrees."""
    azimuth = np.asarray(azimuth_deg, dtype=np.float64)
    return np.asarray((azimuth + HALF_TURN_DEG) % FULL_TURN_DEG - HALF_TURN_DEG, dtype=np.float64)


def line_of_sight_zenith_deg(d2d: ArrayLike, h_bs: float, h_ut: ArrayLike) -> NDArray[np.float64]:
    """Zenith angle of the direct path from a BS antenna at ``h_bs`` to a user: 90 deg plus the depression angle."""
    depression = np.arctan2(h_bs - np.asarray(h_ut, dtype=np.float64), np.asarray(d2d, dtype=np.float64))
    return np.asarray(HORIZON_ZENITH_DEG + np.degrees(depression), dtype=np.float64)
