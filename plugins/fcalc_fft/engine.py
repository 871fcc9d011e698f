"""Structure factors by FFT of atomic densities, and their exact adjoint.

Method
------
1. The atoms given (an asymmetric unit) are spread as cut Gaussian densities
   blurred by B_add on a P1 grid covering the unit cell
   (:mod:`refinekit.plugin_api.numerics.density`; Ten Eyck 1977,
   Acta Cryst A33, 486; Afonine & Urzhumtsev 2004, Acta Cryst A60, 19):
   separable 1-D tables for isotropic atoms in orthogonal cells, row
   recurrences otherwise.
2. One real-to-complex FFT gives F₁(k), the P1 transform of those atoms.
3. F(h) = exp(B_add s²/4) Σ_s exp(2πi h·t_s) F₁(R_sᵀ h) sums the space
   group's operations in reciprocal space (no symmetry copies of atoms are
   spread).
4. The gradient is the adjoint of steps 1–3 (Agarwal 1978, Acta Cryst A34,
   791): dT/dF is put on the half-complex grid at R_sᵀ h with the conjugate
   phase (Friedel mates for the halved axis), one complex-to-real FFT gives
   D(r) = ∂T/∂ρ(r), and ∂ρ/∂(x, U, occ) is gathered at every atom.  It is
   the exact derivative of what :meth:`FftFcalc.calc` computes.

B_add is chosen from the grid so aliased Fourier components are damped to
``alias_error`` relative to the highest-resolution reflection:
(B_10 + B_add)(s_alias² − s_max²)/4 ≥ ln(1/alias_error), with
s_alias = min_i (n_i − k_max,i)/|a_i| the nearest alias and B_10 the 10th
percentile of the atoms' (smallest-direction) B, so a few very sharp atoms
do not blur all the others; it is rounded up to a multiple of 5 Å² so small
changes of B do not change it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from refinekit.plugin_api import AtomGradient, AtomModel, FcalcEngine, InputError
from refinekit.plugin_api.numerics import density, fft, symmetry

B_ADD_STEP = 5.0  # Å²; automatic B_add is rounded up to a multiple of this
B_PERCENTILE = 10.0  # automatic B_add makes atoms at this percentile of B alias < alias_error
MIN_TOTAL_B = 1.0  # Å²; smallest B + B_add allowed (point-like terms need some width)
PARALLEL_MIN_POINTS = 1 << 18  # grids smaller than this are transformed on one thread
PARALLEL_MIN_ATOMS = 1000  # models smaller than this are spread/gathered on one thread


@dataclass
class FftOptions:
    """Settings of the FFT engine.

    rate: grid points per d_min/2 along each cell edge (grid spacing
        ≤ d_min/(2·rate) Å, rate ≥ 1.1); larger is finer and slower.
    b_add: extra blurring B_add (Å²) removed again in reciprocal space;
        None chooses it from ``alias_error``.
    alias_error: target relative size of aliased components at d_min.
    cutoff: each Gaussian term is cut where it falls to this fraction of its
        peak (smaller is more accurate and slower; 1e-4 keeps Fcalc within
        ~0.1 % of the exact sum per resolution shell).
    threads: threads for spreading, gathering and the FFT.
    """

    rate: float = 1.5
    b_add: float | None = None
    alias_error: float = 1e-2
    cutoff: float = 1e-4
    threads: int = 2

    def validate(self) -> None:
        if not self.rate >= 1.1:
            raise ValueError(f"rate must be >= 1.1 (got {self.rate})")
        if self.b_add is not None and self.b_add < 0:
            raise ValueError(f"b_add must be >= 0 Å² (got {self.b_add})")
        if not 0.0 < self.alias_error < 1.0:
            raise ValueError(f"alias_error must be in (0, 1) (got {self.alias_error})")
        if not 0.0 < self.cutoff < 0.1:
            raise ValueError(f"cutoff must be in (0, 0.1) (got {self.cutoff})")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (got {self.threads})")


# --------------------------------------------------------------------------- kernels
@numba.njit(cache=True, parallel=True, fastmath=False)
def _pick(x_flat, idx, conj, coef, sharpen):
    """F[h] = sharpen[h] Σ_s coef[h,s] · (conj(X[idx]) if conj else X[idx])."""
    m, ns = idx.shape
    out = np.empty(m, dtype=np.complex128)
    for h in prange(m):
        acc = 0j
        for s in range(ns):
            v = x_flat[idx[h, s]]
            if conj[h, s]:
                v = v.conjugate()
            acc += coef[h, s] * v
        out[h] = acc * sharpen[h]
    return out


@numba.njit(cache=True, fastmath=False)
def _scatter(y_flat, idx_pos, idx_neg, coef, sharpen, dt_df):
    """Hermitian half grid Y of D(r) = Re Σ_{h,s} a_hs exp(2πi k_hs·r), a = conj(g) coef sharpen.

    Y[k] += a/2 where k₂ ≥ 0 and Y[-k] += conj(a)/2 where k₂ ≤ 0, so the
    implied full grid is (a_k + conj(a_-k))/2 (both halves on the k₂ = 0 plane).
    """
    y_flat[:] = 0.0
    m, ns = idx_pos.shape
    for h in range(m):
        g = dt_df[h].conjugate() * sharpen[h] * 0.5
        for s in range(ns):
            a = g * coef[h, s]
            if idx_pos[h, s] >= 0:
                y_flat[idx_pos[h, s]] += a
            if idx_neg[h, s] >= 0:
                y_flat[idx_neg[h, s]] += a.conjugate()


# --------------------------------------------------------------------------- caches
class _Geometry:
    """Everything fixed by (hkl, cell, space group, rate): grid, indices, phases."""

    def __init__(self, hkl: np.ndarray, model: AtomModel, rate: float, threads: int):
        cell = model.cell
        ops = symmetry.SymOps.from_spacegroup(model.spacegroup)
        k, phase = symmetry.expand_hkl(ops, hkl)
        self.s2 = symmetry.reciprocal_s2(cell, hkl)
        self.s2_max = float(self.s2.max()) if len(hkl) else 0.0
        d_min = 1.0 / math.sqrt(self.s2_max) if self.s2_max > 0 else 1.0
        lengths = np.array([cell.a, cell.b, cell.c])
        kmax = np.abs(k).reshape(-1, 3).max(axis=0) if len(hkl) else np.zeros(3, dtype=int)
        self.shape = fft.grid_shape(lengths, d_min, rate, minimum=2 * kmax + 2)
        n = np.array(self.shape)
        self.s_alias2 = float(np.min((n - kmax) / lengths)) ** 2
        # small grids run on one thread: synchronising threads would cost more than it saves
        big = np.prod(n) >= PARALLEL_MIN_POINTS
        self.threads = min(threads, numba.config.NUMBA_NUM_THREADS) if big else 1
        start = time.perf_counter()
        self.plan = fft.real_fft(self.shape, self.threads)
        self.plan_seconds = time.perf_counter() - start  # FFT planning (0 when cached), s
        self.orth = np.array(cell.orth.mat.tolist())
        self.frac = np.array(cell.frac.mat.tolist())
        self.m = density.index_to_cartesian(self.orth, self.shape)
        self.m_inv = np.linalg.inv(self.m)
        half3 = self.shape[2] // 2 + 1
        strides = np.array([self.shape[1] * half3, half3, 1])
        pos_ok = k[..., 2] >= 0
        neg_ok = k[..., 2] <= 0
        flat_pos = (np.mod(k, n) * strides).sum(axis=-1)
        flat_neg = (np.mod(-k, n) * strides).sum(axis=-1)
        self.idx_pos = np.where(pos_ok, flat_pos, -1)
        self.idx_neg = np.where(neg_ok, flat_neg, -1)
        self.pick_idx = np.where(pos_ok, flat_pos, flat_neg)
        self.pick_conj = pos_ok
        volume = cell.volume
        self.coef = phase * (volume / float(np.prod(n)))
        self.slab_plan: density.SlabPlan | None | bool = False  # False: not chosen yet
        self._sharpen_b: float | None = None
        self._sharpen = np.ones(len(hkl))

    def b_needed(self, alias_error: float) -> float:
        """Total B (Å²) of the sharpest Gaussian that damps aliases to ``alias_error``."""
        gap = max(self.s_alias2 - self.s2_max, 1e-3 * self.s2_max, 1e-12)
        return 4.0 * math.log(1.0 / alias_error) / gap

    def sharpen(self, b_add: float) -> np.ndarray:
        """exp(+B_add s²/4) for every reflection (cached per B_add)."""
        if b_add != self._sharpen_b:
            self._sharpen = np.exp(b_add * self.s2 / 4.0)
            self._sharpen_b = b_add
        return self._sharpen


@dataclass
class _Terms:
    """Per-call atom quantities shared by calc and gradient."""

    centres: np.ndarray
    amp: np.ndarray
    logr: np.ndarray
    shift: np.ndarray
    pq: np.ndarray
    wq: np.ndarray
    half: np.ndarray
    b_add: float


class FftFcalc(FcalcEngine):
    """Fcalc by FFT of B_add-blurred atomic densities with an exact adjoint gradient.

    Ten Eyck (1977) Acta Cryst A33, 486; Afonine & Urzhumtsev (2004) Acta
    Cryst A60, 19 (B_add); Agarwal (1978) Acta Cryst A34, 791 (FFT gradients).
    """

    name = "fft"
    Options = FftOptions

    def __init__(self, options: FftOptions | None = None):
        super().__init__(options)
        self._geometry: _Geometry | None = None
        self._geometry_key: tuple | None = None
        self._coefficients = density.AtomCoefficients()
        self._last_terms: tuple | None = None

    # ----------------------------------------------------------------- public
    def calc(self, model: AtomModel, hkl: np.ndarray) -> np.ndarray:
        """Complex F (table units, e.g. electrons) for each Miller index."""
        hkl = symmetry.as_hkl(hkl)
        geo = self._geometry_for(model, hkl)
        with density.numba_threads(self._threads(model, geo)):
            return self._calc(model, geo)

    def _calc(self, model: AtomModel, geo: _Geometry) -> np.ndarray:
        terms = self._terms(model, geo)
        if geo.slab_plan is False:  # chosen once per geometry; any plan is race-free for any atoms
            geo.slab_plan = density.plan_slabs(terms.centres, terms.half, geo.shape, self._threads(model, geo))
        order, slabs = density.slab_groups(geo.slab_plan, terms.centres, terms.half, geo.shape)
        density.spread(geo.plan.real_in, terms.centres, model.occ.astype(np.float64, copy=False),
                       terms.amp, terms.logr, terms.shift, terms.pq, terms.half, order, slabs)
        x = geo.plan.forward()
        return _pick(x.reshape(-1), geo.pick_idx, geo.pick_conj, geo.coef, geo.sharpen(terms.b_add))

    def gradient(self, model: AtomModel, hkl: np.ndarray, dT_dF: np.ndarray) -> AtomGradient:
        """dT/d(xyz Å, b_iso Å², occ, u_aniso Å²) for dT/dF = dT/dA + i dT/dB."""
        hkl = symmetry.as_hkl(hkl)
        dt_df = np.ascontiguousarray(dT_dF, dtype=np.complex128)
        if dt_df.shape != (len(hkl),):
            raise InputError(f"dT_dF must have shape ({len(hkl)},), got {dt_df.shape}")
        geo = self._geometry_for(model, hkl)
        with density.numba_threads(self._threads(model, geo)):
            return self._gradient(model, geo, dt_df)

    def _gradient(self, model: AtomModel, geo: _Geometry, dt_df: np.ndarray) -> AtomGradient:
        terms = self._terms(model, geo)
        plan = geo.plan
        _scatter(plan.half_in.reshape(-1), geo.idx_pos, geo.idx_neg, geo.coef,
                 geo.sharpen(terms.b_add), dt_df)
        d_grid = plan.backward()
        d_occ, d_xyz, d_u = density.gather(d_grid, terms.centres, model.occ.astype(np.float64, copy=False),
                                           terms.amp, terms.logr, terms.shift,
                                           terms.pq, terms.wq, terms.half, geo.m)
        return _atom_gradient(model, d_occ, d_xyz, d_u)

    # ----------------------------------------------------------------- internals
    def _geometry_for(self, model: AtomModel, hkl: np.ndarray) -> _Geometry:
        if self.table is None:
            raise InputError("fcalc 'fft' has no scattering table (call use_table or setup first)")
        key = (*symmetry.geometry_key(hkl, model.cell, model.spacegroup),
               self.options.rate, self.options.threads)
        if key != self._geometry_key:
            self._geometry = _Geometry(hkl, model, self.options.rate, self.options.threads)
            self._geometry_key = key
        return self._geometry

    @staticmethod
    def _threads(model: AtomModel, geo: _Geometry) -> int:
        return geo.threads if model.n_atoms >= PARALLEL_MIN_ATOMS else 1

    def _b_add(self, model: AtomModel, geo: _Geometry) -> float:
        if self.options.b_add is not None:
            return float(self.options.b_add)
        b_atoms = density.sharpest_b(model.b_iso, model.u_aniso, model.has_aniso)
        short = geo.b_needed(self.options.alias_error) - float(np.percentile(b_atoms, B_PERCENTILE))
        floor = MIN_TOTAL_B - float(b_atoms.min())  # keeps every U + B_add/8π² positive definite
        return max(0.0, math.ceil(max(short, floor) / B_ADD_STEP) * B_ADD_STEP)

    def _terms(self, model: AtomModel, geo: _Geometry) -> _Terms:
        """The atoms' Gaussian terms on ``geo``'s grid, reused while the atoms are unchanged
        (a gradient follows the F_calc of the same model)."""
        arrays = (model.xyz, model.b_iso, model.occ, model.u_aniso, model.has_aniso,
                  model.element, model.charge)
        last = self._last_terms
        if (last is not None and last[0] is geo and last[1] is self.table
                and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(last[2], arrays))):
            return last[3]
        terms = self._compute_terms(model, geo)
        self._last_terms = (geo, self.table, tuple(np.array(a, copy=True) for a in arrays), terms)
        return terms

    def _compute_terms(self, model: AtomModel, geo: _Geometry) -> _Terms:
        coef = self._coefficients.update(self.table, model.element, model.charge)
        b_add = self._b_add(model, geo)
        u = density.total_u(model.b_iso, model.u_aniso, model.has_aniso, b_add)
        cut = self.options.cutoff
        amp, logr, shift, pq, wq, half = density.gaussian_terms(
            u, coef.a, coef.b, geo.m, geo.m_inv, cut)
        if not np.all(np.isfinite(amp)):
            raise InputError("non-positive-definite displacement (B or U) in the model")
        centres = density.grid_centres(geo.frac, model.xyz, geo.shape)
        return _Terms(centres, amp, logr, shift, pq, wq, half, b_add)


def _atom_gradient(model: AtomModel, d_occ: np.ndarray, d_xyz: np.ndarray, d_u: np.ndarray) -> AtomGradient:
    """Split ∂/∂U matrix elements into b_iso (isotropic atoms) and u_aniso parameters."""
    aniso = np.asarray(model.has_aniso, dtype=bool)
    d_b = (d_u[:, 0] + d_u[:, 1] + d_u[:, 2]) / density.EIGHT_PI2
    d_b[aniso] = 0.0
    d_uparam = d_u.copy()
    d_uparam[:, 3:] *= 2.0
    d_uparam[~aniso] = 0.0
    return AtomGradient(model.n_atoms, xyz=d_xyz, b_iso=d_b, u_aniso=d_uparam, occ=d_occ)
