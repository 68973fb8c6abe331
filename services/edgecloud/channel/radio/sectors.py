"""Nineteen sites of three sectors on a hexagonal grid, with wrap-around: the layout of the 3GPP calibrations.

TR 38.901 Table 7.2-1 (UMa, UMi) and Table 7.8-1: a centre site and two rings, 19 sites, each with three sectors.
The grid keeps ``layout.py``'s orientation: the first ring sits at 30 + 60 k degrees, so the lattice is spanned by
a1 = ISD (cos 30, sin 30) and a2 = ISD (cos 90, sin 90), every site's hexagon (apothem ISD/2) has a vertex on the
x axis, and the sector boresights 30, 150 and 270 deg point at neighbouring sites as in the 3GPP layout.

Wrap-around: the 19-site cluster tiles the plane when translated by the rotations by k x 60 deg of 3 a1 + 2 a2
(|3 a1 + 2 a2| = sqrt(19) ISD). A user sees every site at the nearest of its seven images (the site itself and its
six translates), the geographic wrap-around of TR 36.814 A.2.1.1, so a user at the edge of the cluster has as many
neighbours around it as one in the middle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio import layout

NUM_SITES = 19
SECTORS_PER_SITE = 3
NUM_SECTORS = NUM_SITES * SECTORS_PER_SITE
FIRST_RING_SITES = 6
WRAP_SHIFT = (3, 2)  # the cluster translation 3 a1 + 2 a2
CLUSTER_SITES_PER_ISD_SQUARED = 19.0  # |3 a1 + 2 a2|^2 / ISD^2 = 9 + 4 + 2 x 3 x 2 cos 60 deg
HEXAGON_APOTHEMS_PER_CIRCUMRADIUS = np.sqrt(3.0) / 2


def site_positions(isd_m: float) -> NDArray[np.float64]:
    """The 19 site coordinates, shape (19, 2): the centre, the first ring (as ``layout.py``), the second ring."""
    first_ring = layout.site_positions(isd_m)[1:]
    next_in_ring = np.roll(first_ring, -1, axis=0)
    second_ring = np.stack([2 * first_ring, first_ring + next_in_ring], axis=1).reshape(-1, 2)
    return np.vstack([np.zeros((1, 2)), first_ring, second_ring])


def wrap_translations(isd_m: float) -> NDArray[np.float64]:
    """The 7 cluster images' offsets, shape (7, 2): none, then 3 a1 + 2 a2 rotated by k x 60 deg."""
    a1, a2 = layout.site_positions(isd_m)[1:3]
    shift = WRAP_SHIFT[0] * a1 + WRAP_SHIFT[1] * a2
    angles = 2 * np.pi * np.arange(FIRST_RING_SITES) / FIRST_RING_SITES
    rotation = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], axis=-1).reshape(-1, 2, 2)
    return np.vstack([np.zeros((1, 2)), rotation @ shift])


def cluster_radius(isd_m: float) -> float:
    """Circumradius of the cluster's tile, sqrt(19/3) ISD: no user is farther from the nearest image of any site."""
    return float(np.sqrt(CLUSTER_SITES_PER_ISD_SQUARED) * isd_m / 2 / HEXAGON_APOTHEMS_PER_CIRCUMRADIUS)


def nearest_image_offsets(positions: ArrayLike, isd_m: float) -> NDArray[np.float64]:
    """Offset of each user from the nearest image of each site, shape (n, 19, 2) (user minus site image)."""
    positions = np.asarray(positions, dtype=np.float64)
    images = site_positions(isd_m)[:, None, :] + wrap_translations(isd_m)[None, :, :]  # (19, 7, 2)
    offsets = positions[:, None, None, :] - images[None]  # (n, 19, 7, 2)
    nearest = np.argmin(np.einsum("nsik,nsik->nsi", offsets, offsets), axis=-1)
    return np.take_along_axis(offsets, nearest[:, :, None, None], axis=2)[:, :, 0, :]


def drop_positions(rng: np.random.Generator, n: int, isd_m: float, min_distance_m: float) -> NDArray[np.float64]:
    """``n`` users uniform over the 19 site hexagons, each at least ``min_distance_m`` from its site, shape (n, 2).

    A point of a site's hexagon is at least ISD/2 from every other site and image, so the minimum distance to the
    own site is the minimum distance to all of them.
    """
    sites = site_positions(isd_m)[rng.integers(NUM_SITES, size=n)]
    return sites + layout.drop_uniform(rng, n, isd_m, min_distance_m)
