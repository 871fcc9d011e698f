"""Least-squares amplitude target.

T = Σ_h w_h (|Fo_h| − k|Fm_h|)² / Σ_h w_h |Fo_h|²   (dimensionless)

over the working reflections, with the overall scale
k = Σ w|Fo||Fm| / Σ w|Fm|² re-fitted at every evaluation (the classical
amplitude LS target, e.g. Tronrud 1992; Murshudov et al. 1997 eq. 1).
Because k minimises T for the given F_m, ∂T/∂k = 0 and the gradient needs
no term through k (envelope theorem):

    dT/dF_m = −2 w k (|Fo| − k|Fm|) / N · F_m/|F_m|,   N = Σ w|Fo|²

(complex convention of ``FTargetResult``).  The Gauss–Newton curvature
along |F| is 2 w k² / N; the diagonal curvature reported for the components
A, B of F is its average over the phase: half of it for acentric
reflections (the radial direction is one of two), all of it for centric
ones (F stays on its line) — the convention of the ML targets.  Weights:
``unit`` (w = 1) or ``sigma`` (w = 1/σ²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from refinekit.plugin_api import FTarget, FTargetResult, InputError, ReflectionColumns
from refinekit.plugin_api.numerics.reflections import (epsilon_and_centric, map_coefficient_columns,
                                                        r_factors)


@dataclass
class LsOptions:
    """weighting: 'unit' (w = 1) or 'sigma' (w = 1/σ_F²)."""

    weighting: Literal["unit", "sigma"] = "unit"


class LeastSquaresTarget(FTarget):
    """Amplitude least squares with an optimal overall scale; reports R-work/R-free."""

    name = "ls"
    Options = LsOptions

    def setup(self, context) -> None:
        super().setup(context)
        self.f_obs, self.w = self._observations(self.reflections)
        self.norm = float(np.sum(self.w * self.f_obs ** 2))
        self.phase_average = np.where(epsilon_and_centric(self.reflections.hkl, self.reflections.spacegroup)[1],
                                      1.0, 0.5)
        self.free = context.free_reflections()
        self.free_scales = context.fmodel_scales(self.free)
        self.all_data = context.data
        self.all_scales = context.fmodel_scales(context.data)

    def _observations(self, refl) -> tuple[np.ndarray, np.ndarray]:
        if refl.f_obs is None:
            raise InputError("the LS target needs amplitudes but the data have intensities only; "
                             "add prepare = [\"french-wilson\"] under [data]", refl.source or None)
        if len(refl) == 0:
            raise InputError("no working reflections in the resolution range", refl.source or None)
        f_obs = np.abs(refl.f_obs)
        if self.options.weighting == "sigma":
            sigma = refl.sigma_f
            if sigma is None or not np.all(np.isfinite(sigma) & (sigma > 0)):
                raise InputError("sigma weighting needs positive σ(F) for every reflection",
                                 refl.source or None)
            return f_obs, 1.0 / sigma ** 2
        return f_obs, np.ones_like(f_obs)

    def scale(self, f_model_abs: np.ndarray) -> float:
        """Optimal overall scale k for |F_model| on the working set."""
        den = float(np.sum(self.w * f_model_abs ** 2))
        return float(np.sum(self.w * self.f_obs * f_model_abs) / den) if den > 0 else 1.0

    def target_f(self, f_model, want_grad, want_curv) -> FTargetResult:
        fm_abs = np.abs(f_model)
        k = self.scale(fm_abs)
        diff = self.f_obs - k * fm_abs
        value = float(np.sum(self.w * diff ** 2) / self.norm)
        curv = 2.0 * k * k * self.w * self.phase_average / self.norm if want_curv else None
        if not want_grad:
            return FTargetResult(value, None, curv)
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(fm_abs > 0, f_model / np.where(fm_abs > 0, fm_abs, 1.0), 0.0)
        grad = (-2.0 * k / self.norm) * self.w * diff * unit
        return FTargetResult(value, grad, curv)

    def statistics(self, model) -> dict[str, float]:
        """R-work, R-free (current resolution range) and the LS scale."""
        _, fm_work = self.fmodel(model)
        k = self.scale(np.abs(fm_work))
        stats = {"ls_scale": k, "n_work": len(self.reflections), "n_free": len(self.free)}
        f_obs = [self.f_obs]
        f_model = [np.abs(fm_work)]
        free = [np.zeros(len(self.f_obs), bool)]
        if len(self.free) and self.free.f_obs is not None:
            k_free, part_free = self.free_scales
            fc = self.engine.calc(model, self.free.hkl)
            f_obs.append(np.abs(self.free.f_obs))
            f_model.append(np.abs(k_free * (fc + part_free)))
            free.append(np.ones(len(self.free), bool))
        r = r_factors(np.concatenate(f_obs), np.concatenate(f_model), np.concatenate(free))
        stats.update(r_work=r.r_work, r_free=r.r_free)
        return stats

    def map_coefficients(self, model) -> ReflectionColumns:
        """2Fo−Fc and Fo−Fc coefficients (m = 1, D = k: the LS analogues of
        2mFo−DFc and mFo−DFc) with model phases; where Fo is missing FWT is
        the scaled F_model (fill-in) and DELFWT is 0.  FOM is 1."""
        data = self.all_data
        k_total, f_part = self.all_scales
        fc = self.engine.calc(model, data.hkl)
        fm = k_total * (fc + f_part)
        k = self.scale(np.abs(self.fmodel(model)[1]))
        fm_scaled = k * fm
        phase = np.exp(1j * np.angle(fm))
        f_obs = np.abs(data.f_obs) if data.f_obs is not None else np.full(len(data), np.nan)
        have = np.isfinite(f_obs)
        fwt = np.where(have, 2 * np.nan_to_num(f_obs) - np.abs(fm_scaled), np.abs(fm_scaled)) * phase
        delfwt = np.where(have, np.nan_to_num(f_obs) - np.abs(fm_scaled), 0.0) * phase
        return map_coefficient_columns(data, fwt, delfwt, fc, np.ones(len(data)))

