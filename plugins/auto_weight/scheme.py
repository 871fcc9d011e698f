"""Automatic weight between experimental data and geometry restraints.

The data terms' weights are multiplied by a factor w that adapts between
macro-cycles so the coordinates' bond-length rmsd from the restraint
library stays inside a target range (default 0.010–0.020 Å), the practice
of REFMAC5's and phenix.refine's automatic weighting (Afonine et al. 2011,
Acta Cryst D67, 674: choose the weight that keeps geometry within
targets).

Initial factor (``start = 0``, the default): from the ratio of the mean
diagonal curvatures of the two terms with respect to atomic coordinates,

    w₀ = ``curvature_ratio`` · ⟨∂²T_geom/∂x²⟩ / ⟨∂²T_data/∂x²⟩,

the curvature counterpart of Brünger's gradient-ratio weight (Brünger,
Karplus & Petsko 1989, Acta Cryst A45, 50; Adams et al. 1997, PNAS 94,
5018).  The geometry curvature is the term's Gauss–Newton diagonal
(``evaluate(want_curv=True)``).  For a reciprocal-space target (an
``FTarget``) the data curvature is the expected (Fisher) information per
reflection c_h (∂²T/∂A_h², from ``target_f(want_curv=True)``) carried to the
coordinates with the random-phase estimate of |∂F_h/∂x|² (Å⁻²):

    ⟨∂²T/∂x²⟩ ≈ Σ_h c_h k_h² n_ops (2π)² s_h²/3 ⟨occ² f_j(s_h)² exp(−B_j s_h²/2)⟩_j,

s_h = 1/d_h (Å⁻¹), n_ops the number of symmetry operations, k_h the
overall scale; cross terms between symmetry copies average out.  For other
data terms the factor starts at ``fallback_start``.  A positive ``start``
overrides the estimate.

Rule, before each minimisation that includes a term reporting
``rmsd_bonds``: after the first minimisation with the current w left bond
rmsd r outside the range, w ← w·(r_mid/r)^(1/p) with p = ``response``
(bond rmsd grows roughly as w^p), the change limited to ``max_change`` per
cycle; inside the range w is kept.  The input model's geometry is never
used to adapt w (a perturbed start says nothing about the weight).

Minimisations without a geometry term (e.g. B refinement against the data
and an ADP-similarity restraint) multiply the data weights by
``adp_scale``·w once w exists (the data term's information grows with
resolution, so the same factor balances it against ADP restraints too);
``adp_scale = 0`` leaves their configured weights unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import FTarget, WeightScheme

#: shells of s² in which the atoms' scattering power is averaged for the curvature estimate
_CURVATURE_SHELLS = 40


@dataclass
class AutoWeightOptions:
    """Target range of bond rmsd (Å), the starting factor and its adaptation.

    ``start``: initial factor (0 = estimate from curvatures);
    ``curvature_ratio``: wanted data/geometry curvature ratio of that estimate;
    ``fallback_start``: initial factor when the estimate is impossible;
    ``response``: assumed exponent p of bond rmsd ∝ w^p; ``adp_scale``:
    data-weight factor of minimisations without geometry, relative to w
    (0 = leave them alone); ``max_change``:
    largest factor change per cycle; ``min_factor``/``max_factor``: limits.
    """

    bond_rmsd_min: float = 0.010
    bond_rmsd_max: float = 0.020
    start: float = 0.0
    curvature_ratio: float = 0.5
    fallback_start: float = 0.5
    response: float = 0.7
    adp_scale: float = 1.0
    max_change: float = 3.0
    min_factor: float = 1e-3
    max_factor: float = 1e4

    def validate(self) -> None:
        if not 0 < self.bond_rmsd_min < self.bond_rmsd_max:
            raise ValueError("need 0 < bond_rmsd_min < bond_rmsd_max (Å)")
        if self.adp_scale < 0:
            raise ValueError("adp_scale must be ≥ 0")
        if self.start < 0 or self.curvature_ratio <= 0 or self.response <= 0 or self.max_change <= 1:
            raise ValueError("need start ≥ 0, curvature_ratio > 0, response > 0 and max_change > 1")
        for value in (self.start or self.fallback_start, self.fallback_start):
            if not 0 < self.min_factor <= value <= self.max_factor:
                raise ValueError("need 0 < min_factor ≤ start, fallback_start ≤ max_factor")


class AutoWeight(WeightScheme):
    """Data weight adapted per cycle to keep bond rmsd within a target range."""

    name = "auto"
    Options = AutoWeightOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.factor: float | None = self.options.start or None
        self.adapt_next = False
        self.history: list[tuple[float, float]] = []

    def weights(self, context, terms, current) -> dict[str, float]:
        geometry = [t for t in terms.values() if t.role == "restraint"]
        data = [n for n, t in terms.items() if t.role == "target"]
        if not data:
            return dict(current)
        rmsd = self._bond_rmsd(context, geometry)
        if rmsd is None:
            return self._without_geometry(context, data, current)
        if self.factor is None:
            self.factor = self._initial(context, {n: terms[n] for n in data}, current, geometry)
        elif self.adapt_next:
            self.factor = self._adapted(rmsd)
        self.history.append((self.factor, rmsd))
        self.adapt_next = True
        out = dict(current)
        for name in data:
            out[name] = current[name] * self.factor
        context.log(f"auto weight: bond rmsd {rmsd:.4f} Å -> data weight factor {self.factor:.4g}")
        return out

    def _without_geometry(self, context, data: list[str], current: dict[str, float]) -> dict[str, float]:
        """Data weights × adp_scale·w for a minimisation without geometry (e.g. B)."""
        out = dict(current)
        if self.factor is None or self.options.adp_scale == 0:
            return out
        scale = self.options.adp_scale * self.factor
        for name in data:
            out[name] = current[name] * scale
        context.log(f"auto weight: no geometry term -> data weight factor {scale:.4g}")
        return out

    @staticmethod
    def _bond_rmsd(context, restraints) -> float | None:
        for term in restraints:
            stats = term.statistics(context.model)
            if "rmsd_bonds" in stats:
                return float(stats["rmsd_bonds"])
        return None

    def _initial(self, context, data: dict, current: dict[str, float], restraints) -> float:
        """Curvature-ratio estimate of the first factor (see the module docstring)."""
        o = self.options
        model = context.model
        geom = sum(float(np.mean(t.evaluate(model, want_grad=False, want_curv=True).curvature.xyz))
                   for t in restraints if "rmsd_bonds" in t.statistics(model))
        if not all(isinstance(t, FTarget) for t in data.values()) or geom <= 0:
            return o.fallback_start
        curv = sum(current[n] * data_curvature_xyz(context, t) for n, t in data.items())
        if not np.isfinite(curv) or curv <= 0:
            return o.fallback_start
        factor = float(np.clip(o.curvature_ratio * geom / curv, o.min_factor, o.max_factor))
        context.log(f"auto weight: mean xyz curvature geometry {geom:.4g}, data {curv:.4g} "
                    f"(per Å²) -> initial factor {factor:.4g}")
        return factor

    def _adapted(self, rmsd: float) -> float:
        o = self.options
        mid = 0.5 * (o.bond_rmsd_min + o.bond_rmsd_max)
        factor = self.factor
        if not o.bond_rmsd_min <= rmsd <= o.bond_rmsd_max:
            change = (mid / max(rmsd, 1e-6)) ** (1.0 / o.response)
            factor *= float(np.clip(change, 1.0 / o.max_change, o.max_change))
        return float(np.clip(factor, o.min_factor, o.max_factor))


def data_curvature_xyz(context, term: FTarget) -> float:
    """Mean expected ∂²T/∂x² (per Å², over atoms and axes) of a reciprocal-space target.

    Fisher information per reflection from ``target_f`` times the
    random-phase average of |∂F_h/∂x_j|² (see the module docstring).
    """
    model = context.model
    _, fm = term.fmodel(model)
    c_h = np.asarray(term.target_f(fm, False, True).curvature, dtype=np.float64)
    refl = term.reflections
    s2 = 1.0 / np.asarray(refl.d, dtype=np.float64) ** 2
    per_refl = c_h * np.asarray(term.k_total, dtype=np.float64) ** 2 * s2
    edges = np.quantile(s2, np.linspace(0.0, 1.0, _CURVATURE_SHELLS + 1))
    shell = np.clip(np.searchsorted(edges, s2, side="right") - 1, 0, _CURVATURE_SHELLS - 1)
    centres = np.array([s2[shell == k].mean() if np.any(shell == k) else 0.0
                        for k in range(_CURVATURE_SHELLS)])
    f = context.table.coefficients(model.element, model.charge).evaluate(centres)  # (N, shells)
    power = np.mean((model.occ[:, None] * f) ** 2 * np.exp(-0.5 * model.b_iso[:, None] * centres),
                    axis=0)
    n_ops = len(model.spacegroup.operations())
    return float(n_ops * (2 * np.pi) ** 2 / 3.0 * np.sum(per_refl * power[shell]))
