"""Coupling gain of every user to every sector of the 19-site, 3-sector layout: large-scale terms only.

For user u and sector k of site s, the site taken at its wrap-around image nearest to u (``sectors.py``):

    CG_uk = G_BS,k(theta_us, phi_us) + G_UT - PL_us - SF_us - L_O2I,u        (dB; coupling loss = -CG)

- PL_us: UMa path loss of TR 38.901 Table 7.4.1-1 over the whole 2D distance, in the link's LOS state, with the
  user's height and the link's effective environment height h_E (note 1, random for users at 13 m or more);
- the LOS state: one Bernoulli draw per (user, site) from Table 7.4.2-1, evaluated at d_2D-out = d_2D - d_2D-in
  for indoor users (section 7.4.3), with the height term C'(h_UT);
- SF_us: log-normal shadowing, independent per (user, site), std 4 dB LOS / 6 dB NLOS (Table 7.4.1-1) outdoors and
  7 dB for the O2I links of indoor users (Table 7.5-6);
- L_O2I,u: wall + indoor loss + N(0, sigma_P^2) of section 7.4.3, one draw per indoor user (``o2i.py``), with the
  walls of Table 7.4.3-2 or the below-6-GHz model of Table 7.4.3-3 (``o2i_model``);
- G_BS,k, by the campaign's ``signal_strength``:
  ``direct_path``: the sector's tilted panel toward the direct path (``antenna.py``), the LOS-angle gain of the
  TR 38.901 Table 7.8-1 large-scale calibration;
  ``multipath``: 10 log10 of the multi-path signal strength of the sector's port (``multipath.py``), the rays of the
  TR 38.901 section 7.5 clusters (``clusters.py``) weighted by the polarised port's pattern in their directions and
  averaged over fast fading, the RSRP of TR 36.873 eq. 8.1-1; the link's LOS state picks the LOS, NLOS or (indoor
  users) O2I parameters, and its shadowing is the SF of the correlated large-scale parameters;
- G_UT the isotropic UT's gain.

The three sectors of a site share its link (distance, LOS state, shadowing, clusters): they differ only by antenna
pattern. No fast fading beyond its average. ``coupling_gain_db`` only needs positions, heights and indoor states,
so another model (a slot loop) can call it with its own users; ``drop_users`` makes a calibration drop of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio import antenna, clusters, multipath, o2i, pathloss, sectors
from edgecloud.channel.radio.campaign import CalibrationCampaign

DB_PER_DECADE = 10.0


@dataclass(frozen=True)
class Users:
    """One drop of users: positions (n, 2) in metres, heights (n,) in metres, indoor (n,) flags."""

    positions: NDArray[np.float64]
    heights: NDArray[np.float64]
    indoor: NDArray[np.bool_]


def drop_users(campaign: CalibrationCampaign, rng: np.random.Generator, n: int) -> Users:
    """``n`` users uniform over the 19 hexagons, a share ``indoor_fraction`` indoors at Table 7.2-1 heights."""
    positions = sectors.drop_positions(rng, n, campaign.isd_m, campaign.min_distance_m)
    indoor = rng.random(n) < campaign.indoor_fraction
    heights = o2i.draw_ut_heights(rng, indoor, campaign.building_floors, campaign.ue_height_outdoor_m)
    return Users(positions=positions, heights=heights, indoor=indoor)


def coupling_gain_db(
    campaign: CalibrationCampaign,
    positions: ArrayLike,
    heights: ArrayLike,
    indoor: ArrayLike,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Coupling gain of each user to each sector, dB, shape (n, 57); sector ``3 s + k`` is sector k of site s.

    Draws the link-level randomness from ``rng``: LOS states, h_E and shadowing per (user, site), the indoor
    distance, building type and penetration-loss spread per indoor user.
    """
    positions = np.asarray(positions, dtype=np.float64)
    heights = np.asarray(heights, dtype=np.float64)
    indoor = np.asarray(indoor, dtype=bool)
    n = len(positions)
    offsets = sectors.nearest_image_offsets(positions, campaign.isd_m)  # (n, 19, 2)
    d2d = np.hypot(offsets[..., 0], offsets[..., 1])
    h_ut = heights[:, None]

    indoor_distance = o2i.draw_indoor_distances(rng, indoor, campaign.indoor_distance_max_m, campaign.o2i_model)
    d2d_out = np.maximum(d2d - indoor_distance[:, None], 0.0)
    los = rng.random(d2d.shape) < pathloss.uma_los_probability_per_link(d2d_out, h_ut)
    h_e = pathloss.uma_environment_heights(rng, d2d, h_ut)
    path_loss = pathloss.uma_path_loss_per_link(
        los, d2d, campaign.bs_height_m, h_ut, campaign.carrier_frequency_hz, h_e, campaign.uma_los_formula
    )
    shadowing_std = np.where(indoor[:, None], o2i.UMA_O2I_SHADOWING_STD_DB, pathloss.shadowing_std_db("uma", los))
    shadowing_normal = rng.standard_normal(d2d.shape)  # a loss: positive is weaker
    shadowing = shadowing_std * shadowing_normal
    o2i_loss = o2i.draw_o2i_loss_db(
        rng, campaign.carrier_frequency_hz, indoor_distance, indoor, campaign.high_loss_fraction, campaign.o2i_model
    )
    link_gain = -(path_loss + shadowing) - o2i_loss[:, None]  # (n, 19)

    zenith = antenna.line_of_sight_zenith_deg(d2d, campaign.bs_height_m, h_ut)
    azimuth = np.degrees(np.arctan2(offsets[..., 1], offsets[..., 0]))
    if campaign.signal_strength == "multipath":
        condition = np.where(indoor[:, None], clusters.O2I, np.where(los, clusters.LOS, clusters.NLOS))
        bs_gain = _multipath_gain_db(campaign, rng, condition, -shadowing_normal, d2d, h_ut, azimuth, zenith)
    else:
        bs_gain = antenna.panel_gain_dbi(
            zenith[..., None],
            azimuth[..., None] - np.asarray(campaign.sector_boresights_deg),
            campaign.antenna_elements,
            campaign.antenna_spacing_wavelengths,
            campaign.electrical_tilt_deg,
            campaign.element_max_gain_dbi,
        )  # (n, 19, 3)
    gain = link_gain[..., None] + bs_gain + campaign.ue_antenna_gain_dbi
    return np.asarray(gain.reshape(n, sectors.NUM_SECTORS), dtype=np.float64)


def _multipath_gain_db(
    campaign: CalibrationCampaign,
    rng: np.random.Generator,
    condition: NDArray[np.int_],
    shadow_gain_normal: NDArray[np.float64],
    d2d: NDArray[np.float64],
    h_ut: NDArray[np.float64],
    azimuth_deg: NDArray[np.float64],
    zenith_deg: NDArray[np.float64],
) -> NDArray[np.float64]:
    """10 log10 of each sector's multi-path signal strength over each (user, site) link, dB, shape (n, 19, 3)."""
    shape = d2d.shape
    lsp = clusters.draw_large_scale_parameters(
        rng,
        condition.ravel(),
        shadow_gain_normal.ravel(),
        d2d.ravel(),
        np.broadcast_to(h_ut, shape).ravel(),
        campaign.carrier_frequency_hz,
    )
    rays = clusters.draw_clusters(rng, condition.ravel(), lsp, azimuth_deg.ravel(), zenith_deg.ravel())
    strength = multipath.signal_strength(
        rays,
        campaign.sector_boresights_deg,
        campaign.antenna_elements,
        campaign.antenna_spacing_wavelengths,
        campaign.electrical_tilt_deg,
        campaign.element_max_gain_dbi,
        campaign.bs_polarisation_slant_deg,
        campaign.ue_polarisations,
    )
    return np.asarray(DB_PER_DECADE * np.log10(strength).reshape(*shape, -1), dtype=np.float64)
