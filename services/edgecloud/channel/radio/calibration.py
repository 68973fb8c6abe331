"""Coupling-gain and geometry CDFs of a calibration campaign, the quantities 3GPP calibrations publish.

A drop places users over the 19-site, 3-sector layout (``coupling.drop_users``) and computes their coupling gains
to all 57 sectors (``coupling.coupling_gain_db``). Each user is served by its strongest sector (maximum coupling
gain, 0 dB handover margin, TR 38.901 Table 7.8-1), and reports:

- the coupling gain to the serving sector (dB; the calibrations' coupling loss is its negative);
- the geometry, the downlink SINR without fast fading with every sector transmitting at full power:
  S / (sum of the other 56 sectors' received powers + N), N = -174 dBm/Hz + 10 log10(B) + NF.

Users are independent within and across drops (no spatial correlation is modelled), so the samples of all drops
are pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio import coupling
from edgecloud.channel.radio.campaign import CalibrationCampaign
from edgecloud.channel.radio.sectors import NUM_SECTORS

# Ten users per sector in each drop, the drop of the 3GPP calibrations (TR 36.873 section 8, as ns-3's TR 38.901
# calibration test and NVIDIA Aerial's UMa calibration drop them).
USERS_PER_SECTOR = 10
USERS_PER_DROP = USERS_PER_SECTOR * NUM_SECTORS
REPORTED_PERCENTILES = (5, 50, 95)
PERCENT = 100.0
DB_PER_DECADE = 10.0
# Half-width of the percentile window over which the CDF's slope is measured for a percentile's standard error.
DENSITY_WINDOW_PERCENT = 1.0


@dataclass(frozen=True)
class CalibrationSamples:
    """Per user of all drops: coupling gain to the serving sector and geometry, dB."""

    coupling_gain_db: NDArray[np.float64]
    geometry_db: NDArray[np.float64]


def serving_metrics(campaign: CalibrationCampaign, gain_db: ArrayLike) -> CalibrationSamples:
    """Serving-sector coupling gain and geometry of each user from its coupling gains to all sectors, (n, 57)."""
    gain_db = np.asarray(gain_db, dtype=np.float64)
    serving = np.argmax(gain_db, axis=1)
    received_mw = 10 ** ((campaign.bs_tx_power_dbm + gain_db) / DB_PER_DECADE)
    signal_mw = received_mw[np.arange(len(gain_db)), serving]
    interference_mw = received_mw.sum(axis=1) - signal_mw
    noise_mw = 10 ** (campaign.noise_power_dbm / DB_PER_DECADE)
    geometry = DB_PER_DECADE * np.log10(signal_mw / (interference_mw + noise_mw))
    return CalibrationSamples(coupling_gain_db=gain_db[np.arange(len(gain_db)), serving], geometry_db=geometry)


def run_campaign(
    campaign: CalibrationCampaign, rng: np.random.Generator, drops: int, users_per_drop: int = USERS_PER_DROP
) -> CalibrationSamples:
    """``drops`` independent drops of ``users_per_drop`` users, their samples pooled."""
    if drops < 1 or users_per_drop < 1:
        raise ValueError(f"drops and users_per_drop must be >= 1, got {drops} and {users_per_drop}")
    results = []
    for _ in range(drops):
        users = coupling.drop_users(campaign, rng, users_per_drop)
        gains = coupling.coupling_gain_db(campaign, users.positions, users.heights, users.indoor, rng)
        results.append(serving_metrics(campaign, gains))
    return CalibrationSamples(
        coupling_gain_db=np.concatenate([result.coupling_gain_db for result in results]),
        geometry_db=np.concatenate([result.geometry_db for result in results]),
    )


def percentiles(values: ArrayLike, levels: Sequence[float] = REPORTED_PERCENTILES) -> dict[float, float]:
    """Empirical percentiles (linear interpolation between order statistics), by level in percent."""
    values = np.asarray(values, dtype=np.float64)
    return {level: float(np.percentile(values, level)) for level in levels}


def percentile_standard_error(values: ArrayLike, level: float) -> float:
    """Sampling standard error of an empirical percentile: sqrt(p (1 - p) / n) / f(x_p), in the values' unit.

    The density f at the percentile is the inverse slope of the empirical CDF over +-1 percentile point.
    """
    values = np.asarray(values, dtype=np.float64)
    p = level / PERCENT
    low, high = np.percentile(values, [level - DENSITY_WINDOW_PERCENT, level + DENSITY_WINDOW_PERCENT])
    quantile_slope = (high - low) / (2 * DENSITY_WINDOW_PERCENT / PERCENT)  # dx/dp = 1 / f(x_p)
    return float(np.sqrt(p * (1 - p) / len(values)) * quantile_slope)
