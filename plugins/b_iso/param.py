"""Isotropic displacement parameters B = 8π²<u²> (Å²) as bounded parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import AtomGradient, AtomModel, Parameterization
from refinekit.plugin_api.numerics.riding import hydrogen_parents


@dataclass
class BIsoOptions:
    """selection: gemmi selection ('' = all); b_min/b_max: bounds in Å².

    isotropize: atoms with anisotropic U are converted to B = 8π²(U11+U22+U33)/3
    at setup and refined isotropically (REFMAC's "refi bref iso"); when
    false they are left out of this parameterization.  B values outside
    the bounds are moved to the nearest bound at setup.

    riding_hydrogens: an H whose parent heavy atom is refined gets
    B_H = r·B_parent (r = their ratio at setup) instead of a parameter of
    its own (see :mod:`refinekit.plugin_api.numerics.riding`).
    """

    selection: str = ""
    b_min: float = 1.0
    b_max: float = 500.0
    isotropize: bool = True
    riding_hydrogens: bool = True

    def validate(self) -> None:
        if not 0 <= self.b_min < self.b_max:
            raise ValueError(f"need 0 ≤ b_min < b_max, got {self.b_min}, {self.b_max}")


class BIsoParameters(Parameterization):
    """p = B (Å²) per selected atom; identity map with bounds; riding H follow
    their parent: B_H = r·p_parent, dT/dp_parent += r·dT/dB_H."""

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
        clipped = np.clip(model.b_iso[idx], self.options.b_min, self.options.b_max)
        if np.any(clipped != model.b_iso[idx]):
            model.b_iso[idx] = clipped  # start inside the bounds
            model.mark_changed()
        self.free, self.riders, self.slot, self.ratio = idx, idx[:0], idx[:0], np.zeros(0)
        if self.options.riding_hydrogens and model.is_hydrogen[idx].any():
            self._set_riding(model, idx)
        self.indices = np.concatenate([self.free, self.riders])

    def _set_riding(self, model: AtomModel, idx: np.ndarray) -> None:
        key = (id(model.structure), model.n_atoms)  # the same atoms: H keep their parents
        if getattr(self, "_parents_for", None) != key:
            self._parents, self._parents_for = hydrogen_parents(model), key
        parents = self._parents
        position = np.full(model.n_atoms, -1, dtype=np.int64)
        heavy = idx[~model.is_hydrogen[idx]]
        position[heavy] = np.arange(len(heavy))
        rides = model.is_hydrogen[idx] & (parents[idx] >= 0)
        rides[rides] = position[parents[idx[rides]]] >= 0
        self.free = idx[~rides]
        self.riders = idx[rides]
        position[self.free] = np.arange(len(self.free))
        self.slot = position[parents[self.riders]]
        b_parent = model.b_iso[parents[self.riders]]
        self.ratio = np.divide(model.b_iso[self.riders], b_parent, out=np.ones(len(b_parent)),
                               where=b_parent > 0)

    def initial(self, model: AtomModel) -> np.ndarray:
        return model.b_iso[self.free].copy()

    def apply(self, p: np.ndarray, model: AtomModel) -> None:
        model.b_iso[self.free] = p
        model.b_iso[self.riders] = self.ratio * p[self.slot]

    def pullback(self, grad: AtomGradient, model: AtomModel) -> np.ndarray:
        g = grad.get("b_iso")
        out = g[self.free].copy()
        np.add.at(out, self.slot, self.ratio * g[self.riders])
        return out

    def bounds(self, model: AtomModel) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.free)
        return np.full(n, self.options.b_min), np.full(n, self.options.b_max)
