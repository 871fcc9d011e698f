"""Harmonic position restraint: T = Σ_i |x_i − x_i^ref|² / σ² (σ in Å)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import AtomGradient, Restraint, TermResult


@dataclass
class HarmonicOptions:
    """selection: gemmi selection ('' = all atoms); sigma: Å.

    The reference positions are the selected atoms' positions when the term
    is first set up (e.g. the starting model).
    """

    selection: str = ""
    sigma: float = 0.1

    def validate(self) -> None:
        if self.sigma <= 0:
            raise ValueError("sigma must be positive (Å)")


class HarmonicReference(Restraint):
    """Restrains selected atoms to their starting positions with a harmonic well."""

    name = "harmonic-reference"
    Options = HarmonicOptions

    def setup(self, context) -> None:
        if getattr(self, "reference", None) is None:
            self.indices = context.model.select(self.options.selection)
            self.reference = context.model.xyz[self.indices].copy()

    def evaluate(self, model, want_grad=True, want_curv=False) -> TermResult:
        diff = model.xyz[self.indices] - self.reference
        inv_s2 = 1.0 / self.options.sigma ** 2
        value = float(np.sum(diff * diff) * inv_s2)
        grad = curv = None
        if want_grad:
            grad = AtomGradient.zeros(model.n_atoms, ("xyz",))
            grad.xyz[self.indices] = 2.0 * inv_s2 * diff
        if want_curv:
            curv = AtomGradient.zeros(model.n_atoms, ("xyz",))
            curv.xyz[self.indices] = 2.0 * inv_s2
        return TermResult(value, grad, curv)

    def statistics(self, model) -> dict[str, float]:
        diff = model.xyz[self.indices] - self.reference
        return {"harmonic_rmsd": float(np.sqrt(np.mean(np.sum(diff * diff, axis=1))))}
