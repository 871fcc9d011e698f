"""Flat bulk-solvent correction fitted by grid search and local least squares.

Model (Fokine & Urzhumtsev 2002, Acta Cryst. D58, 1387; Afonine et al. 2013,
Acta Cryst. D69, 625)::

    F_model = k_total · (F_calc + k_mask · F_mask),   k_mask = k_sol · exp(−B_sol s²/4)

with s = 1/d (Å⁻¹), k_sol in e/Å³, B_sol in Å², F_mask (Å³) the transform
of the flat solvent mask (:mod:`refinekit.plugin_api.numerics.solvent_mask`).
``babinet = true`` uses Babinet's principle instead (Moews & Kretsinger 1975,
J. Mol. Biol. 91, 201): F_part = −k_mask·F_calc, so
F_model = k_total·(1 − k_sol·exp(−B_sol s²/4))·F_calc.

The fit holds the anisotropic part of k_total fixed and refines, on the work
set, k_sol, B_sol, an overall scalar K and an isotropic B_overall:

    |F_model| = K·exp(−B_overall s²/4)·k_total_old·|F_calc + k_mask·F_mask|

K is solved in closed form for every trial (variable projection).  A grid
over (k_sol, B_sol), with B_overall from a log-linear fit per point, gives
the start of a bounded trust-region Gauss–Newton refinement (scipy
``least_squares``) of Σ(|Fo| − |F_model|)².  k_total is then replaced by
K·exp(−B_overall s²/4)·k_total_old (for all reflections) and F_part by
k_mask·F_mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from refinekit.plugin_api import AtomModel, ReflectionData, Scaler
from refinekit.plugin_api.numerics import aniso, solvent_mask


@dataclass
class BulkSolventOptions:
    """Settings of the bulk-solvent scaler (lengths Å, B Å², k_sol e/Å³).

    * ``babinet`` — Babinet's principle instead of a mask.
    * ``r_probe``, ``r_shrink`` — mask probe and shrink radii (Å).
    * ``grid_step`` — mask grid spacing (Å); 0 = min(d_min/4, ``max_grid_step``).
    * ``max_grid_step`` — cap of the automatic spacing (Å).
    * ``update_shift`` — recompute the mask when an atom moved more than this
      (Å) since the mask was made.
    * ``include_hydrogens`` — let H/D atoms enter the mask.
    * ``k_sol_range``, ``b_sol_range`` — bounds of the search (and refinement);
      the grid has 13 × 15 points.
    * ``refine_b_overall`` — refine the isotropic B_overall with k_sol, B_sol.
    * ``warm_start`` — after the first fit, start the local refinement from
      the previous k_sol, B_sol instead of the grid search (the parameters
      move little between macro-cycles; the grid costs ~200 F_model passes).
    """

    babinet: bool = False
    r_probe: float = 1.0
    r_shrink: float = 0.8
    grid_step: float = 0.0
    max_grid_step: float = 0.6
    update_shift: float = 0.3
    include_hydrogens: bool = False
    k_sol_range: list[float] = field(default_factory=lambda: [0.0, 0.6])
    b_sol_range: list[float] = field(default_factory=lambda: [10.0, 150.0])
    refine_b_overall: bool = True
    warm_start: bool = True

    def validate(self) -> None:
        """Reject impossible values (raises ValueError → ConfigError)."""
        if self.r_probe < 0 or self.r_shrink < 0:
            raise ValueError("r_probe and r_shrink must be >= 0 Å")
        if self.grid_step < 0 or self.max_grid_step <= 0:
            raise ValueError("grid_step must be >= 0 and max_grid_step > 0 Å")
        if self.update_shift < 0:
            raise ValueError("update_shift must be >= 0 Å")
        for name in ("k_sol_range", "b_sol_range"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high")
        if self.k_sol_range[0] < 0:
            raise ValueError("k_sol_range must be >= 0")


@dataclass
class SolventFit:
    """Result of :func:`fit_solvent`: parameters and the work-set LS residual."""

    k_sol: float
    b_sol: float
    k_scale: float
    b_overall: float
    residual: float


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b without BLAS threads (a threaded ddot stalls on a busy machine)."""
    return float(np.einsum("i,i->", a, b))


def _projected(f_obs: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """(K, Σ(Fo − K g)²) with the least-squares K = Σ Fo g / Σ g²."""
    gg = _dot(g, g)
    if gg <= 0:
        return 0.0, _dot(f_obs, f_obs)
    fg = _dot(f_obs, g)
    return fg / gg, _dot(f_obs, f_obs) - fg * fg / gg


def _log_b(f_obs: np.ndarray, g: np.ndarray, s2: np.ndarray) -> float:
    """B (Å²) of the weighted log-linear fit ln(Fo/g) = a − B s²/4."""
    ok = (f_obs > 0) & (g > 0)
    w = g[ok] ** 2
    x = -s2[ok] / 4.0
    y = np.log(f_obs[ok] / g[ok])
    sw, sx, sy = w.sum(), _dot(w, x), _dot(w, y)
    sxx, sxy = _dot(w, x * x), _dot(w, x * y)
    det = sw * sxx - sx * sx
    return float((sw * sxy - sx * sy) / det) if det > 0 else 0.0


def fit_solvent(f_obs: np.ndarray, f_calc: np.ndarray, f_unit: np.ndarray,
                k_aniso: np.ndarray, s2: np.ndarray, k_sol_range=(0.0, 0.6),
                b_sol_range=(10.0, 150.0), refine_b_overall: bool = True,
                start: tuple[float, float] | None = None) -> SolventFit:
    """Fit k_sol, B_sol, K, B_overall to |Fo| (arrays of the fitting set only).

    A range [a, a] fixes that parameter at a.  ``start`` = (k_sol, B_sol)
    replaces the grid search by that single point (warm start).

    |F_model| = K exp(−B_overall s²/4) k_aniso |F_calc + k_sol exp(−B_sol s²/4) f_unit|;
    f_unit is F_mask (mask model) or −F_calc (Babinet).  Grid search then
    bounded trust-region least squares on the residuals (module doc).
    """
    f_obs, s2, k_aniso = (np.asarray(a, dtype=np.float64) for a in (f_obs, s2, k_aniso))
    f_calc, f_unit = (np.asarray(a, dtype=np.complex128) for a in (f_calc, f_unit))

    def amplitude(k_sol: float, b_sol: float, b_all: float) -> np.ndarray:
        fm = f_calc + (k_sol * np.exp(-b_sol * s2 / 4.0)) * f_unit
        return np.exp(-b_all * s2 / 4.0) * k_aniso * np.abs(fm)

    best = None
    grid = ([(float(np.clip(start[0], *k_sol_range)), float(np.clip(start[1], *b_sol_range)))]
            if start is not None else
            [(k, b) for k in np.linspace(k_sol_range[0], k_sol_range[1], 13)
             for b in np.linspace(b_sol_range[0], b_sol_range[1], 15)])
    for k_sol, b_sol in grid:
        g0 = amplitude(k_sol, b_sol, 0.0)
        b_all = _log_b(f_obs, g0, s2) if refine_b_overall else 0.0
        _, res = _projected(f_obs, g0 * np.exp(-b_all * s2 / 4.0))
        if best is None or res < best[0]:
            best = (res, k_sol, b_sol, b_all)
    _, k0, b0, ball0 = best
    n_par = 3 if refine_b_overall else 2

    def residuals(x: np.ndarray) -> np.ndarray:
        g = amplitude(x[0], x[1], x[2] if n_par == 3 else 0.0)
        k, _ = _projected(f_obs, g)
        return f_obs - k * g

    lower = np.array([k_sol_range[0], b_sol_range[0], ball0 - 100.0][:n_par])
    upper = np.array([k_sol_range[1], b_sol_range[1], ball0 + 100.0][:n_par])
    upper = np.maximum(upper, lower + 1e-9)  # a range [a, a] fixes that parameter
    x = scipy.optimize.least_squares(residuals, np.clip([k0, b0, ball0][:n_par], lower, upper),
                                     bounds=(lower, upper), x_scale=[0.1, 10.0, 10.0][:n_par],
                                     ftol=1e-10, xtol=1e-10, max_nfev=200).x
    k_sol, b_sol = float(x[0]), float(x[1])
    b_all = float(x[2]) if n_par == 3 else 0.0
    k_scale, res = _projected(f_obs, amplitude(k_sol, b_sol, b_all))
    return SolventFit(k_sol, b_sol, k_scale, b_all, res)


class BulkSolventScaler(Scaler):
    """Flat bulk solvent (mask or Babinet), see the module docstring.

    Keeps the mask and F_mask between calls; the mask is rebuilt only when
    the hkl set or cell changed or some atom moved more than
    ``update_shift`` Å from where it was when the mask was made.  After the
    first fit the (k_sol, B_sol) search starts from the previous solution
    (``warm_start``).
    """

    name = "bulk-solvent"
    Options = BulkSolventOptions

    def __init__(self, options: BulkSolventOptions | None = None):
        super().__init__(options)
        self.mask: np.ndarray | None = None
        self._f_mask: np.ndarray | None = None
        self._mask_xyz: np.ndarray | None = None
        self._mask_key: tuple | None = None
        self._hkl: np.ndarray | None = None
        self._seen_version: tuple | None = None
        self.mask_updates = 0
        self._last: SolventFit | None = None
        self._fcalc = aniso.FcalcCache()

    # ------------------------------------------------------------------ mask
    def _mask_atoms(self, model: AtomModel) -> np.ndarray:
        keep = model.occ > 0
        if not self.options.include_hydrogens:
            keep &= ~model.is_hydrogen
        return keep

    def _needs_mask(self, model: AtomModel, data: ReflectionData) -> bool:
        key = (tuple(model.cell.parameters), model.spacegroup.hm, model.n_atoms)
        if (self._f_mask is None or self._mask_key != key or len(self._f_mask) != len(data.hkl)
                or not np.array_equal(self._hkl, data.hkl)):
            return True
        if self._seen_version == (id(model), model.version):
            return False
        self._seen_version = (id(model), model.version)
        shift = np.sqrt(np.max(np.sum((model.xyz - self._mask_xyz) ** 2, axis=1)))
        return bool(shift > self.options.update_shift)

    def _update_mask(self, model: AtomModel, data: ReflectionData) -> bool:
        """Rebuild mask and F_mask when needed; True when rebuilt."""
        if not self._needs_mask(model, data):
            return False
        opt = self.options
        d_min = float(np.min(data.d))
        step = opt.grid_step or min(d_min / 4.0, opt.max_grid_step)
        min_shape = tuple(int(v) for v in 2 * np.abs(data.hkl).max(axis=0) + 1)
        shape = solvent_mask.grid_shape(model.cell, model.spacegroup, step, min_shape)
        keep = self._mask_atoms(model)
        radii = solvent_mask.element_radii(model.element[keep])
        self.mask = solvent_mask.solvent_mask(model.cell, model.spacegroup, model.xyz[keep], radii,
                                              shape, opt.r_probe, opt.r_shrink)
        self._f_mask = solvent_mask.mask_structure_factors(self.mask, model.cell, data.hkl)
        self._hkl = data.hkl.copy()
        self._mask_xyz = model.xyz.copy()
        self._mask_key = (tuple(model.cell.parameters), model.spacegroup.hm, model.n_atoms)
        self._seen_version = (id(model), model.version)
        self.mask_updates += 1
        return True

    # ------------------------------------------------------------------ fit
    def fit(self, context) -> dict[str, float]:
        """Refit k_sol, B_sol (and K, B_overall); store F_part and k_total in the context."""
        data, work, free = aniso.scaling_sets(context, self.name)
        model = context.model
        f_calc = self._fcalc.get(context)
        k_old, _ = context.fmodel_scales(data)
        s2 = 1.0 / data.d ** 2
        updated = False
        if self.options.babinet:
            f_unit = -f_calc
        else:
            updated = self._update_mask(model, data)
            f_unit = self._f_mask
        opt = self.options
        start = (self._last.k_sol, self._last.b_sol) if opt.warm_start and self._last else None
        sol = fit_solvent(data.f_obs[work], f_calc[work], f_unit[work], k_old[work], s2[work],
                          opt.k_sol_range, opt.b_sol_range, opt.refine_b_overall, start)
        self._last = sol
        k_total = sol.k_scale * np.exp(-sol.b_overall * s2 / 4.0) * k_old
        f_part = (sol.k_sol * np.exp(-sol.b_sol * s2 / 4.0)) * f_unit
        context.set_fmodel_scales(k_total, f_part)
        return aniso.fmodel_figures(data, work | free, f_calc, k_total, f_part) | {
            "k_sol": sol.k_sol, "b_sol": sol.b_sol,
            "mask_updated": float(updated),
            "solvent_fraction": float(self.mask.mean()) if self.mask is not None else float("nan"),
        }

