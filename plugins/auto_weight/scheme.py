"""Automatic weight between experimental data and geometry restraints.

The data terms' weights are multiplied by a factor w that adapts between
macro-cycles so the coordinates' bond-length rmsd from the restraint
library stays inside a target range (default 0.010–0.020 Å), the practice
of REFMAC5's and phenix.refine's automatic weighting (Afonine et al. 2011,
Acta Cryst D67, 674: choose the weight that keeps geometry within
targets).  Both targets here are negative log-likelihoods (ML: −ln L;
geometry: Σ z² = −2 ln L), so w starts at ``start`` (0.5 = statistically
balanced).

Rule, before each minimisation that includes a term reporting
``rmsd_bonds``: if the previous such minimisation (run with the current w)
left bond rmsd r above the range, w ← w·(r_mid/r)² (at most ``max_change``
per cycle); below the range, w ← w·(r_mid/r), likewise limited; inside,
w is kept.  The input model's geometry is never used to adapt w (a
perturbed start says nothing about the weight).  Minimisations without a
geometry term (e.g. B refinement) use the configured weights unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import WeightScheme


@dataclass
class AutoWeightOptions:
    """Target range of bond rmsd (Å), the starting factor and the largest change per step."""

    bond_rmsd_min: float = 0.010
    bond_rmsd_max: float = 0.020
    start: float = 0.5
    max_change: float = 3.0
    min_factor: float = 1e-3
    max_factor: float = 100.0

    def validate(self) -> None:
        if not 0 < self.bond_rmsd_min < self.bond_rmsd_max:
            raise ValueError("need 0 < bond_rmsd_min < bond_rmsd_max (Å)")
        if self.start <= 0 or self.max_change <= 1:
            raise ValueError("start must be > 0 and max_change > 1")
        if not 0 < self.min_factor <= self.start <= self.max_factor:
            raise ValueError("need 0 < min_factor ≤ start ≤ max_factor")


class AutoWeight(WeightScheme):
    """Data weight adapted per cycle to keep bond rmsd within a target range."""

    name = "auto"
    Options = AutoWeightOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.factor = self.options.start
        self.adapt_next = False
        self.history: list[tuple[float, float]] = []

    def weights(self, context, terms, current) -> dict[str, float]:
        geometry = [t for t in terms.values() if t.role == "restraint"]
        data = [n for n, t in terms.items() if t.role == "target"]
        if not data:
            return dict(current)
        rmsd = self._bond_rmsd(context, geometry)
        if rmsd is None:
            return dict(current)
        if self.adapt_next:
            self.factor = self._adapted(rmsd)
        self.history.append((self.factor, rmsd))
        self.adapt_next = True
        out = dict(current)
        for name in data:
            out[name] = current[name] * self.factor
        context.log(f"auto weight: bond rmsd {rmsd:.4f} Å -> data weight factor {self.factor:.4g}")
        return out

    @staticmethod
    def _bond_rmsd(context, restraints) -> float | None:
        for term in restraints:
            stats = term.statistics(context.model)
            if "rmsd_bonds" in stats:
                return float(stats["rmsd_bonds"])
        return None

    def _adapted(self, rmsd: float) -> float:
        o = self.options
        mid = 0.5 * (o.bond_rmsd_min + o.bond_rmsd_max)
        factor = self.factor
        if rmsd > o.bond_rmsd_max:
            factor *= max((mid / rmsd) ** 2, 1.0 / o.max_change)
        elif rmsd < o.bond_rmsd_min:
            factor *= min(mid / max(rmsd, 1e-6), o.max_change)
        return float(np.clip(factor, o.min_factor, o.max_factor))
