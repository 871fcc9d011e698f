"""Isotropic displacement parameters B = 8π²<u²> (Å²) as bounded parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import AtomGradient, AtomModel, Parameterization


@dataclass
class BIsoOptions:
    """selection: gemmi selection ('' = all); b_min/b_max: bounds in Å².

    isotropize: atoms with anisotropic U are converted to B = 8π²(U11+U22+U33)/3
    at setup and refined isotropically (REFMAC's "refi bref iso"); when
    false they are left out of this parameterization.  B values outside
    the bounds are moved to the nearest bound at setup.
    """

    selection: str = ""
    b_min: float = 1.0
    b_max: float = 500.0
    isotropize: bool = True

    def validate(self) -> None:
        if not 0 <= self.b_min < self.b_max:
            raise ValueError(f"need 0 ≤ b_min < b_max, got {self.b_min}, {self.b_max}")


class BIsoParameters(Parameterization):
    """p = B (Å²) per selected atom; identity map with bounds."""

    name = "b-iso"
    fields = ("b_iso",)
    Options = BIsoOptions

    def setup(self, context) -> None:
        model = context.model
        idx = model.select(self.options.selection)
        aniso = model.has_aniso[idx]
        if self.options.isotropize and aniso.any():
            conv = idx[aniso]
            model.b_iso[conv] = 8 * np.pi ** 2 * model.u_aniso[conv, :3].mean(axis=1)
            model.has_aniso[conv] = False
            model.mark_changed()
        else:
            idx = idx[~aniso]
        self.indices = idx
        clipped = np.clip(model.b_iso[idx], self.options.b_min, self.options.b_max)
        if np.any(clipped != model.b_iso[idx]):
            model.b_iso[idx] = clipped  # start inside the bounds
            model.mark_changed()

    def initial(self, model: AtomModel) -> np.ndarray:
        return model.b_iso[self.indices].copy()

    def apply(self, p: np.ndarray, model: AtomModel) -> None:
        model.b_iso[self.indices] = p

    def pullback(self, grad: AtomGradient, model: AtomModel) -> np.ndarray:
        return grad.get("b_iso")[self.indices].copy()

    def bounds(self, model: AtomModel) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.indices)
        return np.full(n, self.options.b_min), np.full(n, self.options.b_max)
