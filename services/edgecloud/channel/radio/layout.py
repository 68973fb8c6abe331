"""Hexagonal site layout, uniform user drops and random-waypoint mobility.

The layout is the serving site at the origin and the first ring of 6 interfering sites at the
inter-site distance (ISD), the 7-site core of TR 38.901's hexagonal grid (Table 7.2-1 uses 19 sites of
3 sectors; we keep the ring that dominates interference, see docs/radio-model.md). The serving cell is
the site's Voronoi region: a hexagon of apothem ISD/2 and circumradius ISD/sqrt(3). Users are dropped
uniformly in it, no closer than the minimum BS-UT distance of Table 7.2-1, by rejection sampling.

With several sites scheduling (``scheduling_cells`` in the radio file) users are dropped over their
hexagons instead: one of those sites drawn uniformly, then a point uniform in its hexagon.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

NUM_INTERFERING_SITES = 6  # first ring of the hexagonal grid
NUM_SITES = 1 + NUM_INTERFERING_SITES
SERVING_SITE = 0
HEXAGON_SIDES = 6
# Neighbours sit at 30 + 60 k degrees, so the serving hexagon has a vertex on the x axis.
NEIGHBOUR_FIRST_ANGLE_RAD = np.pi / 6
# A hexagon fills 3 sqrt(3) / (2 pi) ~ 83% of its circumscribed disk; drawing this many more candidates than
# needed per round makes a second round rare.
DROP_OVERSAMPLING = 1.6


def site_positions(isd_m: float) -> NDArray[np.float64]:
    """Site coordinates, shape (7, 2): the serving site at the origin, then the first ring at distance ISD."""
    angles = NEIGHBOUR_FIRST_ANGLE_RAD + 2 * np.pi * np.arange(NUM_INTERFERING_SITES) / HEXAGON_SIDES
    ring = isd_m * np.column_stack([np.cos(angles), np.sin(angles)])
    return np.vstack([np.zeros((1, 2)), ring])


def cell_radius(isd_m: float) -> float:
    """Circumradius of the serving hexagon, ISD / sqrt(3)."""
    return float(isd_m / np.sqrt(3.0))


def in_serving_cell(points: ArrayLike, isd_m: float) -> NDArray[np.bool_]:
    """True where a point (shape (..., 2)) is in the serving site's Voronoi hexagon.

    A point is closer to the origin than to the neighbour at s exactly when p . s / |s| <= |s| / 2 = ISD / 2.
    """
    points = np.asarray(points, dtype=np.float64)
    neighbours = site_positions(isd_m)[1:]
    projections = points @ (neighbours / isd_m).T
    return np.all(projections <= isd_m / 2 + 1e-9, axis=-1)


def drop_uniform(rng: np.random.Generator, n: int, isd_m: float, min_distance_m: float) -> NDArray[np.float64]:
    """``n`` positions uniform over the serving hexagon with |p| >= ``min_distance_m``, shape (n, 2).

    Rejection sampling from the bounding square: accepted points are uniform over the accepted region.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    radius = cell_radius(isd_m)
    accepted: list[NDArray[np.float64]] = []
    missing = n
    while missing > 0:
        candidates = rng.uniform(-radius, radius, size=(int(missing * DROP_OVERSAMPLING) + HEXAGON_SIDES, 2))
        keep = in_serving_cell(candidates, isd_m) & (np.hypot(candidates[:, 0], candidates[:, 1]) >= min_distance_m)
        chosen = candidates[keep][:missing]
        accepted.append(chosen)
        missing -= len(chosen)
    return np.concatenate(accepted) if accepted else np.zeros((0, 2))


def site_of(points: ArrayLike, isd_m: float) -> NDArray[np.int64]:
    """Index of the site whose hexagon holds each point (the nearest site), or -1 outside the seven hexagons."""
    offsets = np.asarray(points, dtype=np.float64)[:, None, :] - site_positions(isd_m)[None, :, :]
    inside = in_serving_cell(offsets.reshape(-1, 2), isd_m).reshape(offsets.shape[:2])
    nearest = np.hypot(offsets[..., 0], offsets[..., 1]).argmin(axis=1)
    return np.where(inside.any(axis=1), nearest, -1)


def drop_uniform_layout(
    rng: np.random.Generator, n: int, isd_m: float, min_distance_m: float, num_sites: int = NUM_SITES
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``n`` positions uniform over the hexagons of the first ``num_sites`` sites, and the site of each."""
    sites = rng.integers(num_sites, size=n)
    return drop_uniform(rng, n, isd_m, min_distance_m) + site_positions(isd_m)[sites], sites


def distances_to_sites(positions: ArrayLike, isd_m: float) -> NDArray[np.float64]:
    """2D distance of each position (shape (n, 2)) to each site, shape (n, 7)."""
    positions = np.asarray(positions, dtype=np.float64)
    offsets = positions[:, None, :] - site_positions(isd_m)[None, :, :]
    return np.hypot(offsets[..., 0], offsets[..., 1])


def walk_waypoints(
    rng: np.random.Generator,
    positions: NDArray[np.float64],
    waypoints: NDArray[np.float64],
    distance_m: float,
    isd_m: float,
    min_distance_m: float,
) -> None:
    """Random-waypoint mobility: move every user ``distance_m`` toward its waypoint, in place.

    A user that reaches its waypoint draws a new one uniformly in the cell and walks on with the distance
    left. The cell is convex, so the straight walk between two points of it stays inside.
    """
    remaining = np.full(len(positions), float(distance_m))
    while True:
        moving = remaining > 0
        if not moving.any():
            return
        offset = waypoints[moving] - positions[moving]
        gap = np.hypot(offset[:, 0], offset[:, 1])
        step = np.minimum(gap, remaining[moving])
        direction = np.divide(offset, gap[:, None], out=np.zeros_like(offset), where=gap[:, None] > 0)
        positions[moving] += direction * step[:, None]
        remaining[moving] -= step
        arrived = np.flatnonzero(moving)[step >= gap]
        if len(arrived):
            waypoints[arrived] = drop_uniform(rng, len(arrived), isd_m, min_distance_m)
