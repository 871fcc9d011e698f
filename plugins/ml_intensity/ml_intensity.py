"""Maximum-likelihood intensity target: the Rice law integrated over the measurement error.

For an observed intensity Io with standard error σ_I, a model amplitude
Fc = |F_model| and per-shell σA parameters D, σ_Δ²:

    L(Io | Fc) = ∫₀^∞ N(Io; F², σ_I²) · p(F | D·Fc, ε·σ_Δ²) dF,     T = −ln L,

with p the Rice (acentric) or Woolfson (centric) law of the true amplitude
(Read 1986).  This is the exact intensity likelihood whose analytic
approximations are Read & McCoy's LLGI (2016, Acta Cryst. D72, 375) and the
REFMAC5/servalcat intensity target (Murshudov et al. 2011, Acta Cryst. D67,
355 §2.4); here the one-dimensional integral is evaluated by quadrature.
Constants independent of the model and of D, σ_Δ² (ln √(2π)σ_I) are dropped.

Quadrature (numba kernel, ``kernels.py``): the integrand is located by two
coarse passes (48 uniform points; keep where the log-integrand, with
ln I₀(x) approximated to within 0.28, is within 41 of its maximum) starting
from the window where the measurement term is within e^(−72) of its peak,
then integrated with 48-point Gauss–Legendre with the maximum factored out.
Derivatives are posterior expectations of the Rice score,
∂T/∂θ = −E_post[∂ ln p(F | θ)/∂θ], exact for the discrete rule used for T.

Map coefficients (``map_coefficients``): σA-weighted 2mFo−DFc / mFo−DFc
(Read 1986) with this target's D and σ_Δ², from amplitudes: the data's
``f_obs``/``sigma_f`` when a preparer (e.g. ``french-wilson``) supplied
them, else Fo = √max(Io, 0) with σ_F = σ_I / (2·√max(Io, σ_I)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import roots_legendre

from refinekit.plugin_api import (AtomModel, FTarget, FTargetResult, InputError, ReflectionColumns,
                                  ReflectionData)
from refinekit.plugin_api.numerics.reflections import (
    SigmaaParameters, epsilon_and_centric, fit_sigmaa, free_set_for, map_coefficient_columns,
    sigmaa_fitting_set,
    r_factors, rice_fisher_information, sigmaa_map_coefficients)

_K = 48
_GL_X, _GL_W = roots_legendre(_K)


@dataclass
class IntensityLikelihood:
    """The intensity likelihood for fixed observations (arrays per reflection)."""

    i_obs: np.ndarray
    sigma_i: np.ndarray
    eps: np.ndarray
    centric: np.ndarray

    def evaluate(self, fc_abs, d, s, sel=slice(None)):
        """(T per reflection, ∂T/∂|Fc|, ∂T/∂D, ∂T/∂σ_Δ²) for reflections ``sel``."""
        from .kernels import intensity_nll

        eps = self.eps[sel]
        n = len(eps)
        a = np.ascontiguousarray(np.broadcast_to(np.asarray(d * fc_abs, float), (n,)))
        sig2 = np.ascontiguousarray(np.broadcast_to(np.asarray(eps * s, float), (n,)))
        t, e_da, e_ds = intensity_nll(np.ascontiguousarray(self.i_obs[sel], dtype=float),
                                      np.ascontiguousarray(self.sigma_i[sel], dtype=float),
                                      a, sig2, np.ascontiguousarray(self.centric[sel], dtype=bool),
                                      _GL_X, _GL_W, _K)
        return t, -e_da * d, -e_da * fc_abs, -e_ds * eps

    def fit(self, fc_abs, d_spacing, used_set, min_per_bin, max_bins) -> SigmaaParameters:
        """ML estimates of D and σ_Δ² per shell (intensity likelihood)."""
        def nll(sel, dv, sv):
            t, _, gd, gs = self.evaluate(fc_abs[sel], dv, sv, sel)
            return float(t.sum()), float(gd.sum()), float(gs.sum())

        fo = np.sqrt(np.maximum(self.i_obs, 0.0))
        return fit_sigmaa(nll, d_spacing, self.i_obs / self.eps, fc_abs, fo, self.eps,
                          used_set, min_per_bin, max_bins)

    def target(self, f_model, d, s, want_grad, want_curv) -> FTargetResult:
        """Sum of T, dT/dF (complex, contract convention) and approximate curvature."""
        fc_abs = np.abs(f_model)
        t, g_fc, _, _ = self.evaluate(fc_abs, d, s)
        res = FTargetResult(float(np.sum(t)))
        if want_grad:
            with np.errstate(invalid="ignore", divide="ignore"):
                unit = np.where(fc_abs > 0, f_model / fc_abs, 0.0)
            res.dT_dF = g_fc * unit
        if want_curv:
            # approximate: amplitude Fisher information with σ_F of ``amplitude_sigma``
            sig2 = self.eps * s + np.where(self.centric, 1.0, 2.0) * amplitude_sigma(
                self.i_obs, self.sigma_i) ** 2
            info = d * d * rice_fisher_information(d * fc_abs, sig2, self.centric)
            res.curvature = np.where(self.centric, 1.0, 0.5) * info
        return res


@dataclass
class MLIntensityOptions:
    """Settings of the ML intensity target (same meaning as for ml-amplitude)."""

    min_free: int = 250
    min_per_bin: int = 100
    max_bins: int = 20

    def validate(self) -> None:
        if self.min_free < 0 or self.min_per_bin < 1 or self.max_bins < 1:
            raise ValueError("min_free ≥ 0, min_per_bin ≥ 1 and max_bins ≥ 1 are required")


def amplitude_sigma(i_obs: np.ndarray, sigma_i: np.ndarray) -> np.ndarray:
    """σ_F ≈ σ_I / (2·√max(Io, σ_I)) — error propagation of F = √I, bounded for weak Io."""
    return sigma_i / (2.0 * np.sqrt(np.maximum(i_obs, sigma_i)))


def map_amplitudes(data: ReflectionData) -> tuple[np.ndarray, np.ndarray]:
    """(Fo, σ_F) for map coefficients: the data's f_obs/sigma_f if present (set by a
    preparer such as french-wilson), else √max(Io, 0) and :func:`amplitude_sigma`
    (NaN where Io or σ_I is unusable, i.e. treated as missing)."""
    if data.f_obs is not None:
        sig = np.zeros(len(data)) if data.sigma_f is None else np.asarray(data.sigma_f, float)
        return np.asarray(data.f_obs, float), sig
    io, sig_i, ok = observations(data, "ml-intensity")
    fo = np.where(ok, np.sqrt(np.maximum(np.where(ok, io, 0.0), 0.0)), np.nan)
    return fo, np.where(ok, amplitude_sigma(io, np.where(ok, sig_i, 1.0)), 0.0)


def observations(data: ReflectionData, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Io, σ_I, usable mask); raise InputError without intensities."""
    if data.i_obs is None or data.sigma_i is None:
        raise InputError(f"{who} needs intensities with sigmas (i_obs, sigma_i); the data have none",
                         data.source or None)
    io = np.asarray(data.i_obs, float)
    sig = np.asarray(data.sigma_i, float)
    return io, sig, np.isfinite(io) & np.isfinite(sig) & (sig > 0)


class MLIntensity(FTarget):
    """Maximum-likelihood intensity target (Rice law integrated over the measurement error).

    The exact form of the intensity likelihood approximated by LLGI (Read &
    McCoy 2016) and REFMAC5/servalcat; D and σ_Δ² per shell re-estimated at
    every ``setup`` on the free set (all reflections when fewer than
    ``min_free`` are free).  Curvature is an approximate Fisher information.
    """

    name = "ml-intensity"
    Options = MLIntensityOptions

    def setup(self, context) -> None:
        super().setup(context)
        work = self.reflections
        io, sig, self.valid = observations(work, self.name)
        eps, cen = epsilon_and_centric(work.hkl, work.spacegroup)
        v = self.valid
        self.lik = IntensityLikelihood(io[v], sig[v], eps[v], cen[v])
        self.free, self.free_k, self.free_fpart = free_set_for(context, work)
        fm_free = (self.free_k * (self.engine.calc(context.model, self.free.hkl) + self.free_fpart)
                   if len(self.free) else np.zeros(0, complex))
        self.sigmaa = self._fit(context, fm_free)
        self.d_par, self.s_par = self.sigmaa.at(work.d[v])
        self.all_data = context.data
        self.all_scales = context.fmodel_scales(context.data)

    def _fit(self, context, fm_free: np.ndarray) -> SigmaaParameters:
        """σA fit on the free set, or on work + free when the free set is small."""
        free = self.free
        if len(free):
            io, sig, ok = observations(free, self.name)
        else:
            io, sig, ok = np.zeros(0), np.zeros(0), np.zeros(0, bool)
        eps, cen = epsilon_and_centric(free.hkl[ok], free.spacegroup)
        logged = getattr(self, "_small_free_logged", False)
        lik, fc, d, used = sigmaa_fitting_set(
            IntensityLikelihood(io[ok], sig[ok], eps, cen), self.lik, np.abs(fm_free[ok]), free.d[ok],
            lambda: np.abs(self.fmodel(context.model)[1][self.valid]),
            self.reflections.d[self.valid], self.options.min_free,
            None if logged else lambda message: context.log(f"{self.name}: {message}"))
        self._small_free_logged = logged or used == "all"
        return lik.fit(fc, d, used, self.options.min_per_bin, self.options.max_bins)

    def target_f(self, f_model: np.ndarray, want_grad: bool, want_curv: bool) -> FTargetResult:
        res = self.lik.target(f_model[self.valid], self.d_par, self.s_par, want_grad, want_curv)
        for name in ("dT_dF", "curvature"):
            arr = getattr(res, name)
            if arr is not None:
                full = np.zeros(len(self.valid), dtype=arr.dtype)
                full[self.valid] = arr
                setattr(res, name, full)
        return res

    def statistics(self, model: AtomModel) -> dict[str, Any]:
        _, fm = self.fmodel(model)
        out = {"ml_intensity_nll": self.lik.target(fm[self.valid], self.d_par, self.s_par,
                                                   False, False).value,
               "sigmaa_on_free_set": float(self.sigmaa.used_set == "free"),
               "mean_D": float(np.mean(self.sigmaa.d_values))}
        fo = np.sqrt(np.maximum(self.lik.i_obs, 0.0))
        fmod, flags = np.abs(fm[self.valid]), np.zeros(len(fo), bool)
        if len(self.free):
            io, _, ok = observations(self.free, self.name)
            fm_f = self.free_k * (self.engine.calc(model, self.free.hkl) + self.free_fpart)
            fo = np.concatenate([fo, np.sqrt(np.maximum(io[ok], 0.0))])
            fmod = np.concatenate([fmod, np.abs(fm_f[ok])])
            flags = np.concatenate([flags, np.ones(np.count_nonzero(ok), bool)])
        r = r_factors(fo, fmod, flags, scale=False)
        out.update({"r_work": r.r_work, "r_free": r.r_free})
        return out

    def map_coefficients(self, model: AtomModel) -> ReflectionColumns:
        """σA-weighted 2mFo−DFc, mFo−DFc, F_calc and FOM for every reflection of the data.

        Read (1986) with this target's D, σ_Δ² and the amplitudes of
        :func:`map_amplitudes`; free reflections included; missing Fo filled
        in with D·F_model (DELFWT = 0, FOM = 0).
        """
        data = self.all_data
        k_total, f_part = self.all_scales
        fc = self.engine.calc(model, data.hkl)
        fo, sig = map_amplitudes(data)
        eps, cen = epsilon_and_centric(data.hkl, data.spacegroup)
        d_par, s_par = self.sigmaa.at(data.d)
        fwt, delfwt, fom = sigmaa_map_coefficients(fo, sig, k_total * (fc + f_part), d_par, s_par,
                                                   eps, cen)
        return map_coefficient_columns(data, fwt, delfwt, fc, fom)
