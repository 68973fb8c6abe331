"""Rayleigh fast fading, correlated in time by a first-order autoregressive (AR(1)) process.

Each (user, site, RB) link has a complex gain h ~ CN(0, 1) (so E|h|^2 = 1 and |h|^2 is exponential).
Slot to slot it evolves as h[t+1] = rho h[t] + sqrt(1 - rho^2) w, w ~ CN(0, 1), which keeps the
distribution stationary. rho is Jakes' autocorrelation at one slot, J0(2 pi f_d T_slot), with the
maximum Doppler f_d = v f_c / c (Clarke/Jakes isotropic scattering). An AR(1) process has lag-n
correlation rho^n, so n slots are advanced at once with rho^n; this matches Jakes' J0 at lag 1 only,
which is the usual price of the AR(1) approximation (docs/radio-model.md).

No scipy: J0 is computed from Bessel's integral J0(x) = (1/pi) int_0^pi cos(x sin t) dt with the
trapezoidal rule, which converges geometrically for this smooth periodic integrand.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecloud.channel.radio.pathloss import SPEED_OF_LIGHT_M_S

# Trapezoidal intervals for Bessel's integral: the rule's error is 2 (J_2N(x) + J_4N(x) + ...), below 1e-15
# for |x| < 200 with N = 256 (the fading needs x = 2 pi f_d T_slot, well below 1 at vehicular speeds).
BESSEL_NODES = 256
HALF = 0.5  # each real dimension of CN(0, 1) has variance 1/2


def bessel_j0(x: ArrayLike) -> NDArray[np.float64]:
    """Bessel function of the first kind, order 0, by Bessel's integral (1/pi) int_0^pi cos(x sin t) dt."""
    x = np.asarray(x, dtype=np.float64)
    theta = np.linspace(0.0, np.pi, BESSEL_NODES + 1)
    weights = np.full(BESSEL_NODES + 1, 1.0 / BESSEL_NODES)
    weights[[0, -1]] *= HALF
    values = np.cos(x[..., None] * np.sin(theta)) @ weights
    return np.asarray(values, dtype=np.float64)


def doppler_hz(speed_m_s: float, carrier_hz: float) -> float:
    """Maximum Doppler shift f_d = v f_c / c."""
    return speed_m_s * carrier_hz / SPEED_OF_LIGHT_M_S


def slot_correlation(speed_m_s: float, carrier_hz: float, slot_s: float) -> float:
    """Jakes' one-slot autocorrelation rho = J0(2 pi f_d T_slot) (1 for a static user)."""
    return float(bessel_j0(2 * np.pi * doppler_hz(speed_m_s, carrier_hz) * slot_s))


def complex_gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.complex64]:
    """Independent CN(0, 1) samples (unit mean power), complex64."""
    parts = rng.standard_normal((*shape, 2), dtype=np.float32) * np.float32(np.sqrt(HALF))
    return parts.view(np.complex64)[..., 0]


def ar1_advance(h: NDArray[np.complex64], rho: float, n_slots: int, rng: np.random.Generator) -> None:
    """Advance the fading ``h`` by ``n_slots`` slots in place: h <- rho^n h + sqrt(1 - rho^(2n)) w."""
    if n_slots <= 0 or h.size == 0:
        return
    lag = rho**n_slots
    innovation = np.float32(np.sqrt(max(0.0, 1.0 - lag * lag)))
    h *= np.float32(lag)
    if innovation > 0:
        noise = complex_gaussian(rng, h.shape)
        noise *= innovation
        h += noise


def power(h: NDArray[np.complex64]) -> NDArray[np.float32]:
    """|h|^2 without the square root of ``abs``."""
    return np.square(h.real) + np.square(h.imag)
