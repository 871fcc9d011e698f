"""Maximum-likelihood amplitude target (σA / Rice likelihood).

Read (1986) Acta Cryst. A42, 140; Pannu & Read (1996) Acta Cryst. A52, 659;
Murshudov, Vagin & Dodson (1997) Acta Cryst. D53, 240; Murshudov et al.
(2011) Acta Cryst. D67, 355 eq. 4; Lunin & Skovoroda (1995) Acta Cryst. A51, 880.

For each reflection with observed amplitude Fo (σ_o), model amplitude
Fc = |F_model| and per-shell parameters D, σ_Δ² (the "σA" pair):

    acentric  T = ln Σ + (Fo² + D²Fc²)/Σ − ln I₀(2·Fo·D·Fc/Σ),   Σ = ε·σ_Δ² + 2σ_o²
    centric   T = ½ ln Σ + (Fo² + D²Fc²)/2Σ − ln cosh(Fo·D·Fc/Σ), Σ = ε·σ_Δ² + σ_o²

i.e. −ln p(Fo | Fc) with the Fo-only constants (ln 2Fo, ½ ln(2/π)) dropped;
measurement error is added to the model error as in Pannu & Read (1996)
(Rice form, σ_o² per complex component).  D and σ_Δ² are fitted by
maximum likelihood per resolution shell on the free set, once per
macro-cycle (again when the F_model scales or the reflections change).
F_calc is computed for all reflections of the data in one pass (shared with
the scalers and statistics through the kernel's F_calc reuse) and the
gradient is one adjoint pass over the same indices.

Map coefficients (``map_coefficients``): σA-weighted 2mFo−DFc / mFo−DFc
with the same D, σ_Δ² and Σ (Read 1986), for every reflection of the data
set, work and free alike; see
:func:`refinekit.plugin_api.numerics.reflections.sigmaa_map_coefficients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refinekit.plugin_api import (AtomModel, FTarget, FTargetResult, InputError,
                                  ReflectionColumns, ReflectionData, TermResult)
from refinekit.plugin_api.numerics.fisher import atom_fisher_diagonal
from refinekit.plugin_api.numerics.reflections import (
    SigmaaParameters, epsilon_and_centric, fit_sigmaa, free_set_for, map_coefficient_columns,
    sigmaa_fitting_set,
    r_factors, rice_core, rice_fisher_information, sigmaa_map_coefficients)


@dataclass
class AmplitudeLikelihood:
    """The Rice/Woolfson likelihood for fixed observations (arrays per reflection).

    ``eps`` (int), ``centric`` (bool), ``f_obs``, ``sigma_f`` (same units as
    F); σ_f NaN or absent is taken as 0.
    """

    f_obs: np.ndarray
    sigma_f: np.ndarray
    eps: np.ndarray
    centric: np.ndarray

    def variance(self, s: np.ndarray) -> np.ndarray:
        """Σ = ε·σ_Δ² + (2 acentric | 1 centric)·σ_o²."""
        return self.eps * s + np.where(self.centric, 1.0, 2.0) * self.sigma_f ** 2

    def evaluate(self, fc_abs: np.ndarray, d: np.ndarray, s: np.ndarray, sel=slice(None)):
        """(T per reflection, ∂T/∂|Fc|, ∂T/∂D, ∂T/∂σ_Δ²) for reflections ``sel``."""
        sig2 = self.eps[sel] * s + np.where(self.centric[sel], 1.0, 2.0) * self.sigma_f[sel] ** 2
        a = d * fc_abs
        core, d_a, d_sig = rice_core(self.f_obs[sel], a, sig2, self.centric[sel])
        return -core, -d_a * d, -d_a * fc_abs, -d_sig * self.eps[sel]

    def fit(self, fc_abs: np.ndarray, d_spacing: np.ndarray, used_set: str,
            min_per_bin: int, max_bins: int) -> SigmaaParameters:
        """ML estimates of D and σ_Δ² per shell for these reflections."""
        def nll(sel, dv, sv):
            t, _, gd, gs = self.evaluate(fc_abs[sel], dv, sv, sel)
            return float(t.sum()), float(gd.sum()), float(gs.sum())

        return fit_sigmaa(nll, d_spacing, self.f_obs ** 2 / self.eps, fc_abs, self.f_obs, self.eps,
                          used_set, min_per_bin, max_bins)

    def target(self, f_model: np.ndarray, d: np.ndarray, s: np.ndarray,
               want_grad: bool, want_curv: bool) -> FTargetResult:
        """Sum of T, dT/dF (complex, contract convention) and diagonal curvature."""
        fc_abs = np.abs(f_model)
        t, g_fc, _, _ = self.evaluate(fc_abs, d, s)
        res = FTargetResult(float(np.sum(t)))
        if want_grad:
            with np.errstate(invalid="ignore", divide="ignore"):
                unit = np.where(fc_abs > 0, f_model / fc_abs, 0.0)
            # T depends on |F| only: ∂T/∂A + i∂T/∂B = T'(|F|)·F/|F|
            res.dT_dF = g_fc * unit
        if want_curv:
            info = d * d * rice_fisher_information(d * fc_abs, self.variance(s), self.centric)
            # expected ∂²T/∂A² averaged over the phase: ½ I(|F|) acentric; a centric F stays on its line
            res.curvature = np.where(self.centric, 1.0, 0.5) * info
        return res


@dataclass
class MLAmplitudeOptions:
    """Settings of the ML amplitude target.

    ``min_free``: below this many free reflections D, σ_Δ² are fitted on all
    reflections (work + free) instead; ``min_per_bin``/``max_bins``: shells
    of the σA fit (equal volume, ≥ min_per_bin reflections of the fitted set).
    """

    min_free: int = 250
    min_per_bin: int = 100
    max_bins: int = 20

    def validate(self) -> None:
        if self.min_free < 0 or self.min_per_bin < 1 or self.max_bins < 1:
            raise ValueError("min_free ≥ 0, min_per_bin ≥ 1 and max_bins ≥ 1 are required")


def observations(data: ReflectionData, who: str) -> tuple[np.ndarray, np.ndarray]:
    """(Fo, σ_o) of ``data``; σ missing → 0; raise InputError without amplitudes."""
    if data.f_obs is None:
        raise InputError(f"{who} needs amplitudes (f_obs); for intensities add the "
                         "'french-wilson' preparer or use the 'ml-intensity' target", data.source or None)
    sig = np.zeros(len(data)) if data.sigma_f is None else np.nan_to_num(np.asarray(data.sigma_f, float))
    return np.asarray(data.f_obs, float), sig


class MLAmplitude(FTarget):
    """Maximum-likelihood amplitude target (Rice acentric / Woolfson centric, σA per shell).

    Read 1986; Pannu & Read 1996; Murshudov et al. 1997 (REFMAC).  D and σ_Δ²
    are re-estimated at ``setup`` on the free set (on all reflections when
    fewer than ``min_free`` are free) once per macro-cycle, or when the
    scales or reflections changed.  Value: −ln L over the working
    set; curvature: expected (Fisher) information, see ``AmplitudeLikelihood``.
    """

    name = "ml-amplitude"
    Options = MLAmplitudeOptions

    def setup(self, context) -> None:
        super().setup(context)
        work = self.reflections
        fo, sig = observations(work, self.name)
        self.valid = np.isfinite(fo)
        eps, cen = epsilon_and_centric(work.hkl, work.spacegroup)
        self.lik = AmplitudeLikelihood(fo[self.valid], sig[self.valid], eps[self.valid], cen[self.valid])
        self.free, self.free_k, self.free_fpart = free_set_for(context, work)
        self.all_data = context.data
        self.all_scales = context.fmodel_scales(context.data)
        self._bind_rows(context.data)
        key = (getattr(context, "cycle", None), len(work), len(self.free))
        if not self._sigmaa_current(key):
            self.sigmaa = self._fit(context, self.free, self.free_fmodel(context.model))
            self._sigmaa_key = (key, self.k_total.copy(), self.f_part.copy())
        self.d_par, self.s_par = self.sigmaa.at(work.d[self.valid])

    def _sigmaa_current(self, key: tuple) -> bool:
        """True when D, σ_Δ² were fitted in this macro-cycle with the present F_model scales.

        σA is re-estimated once per macro-cycle (and whenever the scales or
        the reflections change), as REFMAC does, not before every
        minimisation or statistics call.
        """
        old = getattr(self, "_sigmaa_key", None)
        return (old is not None and old[0] == key and np.array_equal(old[1], self.k_total)
                and np.array_equal(old[2], self.f_part))

    def _bind_rows(self, data: ReflectionData) -> None:
        """Choose the Miller indices F_calc is computed for, and where work/free rows sit in them.

        All of ``data`` when the work + free rows reach the same largest
        indices (same FFT grid; one F_calc shared with the scalers and
        statistics, one engine geometry), else only those rows.
        """
        rows = np.concatenate([self.reflections.index, self.free.index])
        full = data.hkl
        if len(rows) and np.array_equal(np.abs(full).max(axis=0), np.abs(full[rows]).max(axis=0)):
            self.calc_hkl = full
            self.work_pos, self.free_pos = self.reflections.index, self.free.index
        else:
            self.calc_hkl = full[rows]
            self.work_pos = np.arange(len(self.reflections))
            self.free_pos = np.arange(len(self.reflections), len(rows))

    def fmodel(self, model: AtomModel) -> tuple[np.ndarray, np.ndarray]:
        """(F_calc, F_model) for the working reflections (from the shared F_calc pass)."""
        fc = self.engine.calc(model, self.calc_hkl)[self.work_pos]
        return fc, self.k_total * (fc + self.f_part)

    def free_fmodel(self, model: AtomModel) -> np.ndarray:
        """F_model of the free reflections (same F_calc pass as :meth:`fmodel`)."""
        if not len(self.free):
            return np.zeros(0, complex)
        return self.free_k * (self.engine.calc(model, self.calc_hkl)[self.free_pos] + self.free_fpart)

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        """−ln L over the work set; the gradient through one adjoint pass over ``calc_hkl``;
        the curvature is :func:`atom_fisher_diagonal` of the expected information."""
        _, fm = self.fmodel(model)
        res = self.target_f(fm, want_grad, want_curv)
        curv = None
        if want_curv:
            curv = atom_fisher_diagonal(model, self.engine.table, self.reflections.d,
                                        self.k_total ** 2 * res.curvature)
        if not want_grad:
            return TermResult(res.value, None, curv)
        dt_df = np.zeros(len(self.calc_hkl), dtype=np.complex128)
        dt_df[self.work_pos] = self.k_total * res.dT_dF  # F_model = k (F_c + F_part), real k
        return TermResult(res.value, self.engine.gradient(model, self.calc_hkl, dt_df), curv)

    def _fit(self, context, free: ReflectionData, fm_free: np.ndarray) -> SigmaaParameters:
        """σA fit on the free set, or on work + free when the free set is small."""
        ffo, fsig = observations(free, self.name) if len(free) else (np.zeros(0), np.zeros(0))
        ok = np.isfinite(ffo)
        eps, cen = epsilon_and_centric(free.hkl[ok], free.spacegroup)
        logged = getattr(self, "_small_free_logged", False)
        lik, fc, d, used = sigmaa_fitting_set(
            AmplitudeLikelihood(ffo[ok], fsig[ok], eps, cen), self.lik, np.abs(fm_free[ok]), free.d[ok],
            lambda: np.abs(self.fmodel(context.model)[1][self.valid]),
            self.reflections.d[self.valid], self.options.min_free,
            None if logged else lambda message: context.log(f"{self.name}: {message}"))
        self._small_free_logged = logged or used == "all"
        return lik.fit(fc, d, used, self.options.min_per_bin, self.options.max_bins)

    def target_f(self, f_model: np.ndarray, want_grad: bool, want_curv: bool) -> FTargetResult:
        res = self.lik.target(f_model[self.valid], self.d_par, self.s_par, want_grad, want_curv)
        return _expand(res, self.valid)

    def statistics(self, model: AtomModel) -> dict[str, Any]:
        _, fm = self.fmodel(model)
        out = {"ml_amplitude_nll": self.lik.target(fm[self.valid], self.d_par, self.s_par,
                                                   False, False).value,
               "sigmaa_on_free_set": float(self.sigmaa.used_set == "free"),
               "mean_D": float(np.mean(self.sigmaa.d_values))}
        out.update(r_statistics(self, model, fm))
        return out

    def map_coefficients(self, model: AtomModel) -> ReflectionColumns:
        """σA-weighted 2mFo−DFc, mFo−DFc, F_calc and FOM for every reflection of the data.

        Read (1986): m from the Rice/Woolfson law with Σ = ε·σ_Δ² + (2|1)·σ_F²,
        D and σ_Δ² of this setup at each reflection's resolution (held
        constant beyond the fitted shells); free reflections are included;
        missing Fo are filled in with D·F_model (DELFWT = 0, FOM = 0).
        """
        data = self.all_data
        k_total, f_part = self.all_scales
        fc = self.engine.calc(model, data.hkl)
        fo, sig = observations(data, self.name)
        eps, cen = epsilon_and_centric(data.hkl, data.spacegroup)
        d_par, s_par = self.sigmaa.at(data.d)
        fwt, delfwt, fom = sigmaa_map_coefficients(fo, sig, k_total * (fc + f_part), d_par, s_par,
                                                   eps, cen)
        return map_coefficient_columns(data, fwt, delfwt, fc, fom)


def _expand(res: FTargetResult, valid: np.ndarray) -> FTargetResult:
    """Scatter per-valid-reflection arrays back to the full working set (zeros elsewhere)."""
    for name in ("dT_dF", "curvature"):
        arr = getattr(res, name)
        if arr is not None:
            full = np.zeros(len(valid), dtype=arr.dtype)
            full[valid] = arr
            setattr(res, name, full)
    return res


def r_statistics(term, model: AtomModel, fm_work: np.ndarray) -> dict[str, float]:
    """R-work/R-free of the current F_model (already scaled, so k = 1)."""
    fo_w, _ = observations(term.reflections, term.name)
    fo, fm, free = fo_w, np.abs(fm_work), np.zeros(len(fo_w), bool)
    if len(term.free):
        fo_f, _ = observations(term.free, term.name)
        fm_f = term.free_fmodel(model)
        fo = np.concatenate([fo, fo_f])
        fm = np.concatenate([fm, np.abs(fm_f)])
        free = np.concatenate([free, np.ones(len(fo_f), bool)])
    r = r_factors(fo, fm, free, scale=False)
    return {"r_work": r.r_work, "r_free": r.r_free}
