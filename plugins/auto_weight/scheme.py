"""Automatic weight between experimental data and geometry restraints.

The data terms' weights are multiplied by a factor w that adapts between
macro-cycles so the coordinates' bond-length rmsd from the restraint
library stays inside a target range (default 0.010–0.020 Å), the practice
of REFMAC5's and phenix.refine's automatic weighting (Afonine et al. 2011,
Acta Cryst D67, 674: choose the weight that keeps geometry within
targets).

Initial factor (``start = 0``, the default): Brünger's gradient-ratio
rule (Brünger, Karplus & Petsko 1989, Acta Cryst A45, 50; Adams et al.
1997, PNAS 94, 5018) with the geometry gradient taken at its expected size
for restraints met with r.m.s. Z = 1 rather than at the input model (a
distorted start would otherwise inflate it):

    w₀ = ``gradient_ratio`` · √(2·⟨∂²T_geom/∂x²⟩) / rms(∂T_data/∂x),

where ⟨∂²T_geom/∂x²⟩ is the mean Gauss–Newton diagonal of the geometry term
(``evaluate(want_curv=True)``; for T = Σ z², ∂T/∂x = 2 z ∂z/∂x and the
curvature is 2 Σ (∂z/∂x)², so |∂T/∂x| at |z| = 1 is √(2·curvature)) and the
data gradient is taken at the input model after the initial scaling, over
all atoms and axes.  A positive ``start`` overrides the estimate.

Rule, before each minimisation that includes a term reporting
``rmsd_bonds``: after the first minimisation with the current w left bond
rmsd r outside the range, w ← w·(r_mid/r)^(1/p) with p = ``response``
(bond rmsd grows roughly as w^p), the change limited to ``max_change`` per
cycle; inside the range w is kept.  When ``angle_rmsd_max`` > 0 and the
angle rmsd a (degrees) exceeds it, w is also lowered, by
(0.95·a_max/a)^(1/p), whichever of the two asks for the lower w (at low
resolution angles drift before bonds do: 3nr7 at 3.7 Å had 2.2° at a bond
rmsd of 0.009 Å).  A change in the opposite direction to the previous
one is damped to its square root (the previous step overshot: on 3nr7
the factor otherwise swung between 25 and 42).  The input model's geometry is never used to adapt w (a
perturbed start says nothing about the weight), and w is not lowered
while the geometry is still improving fast — bond or angle rmsd fell by
more than ``settling`` (fraction) during the last minimisation — since
a model still being regularised says nothing about the weight either (from
1l2h_p05 with short minimisations the angle rmsd 4.4° after the first one
otherwise cut w from 26 to 2, leaving R-free at 0.306).

Minimisations without a geometry term (e.g. B refinement against the data
and an ADP-similarity restraint) multiply the data weights by
``adp_scale``·w once w exists, so the ADP restraints are balanced
against the data on the same footing as geometry (on 1l2h, two B-only
cycles with the ML weight left at 1 took R-free from 0.279 to 0.291; with
the ML weight scaled by w ≈ 10, to 0.283); ``adp_scale = 0`` leaves their
configured weights unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import ConfigError, WeightScheme


@dataclass
class AutoWeightOptions:
    """Target range of bond rmsd (Å), the starting factor and its adaptation.

    ``start``: initial factor (0 = gradient-ratio estimate);
    ``gradient_ratio``: wanted ratio of rms data force to expected rms
    restraint force in that estimate;
    ``angle_rmsd_max``: angle rmsd (degrees) above which w is lowered too
    (0 = bonds only); ``response``: assumed exponent p of bond rmsd ∝ w^p;
    ``adp_scale``:
    data-weight factor of minimisations without geometry, relative to w
    (0 = leave them alone); ``max_change``:
    largest factor change per cycle; ``settling``: relative fall of bond or
    angle rmsd during a minimisation above which w is not lowered;
    ``min_factor``/``max_factor``: limits.
    """

    bond_rmsd_min: float = 0.010
    bond_rmsd_max: float = 0.020
    angle_rmsd_max: float = 0.0
    start: float = 0.0
    gradient_ratio: float = 0.6
    response: float = 0.7
    adp_scale: float = 1.0
    max_change: float = 3.0
    settling: float = 0.15
    min_factor: float = 1e-6
    max_factor: float = 1e8

    def validate(self) -> None:
        if not 0 < self.bond_rmsd_min < self.bond_rmsd_max:
            raise ValueError("need 0 < bond_rmsd_min < bond_rmsd_max (Å)")
        if self.adp_scale < 0 or self.angle_rmsd_max < 0:
            raise ValueError("adp_scale and angle_rmsd_max must be ≥ 0")
        if self.start < 0 or self.gradient_ratio <= 0 or self.response <= 0 or self.max_change <= 1:
            raise ValueError("need start ≥ 0, gradient_ratio > 0, response > 0 and max_change > 1")
        if not 0 <= self.settling < 1:
            raise ValueError("need 0 ≤ settling < 1")
        if not 0 < self.min_factor <= (self.start or self.min_factor) <= self.max_factor:
            raise ValueError("need 0 < min_factor ≤ start ≤ max_factor")


class AutoWeight(WeightScheme):
    """Data weight adapted per cycle to keep bond rmsd within a target range."""

    name = "auto"
    Options = AutoWeightOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.factor: float | None = self.options.start or None
        self.adapt_next = False
        self.last_change = 1.0
        self.history: list[tuple[float, float]] = []
        self.before: tuple[float, float] | None = None  # geometry before the last minimisation

    def weights(self, context, terms, current) -> dict[str, float]:
        geometry = [t for t in terms.values() if t.role == "restraint"]
        data = [n for n, t in terms.items() if t.role == "target"]
        if not data:
            return dict(current)
        stats = self._geometry_statistics(context, geometry)
        if stats is None:
            return self._without_geometry(context, data, current)
        rmsd, angles = stats
        if self.factor is None:
            self.factor = self._initial(context, {n: terms[n] for n in data}, current, geometry)
        elif self.adapt_next:
            self.factor = self._adapted(rmsd, angles, self._settling(rmsd, angles))
        self.before = (rmsd, angles)
        self.history.append((self.factor, rmsd))
        self.adapt_next = True
        out = dict(current)
        for name in data:
            out[name] = current[name] * self.factor
        context.log(f"auto weight: bond rmsd {rmsd:.4f} Å, angle rmsd {angles:.2f}° -> "
                    f"data weight factor {self.factor:.4g}")
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
    def _geometry_statistics(context, restraints) -> tuple[float, float] | None:
        """(bond rmsd Å, angle rmsd degrees; NaN when not reported) of the first geometry term."""
        for term in restraints:
            stats = term.statistics(context.model)
            if "rmsd_bonds" in stats:
                return float(stats["rmsd_bonds"]), float(stats.get("rmsd_angles", np.nan))
        return None

    def _initial(self, context, data: dict, current: dict[str, float], restraints) -> float:
        """Gradient-ratio estimate of the first factor (see the module docstring)."""
        o = self.options
        model = context.model
        curv = sum(float(np.mean(t.evaluate(model, want_grad=False, want_curv=True).curvature.xyz))
                   for t in restraints if "rmsd_bonds" in t.statistics(model))
        force = np.zeros((model.n_atoms, 3))
        for name, term in data.items():
            grad = term.evaluate(model, want_grad=True).gradient
            if grad is not None and grad.xyz is not None:
                force += current[name] * grad.xyz
        data_rms = float(np.sqrt(np.mean(force ** 2)))
        if not (curv > 0 and data_rms > 0 and np.isfinite(data_rms)):
            raise ConfigError("cannot estimate the initial data weight factor (no coordinate gradient "
                              "from the data or no geometry curvature); set a positive start",
                              "weights.options.start")
        restraint_rms = float(np.sqrt(2.0 * curv))
        factor = float(np.clip(o.gradient_ratio * restraint_rms / data_rms, o.min_factor, o.max_factor))
        context.log(f"auto weight: rms data force {data_rms:.4g}, expected rms restraint force "
                    f"{restraint_rms:.4g} -> initial factor {factor:.4g}")
        return factor

    def _settling(self, rmsd: float, angles: float) -> bool:
        """True when the last minimisation cut bond or angle rmsd by more than ``settling``."""
        if self.before is None:
            return False
        keep = 1.0 - self.options.settling
        bonds0, angles0 = self.before
        return rmsd < keep * bonds0 or (np.isfinite(angles0) and angles < keep * angles0)

    def _adapted(self, rmsd: float, angles: float, settling: bool = False) -> float:
        o = self.options
        mid = 0.5 * (o.bond_rmsd_min + o.bond_rmsd_max)
        change = 1.0
        if not o.bond_rmsd_min <= rmsd <= o.bond_rmsd_max:
            change = (mid / max(rmsd, 1e-6)) ** (1.0 / o.response)
        if o.angle_rmsd_max > 0 and angles > o.angle_rmsd_max:
            change = min(change, (0.95 * o.angle_rmsd_max / angles) ** (1.0 / o.response))
        if settling and change < 1.0:
            return self.factor  # geometry still converging: not evidence of a too-high weight
        if (change - 1.0) * (self.last_change - 1.0) < 0:
            change = float(np.sqrt(change))  # reversal: the last step overshot, damp this one
        change = float(np.clip(change, 1.0 / o.max_change, o.max_change))
        self.last_change = change
        return float(np.clip(self.factor * change, o.min_factor, o.max_factor))

