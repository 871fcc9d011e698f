"""Overall anisotropic scale of F_model, constrained by the crystal system.

k_total(h) = k_overall · exp(−hᵀβh) = k_overall · exp(−2π² sᵀU_cart s)
(U_cart in Å², s = 1/d vector in Å⁻¹; see
:mod:`refinekit.plugin_api.numerics.aniso`).  β is restricted to tensors
invariant under the point group's rotations, so P4₃ has U11 = U22,
U12 = U13 = U23 = 0 and P1 all six components.

Given the current F_part (bulk solvent), the fit minimises
Σ_work (|Fo| − k_total·|F_calc + F_part|)² by Levenberg–Marquardt from a
log-linear least-squares start (Sheriff & Hendrickson 1987, Acta Cryst. A43,
118, for the anisotropic scale; Afonine et al. 2013, Acta Cryst. D69, 625).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import Scaler
from refinekit.plugin_api.numerics import aniso


@dataclass
class AnisoScaleOptions:
    """Settings of the aniso-scale scaler.

    * ``isotropic`` — fit k_overall·exp(−B s²/4) only (β ∝ the metric tensor).
    * ``max_iter`` — Levenberg–Marquardt iterations.
    """

    isotropic: bool = False
    max_iter: int = 50

    def validate(self) -> None:
        """Reject impossible values (raises ValueError → ConfigError)."""
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")


class AnisoScaler(Scaler):
    """k_overall and the symmetry-constrained anisotropic tensor (module doc)."""

    name = "aniso-scale"
    Options = AnisoScaleOptions

    def __init__(self, options: AnisoScaleOptions | None = None):
        super().__init__(options)
        self._fcalc = aniso.FcalcCache()

    def basis(self, data) -> np.ndarray:
        """Constraint basis (k, 6) for the data's space group (or isotropic)."""
        if self.options.isotropic:
            frac = np.array(data.cell.frac.mat.tolist())
            return aniso.sym_to_vec(frac @ frac.T)[None, :]
        return aniso.constraint_basis(data.spacegroup)

    def fit(self, context) -> dict[str, float]:
        """Refit k_overall and β on the work set; keep F_part; store k_total."""
        data, work, free = aniso.scaling_sets(context, self.name)
        f_calc = self._fcalc.get(context)
        _, f_part = context.fmodel_scales(data)
        f_base = np.abs(f_calc + f_part)
        basis = self.basis(data)
        scale = aniso.fit_amplitudes(data.f_obs[work], f_base[work], data.hkl[work], basis,
                                     max_iter=self.options.max_iter)
        k_total = scale.values(data.hkl)
        context.set_fmodel_scales(k_total, f_part)
        return aniso.fmodel_figures(data, work | free, f_calc, k_total, f_part)
