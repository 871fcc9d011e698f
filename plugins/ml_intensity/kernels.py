"""numba kernels of the intensity likelihood (one reflection per loop iteration).

Modified Bessel functions are evaluated here (numba cannot call scipy):
for x < 20 by the power series I₀ = Σ t^k/(k!)², I₁ = (x/2)·Σ t^k/(k!(k+1)!),
t = x²/4 (Abramowitz & Stegun 9.6.10); for x ≥ 20 by the asymptotic
expansion I_ν(x) ~ eˣ/√(2πx)·Σ_k (−1)^k Π_{j≤k}(4ν² − (2j−1)²)/(k!·(8x)^k)
(A&S 9.7.1), summed until the terms drop below 1e-17.  Both are returned
scaled by e^(−x), like scipy's i0e/i1e; tests compare them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_SERIES_LIMIT = 20.0
_TINY = 1e-17
_LOG_RANGE = 40.0
_MEAS_K = 12.0


@numba.njit(cache=True, fastmath=False)
def bessel_i0e_i1e(x: float) -> tuple[float, float]:
    """(e^(−x)·I₀(x), e^(−x)·I₁(x)) for x ≥ 0."""
    if x < _SERIES_LIMIT:
        t = 0.25 * x * x
        term0 = 1.0
        term1 = 1.0
        s0 = 1.0
        s1 = 1.0
        k = 1
        while True:
            term0 *= t / (k * k)
            term1 *= t / (k * (k + 1))
            s0 += term0
            s1 += term1
            if term0 < _TINY * s0 and term1 < _TINY * s1:
                break
            k += 1
        scale = math.exp(-x)
        return s0 * scale, 0.5 * x * s1 * scale
    c0 = 1.0
    c1 = 1.0
    s0 = 1.0
    s1 = 1.0
    inv8x = 1.0 / (8.0 * x)
    for k in range(1, 60):
        odd2 = (2.0 * k - 1.0) ** 2
        c0 *= odd2 * inv8x / k
        c1 *= -(4.0 - odd2) * inv8x / k
        s0 += c0
        s1 += c1
        if abs(c0) < _TINY * s0 and abs(c1) < _TINY * abs(s1):
            break
    norm = 1.0 / math.sqrt(2.0 * math.pi * x)
    return s0 * norm, s1 * norm


@numba.njit(cache=True, fastmath=False)
def _log_cosh(x: float) -> float:
    ax = abs(x)
    return ax + math.log1p(math.exp(-2.0 * ax)) - math.log(2.0)


@numba.njit(cache=True, fastmath=False)
def _log_term(u, io, sig, a, sig2, centric):
    """(ln integrand, ∂ ln p/∂a, ∂ ln p/∂Σ) at true amplitude u (−inf at u = 0, acentric)."""
    meas = -((io - u * u) ** 2) / (2.0 * sig * sig)
    q = (u * u + a * a) / sig2
    if centric:
        x = u * a / sig2
        th = math.tanh(x)
        g = meas + 0.5 * math.log(2.0 / (math.pi * sig2)) - 0.5 * q + _log_cosh(x)
        return g, (-a + u * th) / sig2, (-0.5 + 0.5 * q - x * th) / sig2
    if u <= 0.0:
        return -np.inf, 0.0, 0.0
    x = 2.0 * u * a / sig2
    i0e, i1e = bessel_i0e_i1e(x)
    m = i1e / i0e
    g = meas + math.log(2.0 * u / sig2) - q + math.log(i0e) + x
    return g, (-2.0 * a + 2.0 * u * m) / sig2, (-1.0 + q - x * m) / sig2


@numba.njit(cache=True, fastmath=False)
def _rough_log_term(u, io, sig, a, sig2, centric):
    """The log-integrand with ln I₀(x) ≈ x − ½ ln(1 + 2πx) (|error| < 0.28), for bracketing."""
    meas = -((io - u * u) ** 2) / (2.0 * sig * sig)
    q = (u * u + a * a) / sig2
    if centric:
        return meas + 0.5 * math.log(2.0 / (math.pi * sig2)) - 0.5 * q + _log_cosh(u * a / sig2)
    if u <= 0.0:
        return -np.inf
    x = 2.0 * u * a / sig2
    return meas + math.log(2.0 * u / sig2) - q + x - 0.5 * math.log1p(2.0 * math.pi * x)


@numba.njit(cache=True, fastmath=False)
def _bracket(io, sig, a, sig2, centric, n):
    """[lo, hi] where the log-integrand is within 40 of its maximum (two uniform passes;
    the approximate ln I₀ is compensated by a threshold of 41)."""
    lo = math.sqrt(max(io - _MEAS_K * sig, 0.0))
    hi = math.sqrt(max(io + _MEAS_K * sig, 2.0 * _LOG_RANGE * sig * sig / max(-io, sig)))
    g = np.empty(n)
    for _ in range(2):
        step = (hi - lo) / (n - 1)
        gmax = -np.inf
        for j in range(n):
            g[j] = _rough_log_term(lo + j * step, io, sig, a, sig2, centric)
            gmax = max(gmax, g[j])
        first, last = n - 1, 0
        for j in range(n):
            if g[j] >= gmax - _LOG_RANGE - 1.0:
                first = min(first, j)
                last = max(last, j)
        new_lo = lo + max(first - 1, 0) * step
        hi = lo + min(last + 1, n - 1) * step
        lo = new_lo
    return lo, hi


@numba.njit(cache=True, fastmath=False, parallel=True)
def intensity_nll(io, sig, a, sig2, centric, nodes, weights, n_coarse):
    """Per reflection: T = −ln ∫ N(Io; u², σ²) p(u | a, Σ) du (constants dropped),
    E_post[∂ ln p/∂a] and E_post[∂ ln p/∂Σ]."""
    n = io.shape[0]
    t = np.empty(n)
    e_da = np.empty(n)
    e_ds = np.empty(n)
    k = nodes.shape[0]
    for i in numba.prange(n):
        lo, hi = _bracket(io[i], sig[i], a[i], sig2[i], centric[i], n_coarse)
        half = 0.5 * (hi - lo)
        gs = np.empty(k)
        das = np.empty(k)
        dss = np.empty(k)
        gmax = -np.inf
        for j in range(k):
            gs[j], das[j], dss[j] = _log_term(lo + half * (nodes[j] + 1.0), io[i], sig[i], a[i],
                                              sig2[i], centric[i])
            gmax = max(gmax, gs[j])
        total = 0.0
        sa = 0.0
        ss = 0.0
        for j in range(k):
            w = half * weights[j] * math.exp(gs[j] - gmax)
            total += w
            sa += w * das[j]
            ss += w * dss[j]
        t[i] = -(gmax + math.log(total))
        e_da[i] = sa / total
        e_ds[i] = ss / total
    return t, e_da, e_ds
