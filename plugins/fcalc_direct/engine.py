"""Structure factors by exact summation over atoms and symmetry operations.

F(h) = Σ_s exp(2πi h·t_s) Σ_j occ_j f_j(s) T_j(k_s) exp(2πi k_s·x_j),
k_s = R_sᵀ h, with T_j = exp(-B_j s²/4) (isotropic) or
exp(-2π² s_kᵀ U_j s_k), s_k the Cartesian reciprocal vector of k_s
(Grosse-Kunstleve & Adams 2002, J. Appl. Cryst. 35, 477 for the conventions).
Derivatives are analytic:
∂/∂x = 2πi s_k, ∂/∂B = −s²/4, ∂/∂U_ab = −2π² s_a s_b (×2 for a ≠ b), ∂/∂occ = 1/occ
times each term.  O(N·M·|G|): the accuracy reference, not for production.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from refinekit.plugin_api import AtomGradient, AtomModel, FcalcEngine, InputError
from refinekit.plugin_api.numerics import density, symmetry

TWO_PI = 2.0 * math.pi
TWO_PI2 = 2.0 * math.pi ** 2
PARALLEL_MIN_WORK = 10_000_000  # atom × reflection × operation terms below which one thread is used


@numba.njit(cache=True, fastmath=False)
def _phase_tables(mates, hmin, tables):
    """tables[s, a, i] = exp(2πi (hmin_a + i) y_sa) for the mates y (S, 3) of one atom."""
    ns, _, length = tables.shape
    for s in range(ns):
        for a in range(3):
            for i in range(length):
                arg = TWO_PI * (hmin[a] + i) * mates[s, a]
                tables[s, a, i] = complex(math.cos(arg), math.sin(arg))


@numba.njit(cache=True, fastmath=False, inline="always")
def _aniso_exponent(v, h0, h1, h2):
    """hᵀ V h for V = (00 11 22 01 02 12)."""
    return (v[0] * h0 * h0 + v[1] * h1 * h1 + v[2] * h2 * h2
            + 2.0 * (v[3] * h0 * h1 + v[4] * h0 * h2 + v[5] * h1 * h2))


@numba.njit(cache=True, fastmath=False)
def _add_cartesian_second_moment(a, hm, scale, out):
    """out += scale · (A H Aᵀ) as U-parameter derivatives (off-diagonals doubled)."""
    h = np.empty((3, 3))
    h[0, 0], h[1, 1], h[2, 2] = hm[0], hm[1], hm[2]
    h[0, 1] = h[1, 0] = hm[3]
    h[0, 2] = h[2, 0] = hm[4]
    h[1, 2] = h[2, 1] = hm[5]
    for slot in range(6):
        r = (0, 1, 2, 0, 0, 1)[slot]
        q = (0, 1, 2, 1, 2, 2)[slot]
        acc = 0.0
        for p in range(3):
            acc += a[r, p] * (h[p, 0] * a[q, 0] + h[p, 1] * a[q, 1] + h[p, 2] * a[q, 2])
        out[slot] += scale * (acc if slot < 3 else 2.0 * acc)


@numba.njit(cache=True, parallel=True, fastmath=False)
def _calc(hkl, idx, hmin, length, s2, ff, kind, mates, occ, b_iso, v_aniso, aniso, n_chunks):
    """F (M,) = Σ_j occ f DW Σ_s exp(2πi h·y_js), separable phase tables per mate."""
    m = hkl.shape[0]
    n, ns = mates.shape[0], mates.shape[1]
    partial = np.zeros((n_chunks, m), dtype=np.complex128)
    for ch in prange(n_chunks):
        tab = np.empty((ns, 3, length), dtype=np.complex128)
        out = partial[ch]
        for j in range(ch * n // n_chunks, (ch + 1) * n // n_chunks):
            _phase_tables(mates[j], hmin, tab)
            for h in range(m):
                i0, i1, i2 = idx[h, 0], idx[h, 1], idx[h, 2]
                acc = 0j
                if aniso[j]:
                    h0, h1, h2 = hkl[h, 0], hkl[h, 1], hkl[h, 2]
                    for s in range(ns):
                        dw = math.exp(-TWO_PI2 * _aniso_exponent(v_aniso[j, s], h0, h1, h2))
                        acc += dw * (tab[s, 0, i0] * tab[s, 1, i1] * tab[s, 2, i2])
                    out[h] += occ[j] * ff[kind[j], h] * acc
                else:
                    for s in range(ns):
                        acc += tab[s, 0, i0] * tab[s, 1, i1] * tab[s, 2, i2]
                    out[h] += occ[j] * ff[kind[j], h] * math.exp(-b_iso[j] * s2[h] / 4.0) * acc
    result = np.zeros(m, dtype=np.complex128)
    for ch in range(n_chunks):
        result += partial[ch]
    return result


@numba.njit(cache=True, parallel=True, fastmath=False)
def _gradient(hkl, idx, hmin, length, s2, ff, kind, mates, occ, b_iso, v_aniso, aniso, a_mat, dt_df):
    """Per-atom derivatives of Σ_h Re(conj(g_h) F_h): (d_occ, d_xyz, d_b, d_u).

    Sums are kept in index space per operation (G_s = Σ_h c h, H_s = Σ_h c hhᵀ)
    and mapped to Cartesian with A_s = Fᵀ R_sᵀ (s_cart = A_s h) at the end.
    """
    m = hkl.shape[0]
    n, ns = mates.shape[0], mates.shape[1]
    d_occ = np.zeros(n)
    d_xyz = np.zeros((n, 3))
    d_b = np.zeros(n)
    d_u = np.zeros((n, 6))
    for j in prange(n):
        tab = np.empty((ns, 3, length), dtype=np.complex128)
        _phase_tables(mates[j], hmin, tab)
        gs = np.zeros((ns, 3))
        hs = np.zeros((ns, 6))
        go = 0.0
        gb = 0.0
        for h in range(m):
            i0, i1, i2 = idx[h, 0], idx[h, 1], idx[h, 2]
            h0, h1, h2 = hkl[h, 0], hkl[h, 1], hkl[h, 2]
            cg = dt_df[h].conjugate() * ff[kind[j], h]
            if not aniso[j]:
                cg = cg * math.exp(-b_iso[j] * s2[h] / 4.0)
            re_sum = 0.0
            for s in range(ns):
                z = cg * (tab[s, 0, i0] * tab[s, 1, i1] * tab[s, 2, i2])
                if aniso[j]:
                    z = z * math.exp(-TWO_PI2 * _aniso_exponent(v_aniso[j, s], h0, h1, h2))
                    c = -TWO_PI2 * z.real
                    hs[s, 0] += c * h0 * h0
                    hs[s, 1] += c * h1 * h1
                    hs[s, 2] += c * h2 * h2
                    hs[s, 3] += c * h0 * h1
                    hs[s, 4] += c * h0 * h2
                    hs[s, 5] += c * h1 * h2
                re_sum += z.real
                im = -TWO_PI * z.imag  # Re(z · 2πi)
                gs[s, 0] += im * h0
                gs[s, 1] += im * h1
                gs[s, 2] += im * h2
            go += re_sum
            gb -= re_sum * s2[h] / 4.0
        d_occ[j] = go
        for s in range(ns):
            a = a_mat[s]
            for r in range(3):
                d_xyz[j, r] += occ[j] * (a[r, 0] * gs[s, 0] + a[r, 1] * gs[s, 1] + a[r, 2] * gs[s, 2])
        if aniso[j]:
            for s in range(ns):
                _add_cartesian_second_moment(a_mat[s], hs[s], occ[j], d_u[j])
        else:
            d_b[j] = occ[j] * gb
    return d_occ, d_xyz, d_b, d_u


class _Geometry:
    """Index tables and symmetry matrices for one (hkl, cell, space group)."""

    def __init__(self, hkl: np.ndarray, model: AtomModel):
        self.ops = symmetry.SymOps.from_spacegroup(model.spacegroup)
        self.hkl = hkl
        self.hmin = hkl.min(axis=0) if len(hkl) else np.zeros(3, dtype=np.int64)
        self.idx = np.ascontiguousarray(hkl - self.hmin)
        self.length = int(self.idx.max()) + 1 if len(hkl) else 1
        self.s2 = symmetry.reciprocal_s2(model.cell, hkl)
        self.frac = np.array(model.cell.frac.mat.tolist())
        # s_cart = A_s h with A_s = Fᵀ R_sᵀ
        self.a_mat = np.ascontiguousarray(np.einsum("ba,sdb->sad", self.frac, self.ops.rot))

    def mates(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional coordinates R_s u + t_s of every atom's symmetry mates (N, S, 3)."""
        u = xyz @ self.frac.T
        return np.ascontiguousarray(np.einsum("sab,nb->nsa", self.ops.rot, u) + self.ops.tran[None])

    def aniso_forms(self, u_aniso: np.ndarray, aniso: np.ndarray) -> np.ndarray:
        """V_js = A_sᵀ U_j A_s (N, S, 6) so that s_cartᵀ U s_cart = hᵀ V h (zeros if isotropic)."""
        n, ns = len(u_aniso), len(self.ops)
        out = np.zeros((n, ns, 6))
        if aniso.any():
            u = u_aniso[aniso]
            mat = np.empty((len(u), 3, 3))
            mat[:, 0, 0], mat[:, 1, 1], mat[:, 2, 2] = u[:, 0], u[:, 1], u[:, 2]
            mat[:, 0, 1] = mat[:, 1, 0] = u[:, 3]
            mat[:, 0, 2] = mat[:, 2, 0] = u[:, 4]
            mat[:, 1, 2] = mat[:, 2, 1] = u[:, 5]
            v = np.einsum("sba,nbc,scd->nsad", self.a_mat, mat, self.a_mat)
            rows, cols = [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]
            out[aniso] = v[:, :, rows, cols]
        return out


class _FormFactors:
    """f(s) per distinct (a, b, c) row at every reflection; recomputed when elements change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self.kind = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, 0))

    def update(self, table, model: AtomModel, generation: int, s2: np.ndarray) -> "_FormFactors":
        key = (id(table), generation, tuple(model.element), tuple(model.charge))
        if key != self._key:
            coef = table.coefficients(model.element, model.charge)
            rows = np.concatenate([coef.a, coef.b, coef.c[:, None]], axis=1)
            unique, kind = np.unique(rows, axis=0, return_inverse=True)
            na = coef.a.shape[1]
            expo = np.exp(-unique[:, na:2 * na, None] * s2[None, None, :] / 4.0)
            self.values = np.einsum("tk,tkm->tm", unique[:, :na], expo) + unique[:, -1:]
            self.kind = kind.reshape(-1).astype(np.int64)
            self._key = key
        return self


@dataclass
class DirectOptions:
    """threads: threads for the summation (one is used for small problems)."""

    threads: int = 2

    def validate(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (got {self.threads})")


class DirectFcalc(FcalcEngine):
    """Exact structure factors and gradients by summation over atoms and symmetry.

    The reference engine: no approximation beyond the table's form factors.
    """

    name = "direct"
    Options = DirectOptions

    def __init__(self, options=None):
        super().__init__(options)
        self._geo: _Geometry | None = None
        self._geo_key: tuple | None = None
        self._geo_generation = 0
        self._ff = _FormFactors()

    def calc(self, model: AtomModel, hkl: np.ndarray) -> np.ndarray:
        """Complex F (table units) for each Miller index."""
        hkl = symmetry.as_hkl(hkl)
        geo, ff, args = self._prepare(model, hkl)
        with density.numba_threads(self._threads(model, hkl)):
            n_chunks = numba.get_num_threads()
            return _calc(hkl, geo.idx, geo.hmin, geo.length, geo.s2, ff.values, ff.kind, *args, n_chunks)

    def gradient(self, model: AtomModel, hkl: np.ndarray, dT_dF: np.ndarray) -> AtomGradient:
        """dT/d(xyz Å, b_iso Å², occ, u_aniso Å²) for dT/dF = dT/dA + i dT/dB."""
        hkl = symmetry.as_hkl(hkl)
        dt_df = np.ascontiguousarray(dT_dF, dtype=np.complex128)
        if dt_df.shape != (len(hkl),):
            raise InputError(f"dT_dF must have shape ({len(hkl)},), got {dt_df.shape}")
        geo, ff, args = self._prepare(model, hkl)
        with density.numba_threads(self._threads(model, hkl)):
            d_occ, d_xyz, d_b, d_u = _gradient(hkl, geo.idx, geo.hmin, geo.length, geo.s2, ff.values,
                                               ff.kind, *args, geo.a_mat, dt_df)
        aniso = args[-1]
        d_b[aniso] = 0.0
        return AtomGradient(model.n_atoms, xyz=d_xyz, b_iso=d_b, u_aniso=d_u, occ=d_occ)

    def _threads(self, model: AtomModel, hkl: np.ndarray) -> int:
        """All threads for big sums; one for small ones (synchronisation would dominate)."""
        work = model.n_atoms * len(hkl) * len(self._geo.ops) if self._geo else 0
        return self.options.threads if work >= PARALLEL_MIN_WORK else 1

    def _prepare(self, model: AtomModel, hkl: np.ndarray):
        if self.table is None:
            raise InputError("fcalc 'direct' has no scattering table (call use_table or setup first)")
        key = symmetry.geometry_key(hkl, model.cell, model.spacegroup)
        if key != self._geo_key:
            self._geo = _Geometry(hkl, model)
            self._geo_key = key
            self._geo_generation += 1
        geo = self._geo
        ff = self._ff.update(self.table, model, self._geo_generation, geo.s2)
        aniso = np.asarray(model.has_aniso, dtype=np.bool_)
        args = (geo.mates(model.xyz), model.occ.astype(np.float64), model.b_iso.astype(np.float64),
                geo.aniso_forms(model.u_aniso, aniso), aniso)
        return geo, ff, args
