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

Option ``overall_b = "fit"`` blurs (or sharpens) the model map by an
overall factor exp(−B_o s²/4), B_o fitted at setup to maximise the
correlation of the model's and the map's Fourier coefficients (to d, over
the whole box): a map sharpened or blurred relative to the model's atomic B
makes −CC biased in the coordinates (the exact model is its stationary
point only when the model map matches the data up to scale), so a
coordinate refinement against this term fits that one nuisance parameter
instead of the atomic B values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.optimize

from refinekit.plugin_api import AtomModel, DataTarget, InputError, MapData, TermResult
from refinekit.plugin_api.numerics.maps import (BoxModelMap, check_resolution, correlation_and_gradient,
                                                covers_cell, cut_box, fc_to_map, fractional_matrix,
                                                map_gradient_to_dF, mask_near_atoms,
                                                require_model_inside, uncut_box)


@dataclass
class MapCCOptions:
    """Settings of ``map-cc``.

    mask_radius: Å around each non-H atom of the starting model (> 0).
    resolution: d in Å for the model map; None takes the map's resolution.
    overall_b: "none" — the model map uses the atomic B values as they are;
      "fit" — it is multiplied by exp(−B_o s²/4), B_o (Å²) fitted at every
      setup within [−min non-H B, overall_b_max] (see the module docstring).
    overall_b_max: upper bound of B_o, Å² (> 0).
    """

    mask_radius: float = 2.5
    resolution: float | None = None
    overall_b: Literal["none", "fit"] = "none"
    overall_b_max: float = 500.0

    def validate(self) -> None:
        if not self.mask_radius > 0:
            raise ValueError(f"mask_radius must be > 0 Å, got {self.mask_radius}")
        if not self.overall_b_max > 0:
            raise ValueError(f"overall_b_max must be > 0 Å², got {self.overall_b_max}")


class BlurredModelMap(BoxModelMap):
    """:class:`BoxModelMap` whose structure factors are multiplied by a real factor k_h > 0."""

    def __init__(self, engine, m: MapData, d_min: float, structure, factor: np.ndarray):
        super().__init__(engine, m, d_min, structure)
        self.factor = factor

    def compute(self, model: AtomModel) -> np.ndarray:
        fc = self.engine.calc(self.boxed(model), self.hkl) * self.factor
        return cut_box(fc_to_map(fc, self.hkl, self.map.grid_shape, self.volume), self.map)

    def gradient(self, model: AtomModel, d_rho: np.ndarray):
        full = uncut_box(np.asarray(d_rho, dtype=np.float64), self.map)
        dT_dF = map_gradient_to_dF(full, self.hkl, self.volume) * self.factor
        return self.engine.gradient(self.boxed(model), self.hkl, dT_dF)


def fit_overall_b(f_obs: np.ndarray, f_calc: np.ndarray, s2: np.ndarray,
                  lower: float, upper: float) -> tuple[float, float]:
    """B_o (Å²) in [lower, upper] maximising the correlation of F_obs and F_calc·exp(−B_o s²/4).

    CC(B) = Σ k Re(F_obs F_calc*) / √(Σ|F_obs|² Σ k²|F_calc|²), k = exp(−B s²/4),
    s² in Å⁻² (the Fourier form of the map correlation over the whole cell,
    Parseval); bounded Brent search to 0.1 Å².  Returns (B_o, CC(B_o)).
    """
    cross = np.real(f_obs * np.conj(f_calc))
    calc2 = np.abs(f_calc) ** 2
    norm_obs = np.sqrt(float(np.sum(np.abs(f_obs) ** 2)))

    def negative_cc(b: float) -> float:
        k = np.exp(-0.25 * b * s2)
        return -float(k @ cross) / (norm_obs * np.sqrt(float((k * k) @ calc2)) + 1e-300)

    res = scipy.optimize.minimize_scalar(negative_cc, bounds=(lower, upper), method="bounded",
                                         options={"xatol": 0.1})
    return float(res.x), -float(res.fun)


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
        self.overall_b = None
        if self.options.overall_b == "fit":
            self._fit_overall_b(data, model, d)
        heavy = ~model.is_hydrogen
        self.mask = np.flatnonzero(mask_near_atoms(data, model.xyz[heavy], self.options.mask_radius))
        if len(self.mask) < 2:
            raise InputError("the map-cc mask around the model holds fewer than 2 grid points",
                             data.source or None)
        self.obs = data.values.ravel()[self.mask].astype(np.float64)
        self.shape = data.values.shape

    def _fit_overall_b(self, data: MapData, model: AtomModel, d: float) -> None:
        """Fit B_o (:func:`fit_overall_b`) and switch the mapper to the blurred model map."""
        mapper = self.mapper
        f_obs = map_gradient_to_dF(uncut_box(np.asarray(data.values, dtype=np.float64), data),
                                   mapper.hkl, mapper.volume)  # ∝ F_obs (the adjoint of the synthesis)
        f_calc = mapper.engine.calc(mapper.boxed(model), mapper.hkl)
        s = mapper.hkl.astype(np.float64) @ fractional_matrix(data.cell)
        s2 = np.einsum("ij,ij->i", s, s)
        heavy = ~model.is_hydrogen
        lower = -float(model.b_iso[heavy].min()) if heavy.any() else 0.0
        self.overall_b, _ = fit_overall_b(f_obs, f_calc, s2, min(lower, 0.0), self.options.overall_b_max)
        self.mapper = BlurredModelMap(mapper.engine, data, d, model.structure,
                                      np.exp(-0.25 * self.overall_b * s2))

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
        if self.overall_b is not None:  # a fitted blur: CC_mask of the unblurred map is another term's
            return {"map_cc_overall_b": self.overall_b}
        cc, _ = self.correlation(model, want_grad=False)
        return {"map_cc_mask": float(cc)}
