"""French–Wilson conversion of intensities to amplitudes.

French, S. & Wilson, K. (1978). Acta Cryst. A34, 517–525.  The true
intensity J = |F|² has a Wilson prior (acentric p(J) = exp(−J/S)/S, centric
p(J) ∝ J^(−1/2) exp(−J/2S), S = ε·Σ(s) the expected intensity), the
measurement I ~ N(J, σ_I²); the posterior mean <F> = <J^½> and
σ(<F>) = (<J> − <F>²)^½ replace (I, σ_I).

Completing the square in J turns the posterior into a truncated normal
weighted by J^(c−1)/2, c = 1 acentric / 0 centric.  With u = F/√σ_I and
z = (I − σ_I²/S)/σ_I (acentric) or (I − σ_I²/2S)/σ_I (centric):

    p(u) ∝ u^c exp(−(u² − z)²/2),  u ≥ 0,
    <F> = √σ_I · M_{c+1}/M_c,  <F²> = σ_I · M_{c+2}/M_c,  M_k = ∫ u^k exp(−(u²−z)²/2) du,

(the moments are parabolic-cylinder functions D_{−k/2−1}(−z), FW eq. 9–12).
They are computed by Gauss–Legendre quadrature on the interval where the
exponent is within 40 of its maximum, with the maximum factored out, so no
overflow or cancellation occurs for any z (strong reflections, z ≫ 1, or
very negative intensities, z ≪ 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import roots_legendre

from refinekit.plugin_api import DataPreparer, InputError, ReflectionData
from refinekit.plugin_api.numerics.reflections import epsilon_and_centric, resolution_bins

_NODES, _WEIGHTS = roots_legendre(96)
_LOG_RANGE = 40.0  # integrate where the log-integrand is within this of its maximum


def posterior_moments(z: np.ndarray, centric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(<u>, <u²>) of p(u) ∝ u^c exp(−(u²−z)²/2), u ≥ 0 (c = 0 centric, 1 acentric).

    Dimensionless; multiply by √σ_I and σ_I for <F> and <F²>.
    """
    z = np.asarray(z, dtype=np.float64)
    c = np.where(centric, 0.0, 1.0)
    # the exponent −((u²−z)² − m)/2 is ≤ 0, m = min over u ≥ 0 of (u²−z)²
    m = np.maximum(-z, 0.0) ** 2
    half_width = np.sqrt(2.0 * _LOG_RANGE)
    upper2 = np.where(z >= 0, z + half_width, -np.maximum(-z, 0) + np.sqrt(m + 2 * _LOG_RANGE))
    lower2 = np.where(z >= 0, np.maximum(z - half_width, 0.0), 0.0)
    lo, hi = np.sqrt(lower2), np.sqrt(upper2)
    u = 0.5 * (hi - lo)[:, None] * (_NODES[None, :] + 1.0) + lo[:, None]
    w = 0.5 * (hi - lo)[:, None] * _WEIGHTS[None, :]
    base = w * np.exp(-0.5 * ((u * u - z[:, None]) ** 2 - m[:, None])) * u ** c[:, None]
    m0 = base.sum(axis=1)
    m1 = (base * u).sum(axis=1)
    m2 = (base * u * u).sum(axis=1)
    return m1 / m0, m2 / m0


def french_wilson(i_obs: np.ndarray, sigma_i: np.ndarray, expected_i: np.ndarray,
                  centric: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior <F>, σ(<F>) and h = z for each reflection.

    ``expected_i`` is S = ε·Σ (same units as I); σ_I must be > 0.
    """
    i_obs = np.asarray(i_obs, float)
    sig = np.asarray(sigma_i, float)
    s = np.asarray(expected_i, float)
    shift = np.where(centric, sig * sig / (2.0 * s), sig * sig / s)
    z = (i_obs - shift) / sig
    mu, mu2 = posterior_moments(z, centric)
    f_mean = np.sqrt(sig) * mu
    f_var = np.maximum(sig * (mu2 - mu * mu), 0.0)
    return f_mean, np.sqrt(f_var), z


def wilson_expectation(i_obs: np.ndarray, sigma_i: np.ndarray, d: np.ndarray, eps: np.ndarray,
                       min_per_bin: int = 100, max_bins: int = 20) -> np.ndarray:
    """Σ(s) = <I/ε> per equal-volume shell, interpolated smoothly, per reflection.

    ln Σ is interpolated linearly in s² = 1/d² between the shells' mean s²
    (a Wilson plot is linear there), constant beyond the first/last shell.
    A shell whose mean I/ε is not positive (very weak data) gets
    0.1·<σ_I/ε> as a floor so the prior stays proper.
    """
    bins = resolution_bins(d, min_per_bin=min_per_bin, max_bins=max_bins)
    s2 = 1.0 / d ** 2
    n = int(bins.max()) + 1
    centres, values = [], []
    for b in range(n):
        sel = bins == b
        if not sel.any():
            continue
        mean_i = float(np.mean(i_obs[sel] / eps[sel]))
        floor = 0.1 * float(np.mean(sigma_i[sel] / eps[sel]))
        centres.append(float(np.mean(s2[sel])))
        values.append(np.log(max(mean_i, floor, 1e-30)))
    return np.exp(np.interp(s2, centres, values))


@dataclass
class FrenchWilsonOptions:
    """Settings of the French–Wilson preparer.

    ``reject_below``: reflections with h = (I − σ²/S)/σ below this are
    rejected (French & Wilson's tables stop at h = −4; truncate/ctruncate
    reject there too).  ``min_per_bin``/``max_bins``: Wilson-prior shells.
    ``override_amplitudes``: when the data already have amplitudes, replace
    them by I → F (needs intensities); by default such data pass unchanged.
    """

    reject_below: float = -4.0
    min_per_bin: int = 100
    max_bins: int = 20
    override_amplitudes: bool = False

    def validate(self) -> None:
        if self.min_per_bin < 1 or self.max_bins < 1:
            raise ValueError("min_per_bin and max_bins must be positive")


class FrenchWilson(DataPreparer):
    """Intensities → amplitudes by the French & Wilson (1978) Bayesian posterior.

    Wilson prior Σ(s) = <I/ε> per resolution shell (smoothly interpolated),
    acentric and centric priors, ε factors from the space group.  Output:
    the same reflections (minus missing/rejected ones) with ``f_obs`` = <F>
    and ``sigma_f`` = σ(<F>); ``i_obs``/``sigma_i`` are kept.  Data that
    already carry amplitudes are returned unchanged (figures
    ``{"skipped": "amplitudes present"}``) unless ``override_amplitudes``.
    """

    name = "french-wilson"
    Options = FrenchWilsonOptions

    def prepare(self, data: ReflectionData) -> tuple[ReflectionData, dict[str, Any]]:
        if data.f_obs is not None and not self.options.override_amplitudes:
            return data, {"skipped": "amplitudes present"}
        if data.i_obs is None or data.sigma_i is None:
            why = "override_amplitudes = true but " if data.f_obs is not None else ""
            raise InputError(f"french-wilson: {why}the data have no intensities with sigmas "
                             "(i_obs, sigma_i) to convert", data.source or None)
        i_obs = np.asarray(data.i_obs, float)
        sig = np.asarray(data.sigma_i, float)
        usable = np.isfinite(i_obs) & np.isfinite(sig) & (sig > 0) & np.isfinite(data.d)
        if not usable.any():
            raise InputError("no reflection has a finite intensity and a positive sigma", data.source or None)
        eps, centric = epsilon_and_centric(data.hkl, data.spacegroup)
        expected = np.full(len(data), np.nan)
        expected[usable] = eps[usable] * wilson_expectation(
            i_obs[usable], sig[usable], data.d[usable], eps[usable],
            self.options.min_per_bin, self.options.max_bins)
        f = np.full(len(data), np.nan)
        sf = np.full(len(data), np.nan)
        h = np.full(len(data), np.nan)
        f[usable], sf[usable], h[usable] = french_wilson(
            i_obs[usable], sig[usable], expected[usable], centric[usable])
        keep = usable & (h >= self.options.reject_below)
        out = data.subset(keep)
        out.f_obs, out.sigma_f = f[keep], sf[keep]
        out.index = np.arange(len(out))  # a new data set: rows renumbered
        stats = {
            "n_input": int(len(data)),
            "n_missing": int(np.count_nonzero(~usable)),
            "n_rejected": int(np.count_nonzero(usable & ~keep)),
            "n_output": int(np.count_nonzero(keep)),
        }
        return out, stats
