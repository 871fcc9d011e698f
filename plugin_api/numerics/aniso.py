"""Overall anisotropic scale: crystal-system constraints and least-squares fit.

Form used throughout (units stated per symbol)::

    k_aniso(h) = exp(-hᵀ β h),   β = 2π² F U_cart Fᵀ

where h is the Miller index (column), β the dimensionless symmetric tensor in
the reciprocal (fractional) basis, F the orthogonal→fractional matrix of the
cell (``cell.frac.mat``) and U_cart (Å²) the same tensor in gemmi's orthogonal
frame, so that hᵀβh = 2π² sᵀ U_cart s with s = Fᵀh (Å⁻¹).  An isotropic U_cart
= B/(8π²)·I gives exp(-B s²/4).

Symmetry: |F(h)| = |F(Rᵀh)| for every rotation R of the space group (R acts on
fractional coordinates, x' = R x + t), so the scale must obey
(Rᵀh)ᵀ β (Rᵀh) = hᵀ β h, i.e. R β Rᵀ = β for all R.  The admissible tensors form
a linear subspace; :func:`constraint_basis` finds it from the group's own
integer rotation matrices (so it covers triclinic, monoclinic, orthorhombic,
tetragonal, trigonal/hexagonal and cubic groups with one code path) and
returns it in reduced row-echelon form with exact rational entries, so a
tensor built from any parameters obeys the constraints exactly (e.g. β11 = β22
bit for bit in P4₃).  Same idea as Grosse-Kunstleve & Adams (2002) J. Appl.
Cryst. 35, 477 "On symmetries of atomic displacement parameters".

Six-vector order everywhere: (11, 22, 33, 12, 13, 23).

Also here, shared by the F_model scalers: the work/free selection
(:func:`scaling_sets`) and the figures they report (:func:`fmodel_figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import gemmi
import numpy as np

from ..errors import InputError
from ..model import ReflectionData
from .reflections import r_factors

_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
TWO_PI2 = 2.0 * np.pi ** 2


def vec_to_sym(v: np.ndarray) -> np.ndarray:
    """Symmetric 3×3 matrix from a six-vector (11, 22, 33, 12, 13, 23)."""
    m = np.empty((3, 3))
    for k, (i, j) in enumerate(_PAIRS):
        m[i, j] = m[j, i] = v[k]
    return m


def sym_to_vec(m: np.ndarray) -> np.ndarray:
    """Six-vector (11, 22, 33, 12, 13, 23) of a symmetric 3×3 matrix."""
    return np.array([m[i, j] for i, j in _PAIRS])


def point_group_rotations(spacegroup: gemmi.SpaceGroup) -> list[np.ndarray]:
    """Distinct integer rotation matrices (fractional basis) of the group."""
    seen: dict[bytes, np.ndarray] = {}
    for op in spacegroup.operations():
        rot = np.array(op.rot, dtype=np.int64) // gemmi.Op.DEN
        seen.setdefault(rot.tobytes(), rot)
    return list(seen.values())


def _rational(x: float, max_den: int = 12) -> float:
    """Snap ``x`` to the nearest fraction with denominator ≤ max_den."""
    q = Fraction(x).limit_denominator(max_den)
    if abs(float(q) - x) > 1e-8:
        raise ArithmeticError(f"constraint coefficient {x} is not a small rational")
    return float(q)


def constraint_basis(spacegroup: gemmi.SpaceGroup) -> np.ndarray:
    """Basis (k, 6) of six-vectors β with R β Rᵀ = β for every rotation R.

    Rows are in reduced row-echelon form with rational entries (k = 6 for
    triclinic, 4 monoclinic, 3 orthorhombic, 2 tetragonal/trigonal/hexagonal,
    1 cubic).  β = Σ_j p_j · basis[j]; p_j is the β component at the pivot of
    row j.
    """
    rows = []
    for rot in point_group_rotations(spacegroup):
        action = np.empty((6, 6))
        for k in range(6):
            unit = np.zeros(6)
            unit[k] = 1.0
            action[:, k] = sym_to_vec(rot @ vec_to_sym(unit) @ rot.T)
        rows.append(action - np.eye(6))
    system = np.vstack(rows)
    _, sv, vt = np.linalg.svd(system)
    rank = int(np.sum(sv > 1e-9 * max(sv.max(), 1.0)))
    null = vt[rank:]  # (k, 6) orthonormal rows spanning the invariant tensors
    return _rref_rational(null)


def _rref_rational(rows: np.ndarray) -> np.ndarray:
    """Reduced row-echelon form of ``rows`` with entries snapped to rationals."""
    m = rows.copy()
    n_rows, n_cols = m.shape
    pivot_row = 0
    for col in range(n_cols):
        if pivot_row == n_rows:
            break
        best = pivot_row + int(np.argmax(np.abs(m[pivot_row:, col])))
        if abs(m[best, col]) < 1e-9:
            continue
        m[[pivot_row, best]] = m[[best, pivot_row]]
        m[pivot_row] /= m[pivot_row, col]
        for r in range(n_rows):
            if r != pivot_row:
                m[r] -= m[r, col] * m[pivot_row]
        pivot_row += 1
    return np.vectorize(_rational)(m)


@dataclass
class AnisoScale:
    """k(h) = k_overall · exp(-hᵀβh) with β = Σ p_j basis_j (see module doc)."""

    k_overall: float
    params: np.ndarray
    basis: np.ndarray

    @property
    def beta(self) -> np.ndarray:
        """β as a six-vector (dimensionless, reciprocal basis)."""
        return self.params @ self.basis

    def u_cart(self, cell: gemmi.UnitCell) -> np.ndarray:
        """The tensor as U_cart (Å², orthogonal frame), six-vector."""
        return beta_to_u_cart(self.beta, cell)

    def values(self, hkl: np.ndarray) -> np.ndarray:
        """k for each Miller index."""
        return self.k_overall * np.exp(-np.einsum("mk,k->m", quadratic_terms(hkl, self.basis),
                                                  self.params))


def quadratic_terms(hkl: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(M, k) matrix Q with hᵀβh = Q @ p for β = Σ p_j basis_j."""
    h = np.asarray(hkl, dtype=np.float64)
    mono = np.stack([h[:, 0] ** 2, h[:, 1] ** 2, h[:, 2] ** 2,
                     2 * h[:, 0] * h[:, 1], 2 * h[:, 0] * h[:, 2], 2 * h[:, 1] * h[:, 2]], axis=1)
    return np.einsum("mi,ki->mk", mono, basis)


def _lstsq(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares solution by normal equations (few columns, many rows).

    einsum keeps the long reductions out of threaded BLAS, which stalls on a
    busy two-core machine.
    """
    normal = np.einsum("mi,mj->ij", design, design)
    return np.linalg.solve(normal, np.einsum("mi,m->i", design, target))


def beta_to_u_cart(beta: np.ndarray, cell: gemmi.UnitCell) -> np.ndarray:
    """U_cart (Å²) = O β Oᵀ / (2π²), O = orthogonalisation matrix; six-vectors."""
    orth = np.array(cell.orth.mat.tolist())
    return sym_to_vec(orth @ vec_to_sym(beta) @ orth.T) / TWO_PI2


def u_cart_to_beta(u_cart: np.ndarray, cell: gemmi.UnitCell) -> np.ndarray:
    """β = 2π² F U_cart Fᵀ, F = fractionalisation matrix; six-vectors."""
    frac = np.array(cell.frac.mat.tolist())
    return TWO_PI2 * sym_to_vec(frac @ vec_to_sym(u_cart) @ frac.T)


def fit_log_linear(f_obs: np.ndarray, f_base: np.ndarray, hkl: np.ndarray,
                   basis: np.ndarray) -> AnisoScale:
    """Linear LSQ of ln|Fo| − ln|F_base| = ln k − hᵀβh (starting point).

    Only reflections with |Fo| > 0 and |F_base| > 0 enter; each is weighted
    by |F_base|² (≈ the inverse variance of ln|F| for a constant relative
    error), which keeps weak reflections from dominating.
    """
    f_obs, f_base = np.asarray(f_obs, dtype=np.float64), np.asarray(f_base, dtype=np.float64)
    ok = (f_obs > 0) & (f_base > 0)
    q = quadratic_terms(hkl[ok], basis)
    design = np.hstack([np.ones((q.shape[0], 1)), -q])
    target = np.log(f_obs[ok]) - np.log(f_base[ok])
    w = f_base[ok] / np.mean(f_base[ok])
    sol = _lstsq(design * w[:, None], target * w)
    return AnisoScale(float(np.exp(sol[0])), sol[1:], basis)


def fit_amplitudes(f_obs: np.ndarray, f_base: np.ndarray, hkl: np.ndarray,
                   basis: np.ndarray, start: AnisoScale | None = None,
                   max_iter: int = 50, tol: float = 1e-10) -> AnisoScale:
    """Least squares Σ(|Fo| − k·exp(−hᵀβh)·|F_base|)² by Levenberg–Marquardt.

    Parameters are (ln k, p); the Jacobian is analytic.  Starts from
    :func:`fit_log_linear` unless ``start`` is given.  ``f_base`` = |F_calc +
    F_part| (or any positive model amplitude).
    """
    f_obs, f_base = np.asarray(f_obs, dtype=np.float64), np.asarray(f_base, dtype=np.float64)
    cur = start if start is not None else fit_log_linear(f_obs, f_base, hkl, basis)
    q = quadratic_terms(hkl, basis)
    x = np.concatenate([[np.log(cur.k_overall)], cur.params])

    def residual(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fm = np.exp(x[0] - np.einsum("mk,k->m", q, x[1:])) * f_base
        return f_obs - fm, fm

    r, fm = residual(x)
    cost = float(np.einsum("m,m->", r, r))
    lam = 1e-3
    for _ in range(max_iter):
        jac = np.hstack([-fm[:, None], fm[:, None] * q])  # ∂r/∂x
        jtj = np.einsum("mi,mj->ij", jac, jac)
        grad = np.einsum("mi,m->i", jac, r)
        improved = False
        while lam < 1e12:
            step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-300), -grad)
            r_new, fm_new = residual(x + step)
            cost_new = float(np.einsum("m,m->", r_new, r_new))
            if cost_new < cost:
                x, r, fm = x + step, r_new, fm_new
                converged = cost - cost_new <= tol * cost
                cost = cost_new
                lam = max(lam / 10, 1e-12)
                improved = True
                break
            lam *= 10
        if not improved or converged:
            break
    return AnisoScale(float(np.exp(x[0])), x[1:], basis)


def decompose_scale(k_total: np.ndarray, hkl: np.ndarray, basis: np.ndarray) -> AnisoScale:
    """Best (k_overall, β) with ln k_total ≈ ln k_overall − hᵀβh (unweighted LSQ).

    Exact when ``k_total`` was built in this form (as both scalers do), so a
    scaler can report or warm-start from the kernel's stored per-reflection
    scales.  Non-positive entries are skipped.
    """
    ok = np.isfinite(k_total) & (k_total > 0)
    q = quadratic_terms(hkl[ok], basis)
    design = np.hstack([np.ones((q.shape[0], 1)), -q])
    sol = _lstsq(design, np.log(k_total[ok]))
    return AnisoScale(float(np.exp(sol[0])), sol[1:], basis)


def scale_figures(scale: AnisoScale, cell: gemmi.UnitCell) -> dict[str, float]:
    """k_overall, U_cart components u11..u23 (Å²) and B_eq = 8π²·tr(U)/3 (Å²)."""
    u = scale.u_cart(cell)
    out = {"k_overall": float(scale.k_overall)}
    out.update({f"u{i + 1}{j + 1}": float(v) for (i, j), v in zip(_PAIRS, u)})
    out["b_eq"] = float(8 * np.pi ** 2 * u[:3].mean())
    return out


def fmodel_figures(data, selection: np.ndarray, f_calc: np.ndarray, k_total: np.ndarray,
                   f_part: np.ndarray) -> dict[str, float]:
    """Figures a scaler reports: r_work, r_free of F_model = k_total·(F_calc + F_part)
    over ``selection`` of ``data`` (a ReflectionData; no extra scale applied),
    plus k_overall, u11..u23 (Å²) and b_eq decomposed from k_total."""
    f_model = np.abs(k_total * (f_calc + f_part))
    r = r_factors(data.f_obs[selection], f_model[selection], data.free[selection], scale=False)
    basis = constraint_basis(data.spacegroup)
    figs = scale_figures(decompose_scale(k_total, data.hkl, basis), data.cell)
    return figs | {"r_work": r.r_work, "r_free": r.r_free}


def scaling_sets(context, who: str) -> tuple[ReflectionData, np.ndarray, np.ndarray]:
    """(data, work mask, free mask) over the reflections of ``context.data``.

    Work = the rows of ``context.working_reflections()`` (through its
    ``index``) that have an observed |F|; free = test-set rows with an
    observed |F| inside the same resolution range.
    """
    data = context.data
    if not isinstance(data, ReflectionData):
        raise InputError(f"scaler '{who}' needs reflection data, got {type(data).__name__}")
    if data.f_obs is None:
        raise InputError(f"scaler '{who}' needs amplitudes F_obs; the data have none "
                         "(convert intensities first, e.g. with the french-wilson preparer)",
                         data.source or None)
    observed = np.isfinite(data.f_obs)
    working = context.working_reflections()
    work = np.zeros(len(data), dtype=bool)
    work[working.index] = True
    work &= observed
    if not work.any():
        raise InputError(f"scaler '{who}': no work-set reflection with an observed F",
                         data.source or None)
    d_max, d_min = float(data.d[work].max()), float(data.d[work].min())
    free = observed & data.free & (data.d <= d_max) & (data.d >= d_min)
    return data, work, free


class FcalcCache:
    """F_calc of ``context.model`` at every reflection of ``context.data``.

    Recomputed only when the model object, its ``version`` (bumped by
    ``mark_changed``), the reflections or the engine changed, so alternating
    scalers between two minimisations do not repeat the structure factors.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._f: np.ndarray | None = None

    def get(self, context) -> np.ndarray:
        """Complex F_calc (M,) in the order of ``context.data.hkl``."""
        model, hkl, engine = context.model, context.data.hkl, context.fcalc
        key = (id(model), model.version, id(hkl), len(hkl), id(engine))
        if key != self._key or self._f is None:
            self._f = engine.calc(model, hkl)
            self._key = key
        return self._f
