"""The ``map-value`` real-space target.

T = −Σ_m w_m ρ(r_m): the map interpolated at atom centres (Diamond 1971,
Acta Cryst. A27, 436; the "simplified target" of phenix.real_space_refine,
Afonine et al. 2018, Acta Cryst. D74, 531–544, §2.2, eq. 2).  ρ is
interpolated tricubically (Lekien & Marsden 2005 with finite-difference
corner derivatives; see :mod:`refinekit.plugin_api.numerics.interpolation`),
so T is C¹ in the coordinates and its gradient is analytic:

∂T/∂r_m = −w_m Gᵀ ∇_u ρ(u_m),  u = G·r − origin,  G = diag(grid)·Frac.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gemmi
import numpy as np

from refinekit.plugin_api import (AtomGradient, AtomModel, ConfigError, DataTarget, InputError,
                                  MapData, TermResult)
from refinekit.plugin_api.numerics.interpolation import interpolate
from refinekit.plugin_api.numerics.maps import covers_cell, grid_matrix, require_model_inside


@dataclass
class MapValueOptions:
    """Settings of ``map-value``.

    weights: per-atom w_m — "atomic-number" (Z, electrons), "unit" (1), or
      "table" (f(s=0) of the run's scattering table: electrons for X-rays,
      scattering length for neutrons — negative for H).
    include_hydrogens: False gives H/D atoms weight 0.
    interpolation: "catmull-rom" (64 points, exact to quadratics) or
      "hermite-fd4" (216 points, exact to cubics).
    boundary: "periodic" wraps (full-cell crystallographic maps), "box" clamps
      and refuses atoms outside the box at setup (cryo-EM), "auto" = periodic
      for a full-cell map of a space group other than P 1, else box.
    normalize: divide the map by its standard deviation (T in σ·weight units).
    """

    weights: Literal["atomic-number", "unit", "table"] = "atomic-number"
    include_hydrogens: bool = True
    interpolation: Literal["catmull-rom", "hermite-fd4"] = "catmull-rom"
    boundary: Literal["auto", "box", "periodic"] = "auto"
    normalize: bool = True


def atom_weights(model: AtomModel, kind: str, include_hydrogens: bool,
                 table=None) -> np.ndarray:
    """Per-atom weights w_m (see :class:`MapValueOptions`)."""
    if kind == "atomic-number":
        w = np.array([gemmi.Element(str(e)).atomic_number for e in model.element], dtype=np.float64)
    elif kind == "unit":
        w = np.ones(model.n_atoms)
    else:
        coef = table.coefficients(model.element, model.charge)
        w = coef.a.sum(axis=1) + coef.c
    if not include_hydrogens:
        w = np.where(model.is_hydrogen, 0.0, w)
    return w


class MapValueTerm(DataTarget):
    """Real-space map-value target T = −Σ w ρ(r) (Afonine et al. 2018, eq. 2).

    Map from ``context.data`` (MapData), model from ``evaluate``; gradient
    with respect to xyz (Å⁻¹ in map units × weight units).
    """

    name = "map-value"
    Options = MapValueOptions

    def setup(self, context) -> None:
        data = context.data
        if not isinstance(data, MapData):
            raise InputError("term 'map-value' needs a density map as data "
                             f"(got {type(data).__name__})")
        periodic = self._periodic(data)
        if not periodic:
            require_model_inside(data, context.model.xyz)
        values = np.asarray(data.values, dtype=np.float64)
        if self.options.normalize:
            values = values / values.std()
        self.map = data
        self.grid = np.ascontiguousarray(values)
        self.periodic = periodic
        self.gmat = grid_matrix(data)
        self.origin = np.asarray(data.origin, dtype=np.float64)
        table = getattr(context, "table", None) if self.options.weights == "table" else None
        self.weights = atom_weights(context.model, self.options.weights,
                                    self.options.include_hydrogens, table)

    def _periodic(self, data: MapData) -> bool:
        mode = self.options.boundary
        if mode == "periodic" and not covers_cell(data):
            raise ConfigError(f"boundary 'periodic' needs a full-cell map; {data.source or 'the map'} "
                              f"stores {data.values.shape} of {data.grid_shape} grid points",
                              "terms.map-value.boundary")
        if mode == "auto":
            return covers_cell(data) and data.spacegroup.number != 1
        return mode == "periodic"

    def density_at(self, xyz: np.ndarray, want_grad: bool = True):
        """Interpolated (normalised) ρ at ``xyz`` (Å) and ∂ρ/∂xyz (Å⁻¹) or None."""
        u = xyz @ self.gmat.T - self.origin
        rho, du = interpolate(self.grid, u, self.options.interpolation, self.periodic, want_grad)
        return rho, (du @ self.gmat if want_grad else None)

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        rho, drho = self.density_at(model.xyz, want_grad)
        value = -float(self.weights @ rho)
        if not want_grad:
            return TermResult(value)
        return TermResult(value, AtomGradient(model.n_atoms, xyz=-self.weights[:, None] * drho))

    def statistics(self, model: AtomModel) -> dict[str, float]:
        rho, _ = self.density_at(model.xyz, want_grad=False)
        heavy = ~model.is_hydrogen
        return {"map_value_mean_sigma": float(rho[heavy].mean()) if heavy.any() else 0.0}
