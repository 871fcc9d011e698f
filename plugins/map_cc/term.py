"""The ``map-cc`` real-space target: T = −CC(ρ_obs, ρ_model) inside a mask.

ρ_model is the model's density at the map's resolution d: structure factors
from the run's Fcalc engine for the reflections of the map's cell (the box is
the unit cell) with d_hkl ≥ d, a sharp resolution cut, inverse FFT onto the
map grid (:class:`refinekit.plugin_api.numerics.maps.BoxModelMap`).  The
correlation is taken over the grid points within ``mask_radius`` of the
starting model's non-H atoms (fixed at setup, as CC_mask of Afonine et al.
2018, Acta Cryst. D74, 814–840; target use: Afonine et al. 2018, D74, 531).

Gradient: ∂T/∂ρ_model on the grid (Pearson CC derivative) → forward FFT →
∂T/∂F → the engine's adjoint, giving xyz, B and occupancy derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import AtomModel, DataTarget, InputError, MapData, TermResult
from refinekit.plugin_api.numerics.maps import (BoxModelMap, check_resolution, correlation_and_gradient,
                                                covers_cell, mask_near_atoms, require_model_inside)


@dataclass
class MapCCOptions:
    """Settings of ``map-cc``.

    mask_radius: Å around each non-H atom of the starting model (> 0).
    resolution: d in Å for the model map; None takes the map's resolution.
    """

    mask_radius: float = 2.5
    resolution: float | None = None

    def validate(self) -> None:
        if not self.mask_radius > 0:
            raise ValueError(f"mask_radius must be > 0 Å, got {self.mask_radius}")


class MapCCTerm(DataTarget):
    """Real-space correlation target T = −CC_mask(ρ_obs, ρ_model(d)).

    Model map via the context's FcalcEngine (P1 box), gradient via its
    adjoint; the mask is built once in ``setup`` from ``context.model``.
    """

    name = "map-cc"
    Options = MapCCOptions

    def setup(self, context) -> None:
        data = context.data
        if not isinstance(data, MapData):
            raise InputError(f"term 'map-cc' needs a density map as data (got {type(data).__name__})")
        d = check_resolution(self.options.resolution if self.options.resolution is not None
                             else data.resolution, data)
        model = context.model
        if not covers_cell(data) or data.spacegroup.number == 1:
            require_model_inside(data, model.xyz)
        self.mapper = BoxModelMap(context.fcalc, data, d, model.structure)
        heavy = ~model.is_hydrogen
        self.mask = np.flatnonzero(mask_near_atoms(data, model.xyz[heavy], self.options.mask_radius))
        if len(self.mask) < 2:
            raise InputError("the map-cc mask around the model holds fewer than 2 grid points",
                             data.source or None)
        self.obs = data.values.ravel()[self.mask].astype(np.float64)
        self.shape = data.values.shape

    def correlation(self, model: AtomModel, want_grad: bool):
        """(CC_mask, ∂CC/∂ρ_model over the mask or None)."""
        rho = self.mapper.compute(model).ravel()[self.mask]
        cc, dcc = correlation_and_gradient(self.obs, rho)
        return cc, (dcc if want_grad else None)

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        cc, dcc = self.correlation(model, want_grad)
        if not want_grad:
            return TermResult(-cc)
        d_rho = np.zeros(int(np.prod(self.shape)))
        d_rho[self.mask] = -dcc
        return TermResult(-cc, self.mapper.gradient(model, d_rho.reshape(self.shape)))

    def statistics(self, model: AtomModel) -> dict[str, float]:
        cc, _ = self.correlation(model, want_grad=False)
        return {"map_cc_mask": float(cc)}
