"""Clusters and rays of the TR 38.901 section 7.5 fast-fading model for UMa, as far as they set the departure side.

The multi-path signal strength (``multipath.py``) needs, for each BS-UT link, the cluster powers and the departure
angles of every ray; with an isotropic UT the arrival angles, the delays beyond their role in the powers, and the
phases (averaged out) do not enter. This module draws them, vectorised over links:

- step 4, the large-scale parameters SF, K, DS, ASD, ZSD of Table 7.5-6 Part-1 for the link's condition (LOS,
  NLOS, O2I), log-normal (K normal in dB), cross-correlated by the table's coefficients through the Cholesky factor
  of their correlation matrix with SF first, so the link's shadowing (already drawn by ``coupling.py``) is the SF of
  this vector. mu_lgZSD and the ZOD offset of Table 7.5-7 (UMa) depend on d_2D and h_UT; O2I links take the NLOS
  row. Frequency-dependent means are evaluated at max(f_c, 6 GHz) (Table 7.5-6 note 6, UMa). ASD <= 104 deg and
  ZSD <= 52 deg (step 4). Drawn per link, independently of every other link (no spatial correlation, as for the
  shadowing: users of one drop are never compared with each other).
- step 5, delays (eqs. 7.5-1, 7.5-2): tau'_n = -r_tau DS ln X_n, X_n ~ U(0, 1], sorted and shifted to start at 0.
- step 6, powers (eqs. 7.5-5, 7.5-6): P'_n = exp(-tau_n (r_tau - 1) / (r_tau DS)) 10^(-Z_n / 10),
  Z_n ~ N(0, zeta^2), normalised to sum 1; clusters more than 25 dB below the strongest removed and the rest
  renormalised. For LOS links the angles use the K-factor powers of eq. 7.5-8,
  P_n / (K_R + 1) + delta(n - 1) K_R / (K_R + 1); the channel coefficients (step 11) keep the P_n above and add the
  direct ray with the share K_R / (K_R + 1).
- step 7, AoD (eqs. 7.5-9 .. 7.5-13): phi'_n = 2 (ASD / 1.4) sqrt(-ln(P_n / max P)) / C_phi with C_phi^NLOS of
  Table 7.5-2 for the condition's cluster count, times 1.1035 - 0.028 K - 0.002 K^2 + 0.0001 K^3 in LOS (K in dB,
  eq. 7.5-10); phi_n = X_n phi'_n + Y_n + phi_LOS, X_n uniform on {-1, 1}, Y_n ~ N(0, (ASD / 7)^2); in LOS the
  first cluster is moved onto the direct path (eq. 7.5-12); rays phi_n,m = phi_n + c_ASD alpha_m (eq. 7.5-13) with
  the offsets alpha_m of Table 7.5-3.
- step 7, ZoD (eqs. 7.5-14, 7.5-15, 7.5-19, 7.5-20): theta'_n = -ZSD ln(P_n / max P) / C_theta with C_theta^NLOS of
  Table 7.5-4, times 1.3086 + 0.0339 K - 0.0077 K^2 + 0.0002 K^3 in LOS; theta_n = X_n theta'_n + Y_n +
  theta_LOS + mu_offset,ZOD with Y_n ~ N(0, (ZSD / 7)^2), the first cluster on the direct path in LOS (no offset);
  rays theta_n,m = theta_n + (3/8) 10^(mu_lgZSD) alpha_m, randomly paired with the AoD rays within the cluster
  (step 8), folded into [0, 180] deg.
- step 9, the cross-polarisation ratio of each ray, kappa = 10^(X / 10), X ~ N(mu_XPR, sigma_XPR^2).

Angles in degrees, in the global frame: azimuth counter-clockwise from the x axis, zenith 0 straight up. Values are
typed from TR 38.901 V16 Tables 7.5-2 .. 7.5-7 and checked against ns-3 (three-gpp-channel-model.cc), the nrsls
simulator (propagation/lsp_tables.py) and Sionna's UMa parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio.pathloss import HZ_PER_GHZ

LOS, NLOS, O2I = 0, 1, 2  # link conditions, the three columns of Table 7.5-6
CONDITIONS = (LOS, NLOS, O2I)
LSP_ORDER = ("SF", "K", "DS", "ASD", "ZSD")  # SF first: its draw is the link's shadowing
# Table 7.5-3: ray offset angles within a cluster, for a 1 deg rms angle spread.
RAY_OFFSETS = np.array([0.0447, 0.1413, 0.2492, 0.3715, 0.5129, 0.6797, 0.8844, 1.1481, 1.5195, 2.1551])
RAY_OFFSETS = np.stack([RAY_OFFSETS, -RAY_OFFSETS], axis=-1).ravel()  # +-alpha_1, +-alpha_2, ...
RAYS_PER_CLUSTER = len(RAY_OFFSETS)  # M = 20 (Table 7.5-6)
MAX_CLUSTERS = 20
RAY_DTYPE = np.float32  # per-ray arrays (L x 20 x 20): single precision halves the time; angles to ~1e-5 deg
PERMUTATION_POOL = 4096
UMA_MIN_FREQUENCY_HZ = 6e9  # Table 7.5-6 note 6: UMa below 6 GHz uses f_c = 6 GHz in the LSP formulas
MAX_ASD_DEG = 104.0  # step 4
MAX_ZSD_DEG = 52.0
PRUNING_THRESHOLD_DB = 25.0  # step 6
DB_PER_DECADE = 10.0
AOD_SPREAD_RATIO = 1.4  # the 1.4 of eq. 7.5-9
FLUCTUATION_DIVISOR = 7.0  # Y_n ~ N(0, (spread / 7)^2), eqs. 7.5-11 and 7.5-19
ZOD_RAY_SPREAD_FACTOR = 3.0 / 8.0  # eq. 7.5-20
# K-factor corrections of C_phi (eq. 7.5-10) and C_theta (eq. 7.5-15), polynomials in K (dB), lowest order first.
C_PHI_LOS_POLYNOMIAL = (1.1035, -0.028, -0.002, 0.0001)
C_THETA_LOS_POLYNOMIAL = (1.3086, 0.0339, -0.0077, 0.0002)
# Table 7.5-7 (UMa): mu_lgZSD = max(-0.5, -2.1 d_2D / 1000 - 0.01 (h_UT - 1.5) + intercept);
# ZOD offset (NLOS) = e(f) - 10^(a(f) log10(max(b, d_2D)) + c(f) - 0.07 (h_UT - 1.5)).
ZSD_FLOOR = -0.5
ZSD_DISTANCE_SLOPE_PER_KM = -2.1
ZSD_HEIGHT_SLOPE_PER_M = -0.01
REFERENCE_UT_HEIGHT_M = 1.5
ZOD_OFFSET_A = (-0.782, 0.208)  # a(f) = 0.208 log10(f) - 0.782
ZOD_OFFSET_B_M = 25.0
ZOD_OFFSET_C = (2.03, -0.13)  # c(f) = -0.13 log10(f) + 2.03
ZOD_OFFSET_E = (-5.96, 7.66)  # e(f) = 7.66 log10(f) - 5.96
ZOD_OFFSET_HEIGHT_SLOPE_PER_M = -0.07
M_PER_KM = 1000.0
HALF_TURN_DEG = 180.0
FULL_TURN_DEG = 360.0


@dataclass(frozen=True)
class ConditionTable:
    """The departure-side entries of one UMa column of Table 7.5-6 Part-1 (and Tables 7.5-2, 7.5-4, 7.5-7).

    Means of lg DS (DS in s) and lg ASD (deg) are ``(a, b)`` for a + b log10(f_c / GHz).
    """

    log_ds_mean: tuple[float, float]
    log_ds_std: float
    log_asd_mean: tuple[float, float]
    log_asd_std: float
    log_zsd_intercept: float  # Table 7.5-7
    log_zsd_std: float
    zod_offset: bool  # Table 7.5-7: the NLOS offset, or 0 (LOS)
    k_factor_db: tuple[float, float]  # (mean, std); (0, 0) where the condition has no K
    correlations: dict[tuple[str, str], float]  # the nonzero ones among LSP_ORDER
    clusters: int
    delay_scaling: float  # r_tau
    cluster_shadowing_db: float  # zeta
    cluster_asd_deg: float  # c_ASD
    xpr_db: tuple[float, float]  # (mean, std)
    c_phi_nlos: float  # Table 7.5-2 at ``clusters``
    c_theta_nlos: float  # Table 7.5-4 at ``clusters``
    cholesky: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cholesky", np.linalg.cholesky(self.correlation_matrix()))

    def correlation_matrix(self) -> NDArray[np.float64]:
        """The cross-correlation matrix of the large-scale parameters in ``LSP_ORDER``."""
        index = {name: i for i, name in enumerate(LSP_ORDER)}
        matrix = np.eye(len(LSP_ORDER))
        for (first, second), value in self.correlations.items():
            matrix[index[first], index[second]] = matrix[index[second], index[first]] = value
        return matrix


UMA_TABLES: dict[int, ConditionTable] = {
    LOS: ConditionTable(
        log_ds_mean=(-6.955, -0.0963),
        log_ds_std=0.66,
        log_asd_mean=(1.06, 0.1114),
        log_asd_std=0.28,
        log_zsd_intercept=0.75,
        log_zsd_std=0.40,
        zod_offset=False,
        k_factor_db=(9.0, 3.5),
        correlations={
            ("SF", "DS"): -0.4,
            ("SF", "ASD"): -0.5,
            ("K", "DS"): -0.4,
            ("DS", "ASD"): 0.4,
            ("DS", "ZSD"): -0.2,
            ("ASD", "ZSD"): 0.5,
        },
        clusters=12,
        delay_scaling=2.5,
        cluster_shadowing_db=3.0,
        cluster_asd_deg=5.0,
        xpr_db=(8.0, 4.0),
        c_phi_nlos=1.146,
        c_theta_nlos=1.104,
    ),
    NLOS: ConditionTable(
        log_ds_mean=(-6.28, -0.204),
        log_ds_std=0.39,
        log_asd_mean=(1.5, -0.1144),
        log_asd_std=0.28,
        log_zsd_intercept=0.9,
        log_zsd_std=0.49,
        zod_offset=True,
        k_factor_db=(0.0, 0.0),
        correlations={
            ("SF", "DS"): -0.4,
            ("SF", "ASD"): -0.6,
            ("DS", "ASD"): 0.4,
            ("DS", "ZSD"): -0.5,
            ("ASD", "ZSD"): 0.5,
        },
        clusters=20,
        delay_scaling=2.3,
        cluster_shadowing_db=3.0,
        cluster_asd_deg=2.0,
        xpr_db=(7.0, 3.0),
        c_phi_nlos=1.289,
        c_theta_nlos=1.178,
    ),
    O2I: ConditionTable(  # ZSD and ZOD offset: the NLOS row of Table 7.5-7 (as ns-3 and QuaDRiGa's UMa O2I)
        log_ds_mean=(-6.62, 0.0),
        log_ds_std=0.32,
        log_asd_mean=(1.25, 0.0),
        log_asd_std=0.42,
        log_zsd_intercept=0.9,
        log_zsd_std=0.49,
        zod_offset=True,
        k_factor_db=(0.0, 0.0),
        correlations={
            ("SF", "DS"): -0.5,
            ("SF", "ASD"): 0.2,
            ("DS", "ASD"): 0.4,
            ("DS", "ZSD"): -0.6,
            ("ASD", "ZSD"): -0.2,
        },
        clusters=12,
        delay_scaling=2.2,
        cluster_shadowing_db=4.0,
        cluster_asd_deg=5.0,
        xpr_db=(9.0, 5.0),
        c_phi_nlos=1.146,
        c_theta_nlos=1.104,
    ),
}


@dataclass(frozen=True)
class LargeScaleParameters:
    """Step 4 per link, shape (L,): K (dB, 0 outside LOS), DS (s), ASD and ZSD (deg), mu_lgZSD, ZOD offset (deg)."""

    k_factor_db: NDArray[np.float64]
    delay_spread_s: NDArray[np.float64]
    asd_deg: NDArray[np.float64]
    zsd_deg: NDArray[np.float64]
    log_zsd_mean: NDArray[np.float64]
    zod_offset_deg: NDArray[np.float64]


@dataclass(frozen=True)
class Clusters:
    """Steps 5-9 per link: cluster powers (L, N) summing to 1, Ricean K_R (L,, linear, 0 outside LOS), the rays'
    departure angles and inverse cross-polarisation ratios (L, N, M, single precision), and the direct path's
    angles (L,)."""

    power: NDArray[np.float64]
    k_factor: NDArray[np.float64]
    aod_deg: NDArray[np.float32]
    zod_deg: NDArray[np.float32]
    inverse_xpr: NDArray[np.float32]
    los_aod_deg: NDArray[np.float64]
    los_zod_deg: NDArray[np.float64]


def _per_link(condition: NDArray[np.int_], value: dict[int, float]) -> NDArray[np.float64]:
    return np.asarray(np.choose(condition, [value[c] for c in CONDITIONS]), dtype=np.float64)


def _table_value(condition: NDArray[np.int_], name: str) -> NDArray[np.float64]:
    return _per_link(condition, {c: float(getattr(UMA_TABLES[c], name)) for c in CONDITIONS})


def _polynomial(coefficients: tuple[float, ...], x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(sum(c * x**power for power, c in enumerate(coefficients)), dtype=np.float64)


def zsd_mean_and_zod_offset(
    condition: ArrayLike, d2d: ArrayLike, h_ut: ArrayLike, fc_hz: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """mu_lgZSD and mu_offset,ZOD (deg) of Table 7.5-7 (UMa) per link; f_c at least 6 GHz (Table 7.5-6 note 6)."""
    condition = np.asarray(condition, dtype=int)
    d2d = np.asarray(d2d, dtype=np.float64)
    height = np.asarray(h_ut, dtype=np.float64) - REFERENCE_UT_HEIGHT_M
    intercept = _table_value(condition, "log_zsd_intercept")
    mean = np.maximum(
        ZSD_FLOOR, ZSD_DISTANCE_SLOPE_PER_KM * d2d / M_PER_KM + ZSD_HEIGHT_SLOPE_PER_M * height + intercept
    )
    log_f = np.log10(max(fc_hz, UMA_MIN_FREQUENCY_HZ) / HZ_PER_GHZ)
    a = ZOD_OFFSET_A[0] + ZOD_OFFSET_A[1] * log_f
    c = ZOD_OFFSET_C[0] + ZOD_OFFSET_C[1] * log_f
    e = ZOD_OFFSET_E[0] + ZOD_OFFSET_E[1] * log_f
    exponent = a * np.log10(np.maximum(ZOD_OFFSET_B_M, d2d)) + c + ZOD_OFFSET_HEIGHT_SLOPE_PER_M * height
    offset = np.where(_table_value(condition, "zod_offset") > 0, e - 10**exponent, 0.0)
    return np.asarray(mean, dtype=np.float64), np.asarray(offset, dtype=np.float64)


def draw_large_scale_parameters(
    rng: np.random.Generator,
    condition: ArrayLike,
    shadow_gain_normal: ArrayLike,
    d2d: ArrayLike,
    h_ut: ArrayLike,
    fc_hz: float,
) -> LargeScaleParameters:
    """Step 4 for links of the given conditions, shape (L,), each independent of the others.

    ``shadow_gain_normal`` is the link's shadowing as a standard normal with the sign of a gain (Table 7.5-6's SF
    correlates as one: a strong link has small spreads); the other parameters are drawn conditionally on it through
    the Cholesky factor of the condition's correlation matrix (SF first, so its row is (1, 0, ...)).
    """
    condition = np.asarray(condition, dtype=int)
    d2d = np.asarray(d2d, dtype=np.float64)
    links = condition.shape[0]
    normals = np.vstack([np.asarray(shadow_gain_normal, dtype=np.float64)[None], rng.standard_normal((4, links))])
    cholesky = np.stack([UMA_TABLES[c].cholesky for c in CONDITIONS])[condition]  # (L, 5, 5)
    z = dict(zip(LSP_ORDER, np.einsum("lij,jl->il", cholesky, normals), strict=True))
    log_f = np.log10(max(fc_hz, UMA_MIN_FREQUENCY_HZ) / HZ_PER_GHZ)

    def log_normal(mean: str, std: str, name: str) -> NDArray[np.float64]:
        a = _per_link(condition, {c: getattr(UMA_TABLES[c], mean)[0] for c in CONDITIONS})
        b = _per_link(condition, {c: getattr(UMA_TABLES[c], mean)[1] for c in CONDITIONS})
        return np.asarray(10 ** (a + b * log_f + _table_value(condition, std) * z[name]), dtype=np.float64)

    k_mean = _per_link(condition, {c: UMA_TABLES[c].k_factor_db[0] for c in CONDITIONS})
    k_std = _per_link(condition, {c: UMA_TABLES[c].k_factor_db[1] for c in CONDITIONS})
    zsd_mean, zod_offset = zsd_mean_and_zod_offset(condition, d2d, h_ut, fc_hz)
    zsd = 10 ** (zsd_mean + _table_value(condition, "log_zsd_std") * z["ZSD"])
    return LargeScaleParameters(
        k_factor_db=np.where(condition == LOS, k_mean + k_std * z["K"], 0.0),
        delay_spread_s=log_normal("log_ds_mean", "log_ds_std", "DS"),
        asd_deg=np.minimum(log_normal("log_asd_mean", "log_asd_std", "ASD"), MAX_ASD_DEG),
        zsd_deg=np.minimum(zsd, MAX_ZSD_DEG),
        log_zsd_mean=zsd_mean,
        zod_offset_deg=zod_offset,
    )


def cluster_powers(
    rng: np.random.Generator, condition: NDArray[np.int_], delay_spread_s: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Steps 5-6: cluster powers (L, 20) in delay order, summing to 1, pruned at -25 dB; 0 beyond the count."""
    exists = np.arange(MAX_CLUSTERS) < _table_value(condition, "clusters")[:, None]
    r_tau = _table_value(condition, "delay_scaling")[:, None]
    spread = delay_spread_s[:, None]
    uniform = 1.0 - rng.random(exists.shape)  # X_n on (0, 1]
    delays = np.where(exists, -r_tau * spread * np.log(uniform), np.inf)
    delays = np.sort(delays, axis=1)
    delays = np.where(exists, delays - delays[:, :1], 0.0)
    shadowing_db = _table_value(condition, "cluster_shadowing_db")[:, None] * rng.standard_normal(exists.shape)
    power = np.where(exists, np.exp(-delays * (r_tau - 1) / (r_tau * spread)) * 10 ** (-shadowing_db / 10), 0.0)
    power /= power.sum(axis=1, keepdims=True)
    power = np.where(power >= power.max(axis=1, keepdims=True) * 10 ** (-PRUNING_THRESHOLD_DB / 10), power, 0.0)
    return np.asarray(power / power.sum(axis=1, keepdims=True), dtype=np.float64)


def angle_powers(power: NDArray[np.float64], k_factor: NDArray[np.float64]) -> NDArray[np.float64]:
    """Eq. 7.5-8: the powers the angles are drawn from, the direct path's share K_R / (K_R + 1) on cluster 1."""
    scaled = power / (k_factor[:, None] + 1)
    scaled[:, 0] += k_factor / (k_factor + 1)
    return scaled


def fold_zenith_deg(zenith_deg: NDArray[np.floating]) -> NDArray[np.floating]:
    """A zenith angle folded into [0, 180] deg: theta mod 360, then 360 - theta where it exceeds 180 (step 7).

    Exact for |theta| <= 540 deg (cluster zeniths stay well inside: the direct path plus a few spreads).
    """
    magnitude = np.abs(zenith_deg)
    beyond = magnitude > HALF_TURN_DEG
    magnitude[beyond] = np.abs(FULL_TURN_DEG - magnitude[beyond])
    return magnitude


def _coupled_offsets(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Table 7.5-3 offsets in a random order per cluster, shape (*shape, M): the random AoD-ZoD coupling of step 8.

    Each cluster takes one of ``PERMUTATION_POOL`` permutations drawn uniformly for this call, which is far cheaper
    than one shuffle per cluster and, for the ray-power averages computed here, the same in distribution.
    """
    pool = np.argsort(rng.random((PERMUTATION_POOL, RAYS_PER_CLUSTER)), axis=1)
    offsets = RAY_OFFSETS.astype(RAY_DTYPE)[pool]
    return np.asarray(offsets[rng.integers(PERMUTATION_POOL, size=shape)], dtype=RAY_DTYPE)


def draw_clusters(
    rng: np.random.Generator,
    condition: ArrayLike,
    lsp: LargeScaleParameters,
    los_aod_deg: ArrayLike,
    los_zod_deg: ArrayLike,
) -> Clusters:
    """Steps 5-9 for links (L,) with their step-4 parameters and direct-path angles (the geometry's AoD and ZoD)."""
    condition = np.asarray(condition, dtype=int)
    los_aod = np.asarray(los_aod_deg, dtype=np.float64)
    los_zod = np.asarray(los_zod_deg, dtype=np.float64)
    los = condition == LOS
    k_db = lsp.k_factor_db
    k_factor = np.where(los, 10 ** (k_db / DB_PER_DECADE), 0.0)
    power = cluster_powers(rng, condition, lsp.delay_spread_s)
    kept = power > 0
    relative = angle_powers(power, k_factor)
    relative = np.where(kept, relative / relative.max(axis=1, keepdims=True), 1.0)
    log_relative = np.log(relative)
    c_phi = _table_value(condition, "c_phi_nlos") * np.where(los, _polynomial(C_PHI_LOS_POLYNOMIAL, k_db), 1.0)
    c_theta = _table_value(condition, "c_theta_nlos") * np.where(los, _polynomial(C_THETA_LOS_POLYNOMIAL, k_db), 1.0)
    shape = power.shape

    def signs() -> NDArray[np.float64]:
        return np.asarray(2.0 * rng.integers(0, 2, size=shape) - 1.0, dtype=np.float64)

    asd, zsd = lsp.asd_deg[:, None], lsp.zsd_deg[:, None]
    aod = signs() * 2 * (asd / AOD_SPREAD_RATIO) * np.sqrt(-log_relative) / c_phi[:, None]
    aod += asd / FLUCTUATION_DIVISOR * rng.standard_normal(shape)
    zod = signs() * (-zsd * log_relative / c_theta[:, None])
    zod += zsd / FLUCTUATION_DIVISOR * rng.standard_normal(shape)
    aod = np.where(los[:, None], aod - aod[:, :1], aod) + los_aod[:, None]  # eqs. 7.5-11, 7.5-12
    zod = np.where(los[:, None], zod - zod[:, :1], zod + lsp.zod_offset_deg[:, None]) + los_zod[:, None]

    ray_aod = aod.astype(RAY_DTYPE)[..., None] + (
        _table_value(condition, "cluster_asd_deg").astype(RAY_DTYPE)[:, None, None] * RAY_OFFSETS.astype(RAY_DTYPE)
    )
    ray_zod = _coupled_offsets(rng, shape)
    ray_zod *= (ZOD_RAY_SPREAD_FACTOR * 10**lsp.log_zsd_mean).astype(RAY_DTYPE)[:, None, None]
    ray_zod += zod.astype(RAY_DTYPE)[..., None]
    ray_zod = fold_zenith_deg(ray_zod)
    mean = _per_link(condition, {c: UMA_TABLES[c].xpr_db[0] for c in CONDITIONS}).astype(RAY_DTYPE)[:, None, None]
    std = _per_link(condition, {c: UMA_TABLES[c].xpr_db[1] for c in CONDITIONS}).astype(RAY_DTYPE)[:, None, None]
    inverse_xpr = rng.standard_normal(ray_aod.shape, dtype=RAY_DTYPE)  # becomes 10^(-X / 10), X = mean + std N
    inverse_xpr *= std
    inverse_xpr += mean
    inverse_xpr *= -float(np.log(10.0) / DB_PER_DECADE)
    np.exp(inverse_xpr, out=inverse_xpr)
    return Clusters(
        power=power,
        k_factor=k_factor,
        aod_deg=ray_aod,
        zod_deg=ray_zod,
        inverse_xpr=inverse_xpr,
        los_aod_deg=los_aod,
        los_zod_deg=los_zod,
    )
