"""Multi-path signal strength of a BS port: the wideband received power averaged over fast fading, per sector.

TR 36.873 section 8.1 defines the coupling gain of the IMT-2020 calibration (RP-180524, TR 37.910 Annex A) on the
reference-signal received power of eq. 8.1-1: the channel of TR 38.901 section 7.5 summed over its clusters and
rays, each ray weighted by the antenna patterns in its own direction, averaged over fast fading (time, frequency)
and over the UT's receive ports. Averaged over the rays' random phases (step 10) the cross terms vanish, so for the
BS port's field (F_theta, F_phi) in a ray's departure direction and a UT port's field (G_theta, G_phi):

    scattered ray (step 11, XPR kappa of step 9):          |G_theta F_theta|^2 + |G_phi F_phi|^2
                                                           + (|G_theta F_phi|^2 + |G_phi F_theta|^2) / kappa
    direct ray (step 11, [[1, 0], [0, -1]]):               |G_theta F_theta - G_phi F_phi|^2

and the port's strength relative to the large-scale gain (path loss, shadowing, O2I loss) is

    S = 1 / (K_R + 1) sum_n sum_m P_n / M g_n,m + K_R / (K_R + 1) g_LOS         (step 11; K_R = 0 outside LOS)

with g the ray's power averaged over the UT ports. The UT ports are isotropic (0 dBi): one vertically polarised
port (G = (1, 0)), or two ports polarised at 0 and 90 deg (G = (1, 0) and (0, 1)), the P = 2 UT of the IMT-2020
evaluation; their powers are averaged (TR 36.873 eq. 8.1-1 takes the mean over receive antennas). The BS port is
the tilted column of ``antenna.py`` with elements slanted by zeta (model 2): F_theta^2 = A AF cos^2 zeta,
F_phi^2 = A AF sin^2 zeta, A the element's and AF the column's power gain in the ray's direction. The co-sited
sectors share the link's clusters (one set of step 4-9 parameters per BS-UT link) and differ by their patterns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edgecloud.channel.radio import antenna
from edgecloud.channel.radio.clusters import RAYS_PER_CLUSTER, Clusters

UE_POLARISATIONS = (1, 2)  # one vertical port, or ports at 0 and 90 deg
DB_PER_DECADE = 10.0
Power = NDArray[np.floating] | float  # a power (|F|^2), per ray or one for all
_CURVATURE_PER_DEG2 = antenna.PATTERN_CURVATURE_DB / antenna.HALF_POWER_BEAMWIDTH_DEG**2  # 12 / 65^2


def nlos_ray_power(f_theta_sq: Power, f_phi_sq: Power, inverse_xpr: Power, ue_ports: int) -> Power:
    """Phase-averaged power of a scattered ray, mean over the UT ports (module docstring)."""
    vertical = f_theta_sq + inverse_xpr * f_phi_sq
    if ue_ports == 1:
        return vertical
    return 0.5 * (vertical + inverse_xpr * f_theta_sq + f_phi_sq)


def los_ray_power(f_theta_sq: Power, f_phi_sq: Power, ue_ports: int) -> Power:
    """Power of the direct ray, mean over the UT ports: no polarisation coupling (step 11)."""
    if ue_ports == 1:
        return f_theta_sq
    return 0.5 * (f_theta_sq + f_phi_sq)


def element_attenuation_db(
    vertical_db: NDArray[np.floating], azimuth_deg: NDArray[np.floating]
) -> NDArray[np.floating]:
    """min(-(A_V + A_H), A_max) of Table 7.3-1, the element's attenuation below G_E,max (dB >= 0).

    The same pattern as ``antenna.element_gain_dbi`` (element gain = G_E,max - this), split so that the zenith
    part -A_V (``vertical_db``), common to the three sectors, is computed once, in the arrays' own precision.
    """
    azimuth = azimuth_deg - antenna.FULL_TURN_DEG * np.rint(azimuth_deg * (1.0 / antenna.FULL_TURN_DEG))  # [-180, 180]
    horizontal = np.minimum(azimuth * azimuth * _CURVATURE_PER_DEG2, antenna.FRONT_TO_BACK_LIMIT_DB)
    horizontal += vertical_db
    return np.minimum(horizontal, antenna.FRONT_TO_BACK_LIMIT_DB, out=horizontal)


def vertical_attenuation_db(zenith_deg: NDArray[np.floating]) -> NDArray[np.floating]:
    """-A_V(theta) of Table 7.3-1, dB >= 0."""
    tilt = zenith_deg - antenna.HORIZON_ZENITH_DEG
    return np.minimum(tilt * tilt * _CURVATURE_PER_DEG2, antenna.SIDE_LOBE_LIMIT_DB)


def signal_strength(
    clusters: Clusters,
    boresights_deg: Sequence[float],
    num_elements: int,
    spacing_wavelengths: float,
    tilt_deg: float,
    max_gain_dbi: float,
    slant_deg: float,
    ue_ports: int,
) -> NDArray[np.float64]:
    """S of each link (L,) toward each sector (``boresights_deg``), linear, shape (L, sectors).

    Per ray, everything but the element's azimuth pattern is common to the co-sited sectors: the power P_n / M,
    the column's gain AF(theta), the polarisation factor (``nlos_ray_power`` of the slant's power split, linear
    in the port's power) and the vertical cut; each sector then adds its horizontal cut.
    """
    if ue_ports not in UE_POLARISATIONS:
        raise ValueError(f"ue_ports must be one of {UE_POLARISATIONS}, got {ue_ports}")
    theta_share, phi_share = antenna.slant_power_split(slant_deg)
    links = len(clusters.k_factor)
    dtype = clusters.zod_deg.dtype
    polarisation = nlos_ray_power(theta_share, phi_share, clusters.inverse_xpr, ue_ports)  # Python floats: float32
    ray_weight = (clusters.power / RAYS_PER_CLUSTER).astype(dtype)[..., None] * polarisation
    ray_weight *= antenna.array_power_gain(clusters.zod_deg, num_elements, spacing_wavelengths, tilt_deg)
    ray_weight = ray_weight.reshape(links, -1)
    ray_vertical = vertical_attenuation_db(clusters.zod_deg).reshape(links, -1)
    ray_aod = clusters.aod_deg.reshape(links, -1)
    los_weight = los_ray_power(theta_share, phi_share, ue_ports) * antenna.array_power_gain(
        clusters.los_zod_deg, num_elements, spacing_wavelengths, tilt_deg
    )
    los_vertical = vertical_attenuation_db(clusters.los_zod_deg)
    minus_neper = -float(np.log(10.0) / DB_PER_DECADE)
    k = clusters.k_factor
    strengths = []
    for boresight in boresights_deg:
        attenuation = element_attenuation_db(ray_vertical, ray_aod - float(boresight))
        attenuation *= minus_neper
        scattered = np.einsum("lr,lr->l", ray_weight, np.exp(attenuation, out=attenuation), dtype=np.float64)
        los_attenuation = element_attenuation_db(los_vertical, clusters.los_aod_deg - boresight)
        direct = los_weight * 10 ** (-los_attenuation / DB_PER_DECADE)
        strengths.append(scattered / (k + 1) + direct * k / (k + 1))
    return 10 ** (max_gain_dbi / DB_PER_DECADE) * np.stack(strengths, axis=-1)
