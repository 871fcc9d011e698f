"""Gaussian atoms on periodic grids: spreading densities and gathering gradients.

An atom j with form factor f(s) = Σ_k a_k exp(-b_k s²/4) (a constant term is
a Gaussian with b = 0) and displacement U_j (Å², orthogonal frame; U = B/8π² I
when isotropic) has the density

    ρ_j(r) = occ_j Σ_k a_k (2π)^{-3/2} det(U_k)^{-1/2} exp(-½ dᵀ U_k⁻¹ d),
    U_k = U_j + (b_k + B_add)/(8π²) I,   d = r - x_j,

i.e. each term is blurred by an extra B_add (Ten Eyck 1977, Acta Cryst A33,
486; Afonine & Urzhumtsev 2004, Acta Cryst A60, 19) so a coarse grid does
not alias; the caller multiplies F by exp(+B_add s²/4) afterwards.

Each term is cut where it falls to a fraction ``cut`` of its peak and shifted
down by that much: ρ_jk = occ·sign(a_k)·|A_k|·max(0, e^{-Q} − cut) (the cut
at L = ln(1/cut) in units of each term's own width loses the same small
fraction of every term, ~3·10⁻³ of its mass at cut = 1e-4).  The cut density is continuous in every parameter, so the gathered derivatives are
the exact derivatives of the spread grid (no boundary terms).

Grids are indexed by integer (i, j, k) ↔ fractional (i/n₀, j/n₁, k/n₂).
Offsets δ from an atom centre c = n∘(F x) are in grid-index units and
Cartesian d = M δ with M = O diag(1/n) (O orthogonalisation matrix, Å).
When every term's index-space form P = Mᵀ U_k⁻¹ M is diagonal (isotropic
atoms in orthogonal cells) the Gaussian is separable, e^{-Q} = e₀(δ₀)e₁(δ₁)e₂(δ₂):
each term gets three 1-D tables and every row of its cut ellipsoid is one
vectorised loop (one multiply-add per point; gathering allows re-association
there so its sums vectorise).  Otherwise, for δ along the fastest axis the
exponent is quadratic, so rows are filled with the recurrence
e_{t+1} = e_t r_t, r_{t+1} = r_t exp(-P₂₂) (two multiplications per grid
point, no exp).  Both give the same density to rounding.

Parallel spreading fills slabs of the grid two apart at a time (no races).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

EIGHT_PI2 = 8.0 * math.pi ** 2


@contextmanager
def numba_threads(n: int):
    """Run numba's parallel loops on ``n`` threads (capped), restoring the caller's setting."""
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


# --------------------------------------------------------------------------- geometry
def index_to_cartesian(orth: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """M = O diag(1/n): grid-index offsets → Cartesian Å (orth = O, 3×3)."""
    return np.asarray(orth, dtype=np.float64) / np.asarray(shape, dtype=np.float64)[None, :]


def grid_centres(frac_matrix: np.ndarray, xyz: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Atom centres in grid-index units, c = n∘(F x) (N, 3)."""
    return (np.asarray(xyz) @ np.asarray(frac_matrix).T) * np.asarray(shape, dtype=np.float64)[None, :]


def total_u(b_iso: np.ndarray, u_aniso: np.ndarray, has_aniso: np.ndarray, b_add: float) -> np.ndarray:
    """U (N, 6) Å² of each atom (U for anisotropic atoms, B/8π² I otherwise) plus B_add/8π² I."""
    u = np.zeros((len(b_iso), 6))
    u[:, :3] = (np.asarray(b_iso, dtype=np.float64) / EIGHT_PI2)[:, None]
    aniso = np.asarray(has_aniso, dtype=bool)
    u[aniso] = u_aniso[aniso]
    u[:, :3] += b_add / EIGHT_PI2
    return u


def sharpest_b(b_iso: np.ndarray, u_aniso: np.ndarray, has_aniso: np.ndarray) -> np.ndarray:
    """Per atom, the smallest isotropic-equivalent B (Å²) along any direction: B, or 8π²·λ_min(U)."""
    out = np.asarray(b_iso, dtype=np.float64).copy()
    if has_aniso.any():
        u = u_aniso[has_aniso]
        mats = np.empty((len(u), 3, 3))
        mats[:, 0, 0], mats[:, 1, 1], mats[:, 2, 2] = u[:, 0], u[:, 1], u[:, 2]
        mats[:, 0, 1] = mats[:, 1, 0] = u[:, 3]
        mats[:, 0, 2] = mats[:, 2, 0] = u[:, 4]
        mats[:, 1, 2] = mats[:, 2, 1] = u[:, 5]
        out[has_aniso] = EIGHT_PI2 * np.linalg.eigvalsh(mats)[:, 0]
    return out


# --------------------------------------------------------------------------- per-term setup
@numba.njit(cache=True, fastmath=False)
def _sym_inverse(u0, u1, u2, u3, u4, u5):
    """det and inverse (6 comps, order 00 11 22 01 02 12) of [[u0,u3,u4],[u3,u1,u5],[u4,u5,u2]]."""
    c00 = u1 * u2 - u5 * u5
    c01 = u4 * u5 - u3 * u2
    c02 = u3 * u5 - u1 * u4
    c11 = u0 * u2 - u4 * u4
    c12 = u3 * u4 - u0 * u5
    c22 = u0 * u1 - u3 * u3
    det = u0 * c00 + u3 * c01 + u4 * c02
    return det, c00 / det, c11 / det, c22 / det, c01 / det, c02 / det, c12 / det


@numba.njit(cache=True, fastmath=False)
def gaussian_terms(u_tot, a, b, m, m_inv, cut):
    """Per (atom, term) quantities for spreading and gathering.

    u_tot (N,6) Å², a/b (N,K) form-factor Gaussians, m/m_inv index↔Cartesian
    matrices.  Each term is cut where it falls to ``cut`` times its peak and
    shifted down by that much.  Returns amp (N,K) peak |A| with the sign of
    a (0 = skipped term), logr (N,K) = L = ln(1/cut),
    shift (N,K) = cut·|A|, P (N,K,6) index-space quadratic form Mᵀ U_k⁻¹ M,
    W (N,K,6) U_k⁻¹ (Å⁻²), half (N,K,3) half-widths (grid units) of the box
    around the cut ellipsoid.
    """
    n, nk = a.shape
    amp = np.zeros((n, nk))
    shift = np.zeros((n, nk))
    logr = np.zeros((n, nk))
    pq = np.zeros((n, nk, 6))
    wq = np.zeros((n, nk, 6))
    half = np.zeros((n, nk, 3))
    norm = (2.0 * math.pi) ** -1.5
    lr = math.log(1.0 / cut)
    w = np.empty((3, 3))
    u = np.empty((3, 3))
    tmp = np.empty((3, 3))
    rows = (0, 1, 2, 0, 0, 1)
    cols = (0, 1, 2, 1, 2, 2)
    for j in range(n):
        for k in range(nk):
            if a[j, k] == 0.0:
                continue
            extra = b[j, k] / EIGHT_PI2
            u0 = u_tot[j, 0] + extra
            u1 = u_tot[j, 1] + extra
            u2 = u_tot[j, 2] + extra
            u3 = u_tot[j, 3]
            u4 = u_tot[j, 4]
            u5 = u_tot[j, 5]
            det, w00, w11, w22, w01, w02, w12 = _sym_inverse(u0, u1, u2, u3, u4, u5)
            peak = abs(a[j, k]) * norm / math.sqrt(det)
            amp[j, k] = peak if a[j, k] > 0 else -peak
            shift[j, k] = cut * peak
            logr[j, k] = lr
            w[0, 0], w[1, 1], w[2, 2] = w00, w11, w22
            w[0, 1] = w[1, 0] = w01
            w[0, 2] = w[2, 0] = w02
            w[1, 2] = w[2, 1] = w12
            u[0, 0], u[1, 1], u[2, 2] = u0, u1, u2
            u[0, 1] = u[1, 0] = u3
            u[0, 2] = u[2, 0] = u4
            u[1, 2] = u[2, 1] = u5
            # P = Mᵀ W M
            for r in range(3):
                for c in range(3):
                    tmp[r, c] = w[r, 0] * m[0, c] + w[r, 1] * m[1, c] + w[r, 2] * m[2, c]
            for slot in range(6):
                r = rows[slot]
                c = cols[slot]
                pq[j, k, slot] = m[0, r] * tmp[0, c] + m[1, r] * tmp[1, c] + m[2, r] * tmp[2, c]
                wq[j, k, slot] = w[r, c]
            # box half-widths sqrt(2 L (P⁻¹)_ii), P⁻¹ = M⁻¹ U M⁻ᵀ
            for r in range(3):
                acc = 0.0
                for p in range(3):
                    acc += m_inv[r, p] * (u[p, 0] * m_inv[r, 0] + u[p, 1] * m_inv[r, 1] + u[p, 2] * m_inv[r, 2])
                half[j, k, r] = math.sqrt(2.0 * lr * acc)
    return amp, logr, shift, pq, wq, half


# --------------------------------------------------------------------------- spreading
@numba.njit(cache=True, fastmath=False, inline="always")
def _wrap(k, n):
    """k modulo n for k a few periods at most from [0, n) (cheaper than integer %)."""
    while k >= n:
        k -= n
    while k < 0:
        k += n
    return k


@numba.njit(cache=True, fastmath=False, inline="always")
def _row_range(c2, beta, gam, p22, inv_p22, lr):
    """k-range of one grid row inside the ellipsoid ½P₂₂t² + βt + γ < L (t = k − c₂)."""
    disc = beta * beta - 2.0 * p22 * (gam - lr)
    if disc <= 0.0:
        return 1, 0
    root = math.sqrt(disc)
    return int(math.ceil(c2 - (beta + root) * inv_p22)), int(math.floor(c2 + (root - beta) * inv_p22))


@numba.njit(cache=True, fastmath=False, inline="always")
def _spread_run(row, start, count, v, r, m22, off, step):
    """row[start + step·q] += v_q − off for q < count, v_{q+1} = v_q r_q, r_{q+1} = r_q m22 (wrapping)."""
    n2 = row.shape[0]
    kk = start
    if step > 0 and start + count <= n2:
        for q in range(count):
            row[start + q] += v - off
            v *= r
            r *= m22
        return
    if step < 0 and start - count >= -1:
        for q in range(count):
            row[start - q] += v - off
            v *= r
            r *= m22
        return
    for q in range(count):
        row[kk] += v - off
        v *= r
        r *= m22
        kk += step
        if kk == n2:
            kk = 0
        elif kk < 0:
            kk = n2 - 1


@numba.njit(cache=True, fastmath=False, inline="always")
def _spread_row(row, kstar, k_lo, k_hi, ks, v_seed, r_fwd, r_bwd, m22, off):
    """Add v − off over k_lo..k_hi, walking out from the seed column k* both ways."""
    n2 = row.shape[0]
    # forward part: k = max(k*, k_lo) .. k_hi
    v = v_seed
    r = r_fwd
    k0 = kstar
    while k0 < k_lo:  # seed left of the row: advance without writing
        v *= r
        r *= m22
        k0 += 1
    if k_hi >= k0:
        _spread_run(row, _wrap(ks + (k0 - kstar), n2), k_hi - k0 + 1, v, r, m22, off, 1)
    # backward part: k = min(k* − 1, k_hi) .. k_lo
    v = v_seed * r_bwd
    r = r_bwd * m22
    k0 = kstar - 1
    while k0 > k_hi:  # seed right of the row: step back without writing
        v *= r
        r *= m22
        k0 -= 1
    if k0 >= k_lo:
        _spread_run(row, _wrap(ks - (kstar - k0), n2), k0 - k_lo + 1, v, r, m22, off, -1)


@numba.njit(cache=True, fastmath=False, inline="always")
def _gather_run(row, start, count, t, v, r, m22, step):
    """Σ D v, Σ D, Σ D v t, Σ D v t² over row[start + step·q], q < count (t advances by step)."""
    n2 = row.shape[0]
    r0 = rd = r1 = r2 = 0.0
    dt = float(step)
    if (step > 0 and start + count <= n2) or (step < 0 and start - count >= -1):
        for q in range(count):
            dv = row[start + step * q]
            w = dv * v
            rd += dv
            r0 += w
            r1 += w * t
            r2 += w * t * t
            v *= r
            r *= m22
            t += dt
        return r0, rd, r1, r2
    kk = start
    for q in range(count):
        dv = row[kk]
        w = dv * v
        rd += dv
        r0 += w
        r1 += w * t
        r2 += w * t * t
        v *= r
        r *= m22
        t += dt
        kk += step
        if kk == n2:
            kk = 0
        elif kk < 0:
            kk = n2 - 1
    return r0, rd, r1, r2


@numba.njit(cache=True, fastmath=False, inline="always")
def _gather_row(row, kstar, k_lo, k_hi, ks, ts, v_seed, r_fwd, r_bwd, m22):
    """Moments of one row (see :func:`_gather_run`), walking out from the seed column k*."""
    n2 = row.shape[0]
    a0 = ad = a1 = a2 = 0.0
    v = v_seed
    r = r_fwd
    k0 = kstar
    while k0 < k_lo:
        v *= r
        r *= m22
        k0 += 1
    if k_hi >= k0:
        a0, ad, a1, a2 = _gather_run(row, _wrap(ks + (k0 - kstar), n2), k_hi - k0 + 1,
                                     ts + (k0 - kstar), v, r, m22, 1)
    v = v_seed * r_bwd
    r = r_bwd * m22
    k0 = kstar - 1
    while k0 > k_hi:
        v *= r
        r *= m22
        k0 -= 1
    if k0 >= k_lo:
        b0, bd, b1, b2 = _gather_run(row, _wrap(ks - (kstar - k0), n2), k0 - k_lo + 1,
                                     ts - (kstar - k0), v, r, m22, -1)
        a0 += b0
        ad += bd
        a1 += b1
        a2 += b2
    return a0, ad, a1, a2


@numba.njit(cache=True, fastmath=False)
def _visit_term(grid, c, peak, weight, lr, p, half, shift, gather, acc):
    """Spread one cut Gaussian term into ``grid`` or gather its moments against it.

    Spreading adds weight·(v − shift), v = peak e^{-Q}, at every point inside
    Q < L = ln(peak/shift).  Gathering adds to ``acc`` [Σ D v, Σ D, Σ D v δ (3),
    Σ D v δδᵀ (00 11 22 01 02 12)] with D = grid.  Values along a row come from
    the recurrence v_{t±1} = v_t r_t, r_{t±1} = r_t e^{-P₂₂}, seeded at a
    column k* per plane whose seeds follow the same recurrence across rows,
    so no exponential is evaluated per row or per point.
    """
    n0, n1, n2 = grid.shape
    c0, c1, c2 = c[0], c[1], c[2]
    p00, p11, p22, p01, p02, p12 = p[0], p[1], p[2], p[3], p[4], p[5]
    m22 = math.exp(-p22)
    inv_p22 = 1.0 / p22
    m11 = math.exp(-p11)
    m12 = math.exp(-p12)
    s0 = sd = s10 = s11 = s12 = 0.0
    s200 = s211 = s222 = s201 = s202 = s212 = 0.0
    j_lo = int(math.ceil(c1 - half[1]))
    j_hi = int(math.floor(c1 + half[1]))
    for i in range(int(math.ceil(c0 - half[0])), int(math.floor(c0 + half[0])) + 1):
        d0 = i - c0
        ii = _wrap(i, n0)
        plane = grid[ii]
        d1 = j_lo - c1
        # seed column k*: centre of the plane's rows at the plane centre (d1 = -P01 d0/P11 ≈ 0)
        kstar = int(math.floor(c2 - (p02 * d0) / p22 + 0.5))
        ts = kstar - c2
        q_seed = 0.5 * (p00 * d0 * d0 + p11 * d1 * d1 + p22 * ts * ts) + p01 * d0 * d1 + p02 * d0 * ts + p12 * d1 * ts
        v_seed = peak * math.exp(-q_seed)
        r_seed = math.exp(-(p11 * d1 + 0.5 * p11 + p01 * d0 + p12 * ts))
        beta = p02 * d0 + p12 * d1
        r_fwd = math.exp(-(p22 * ts + 0.5 * p22 + beta))
        r_bwd = math.exp(p22 * ts - 0.5 * p22 + beta)
        ks = _wrap(kstar, n2)
        for jx in range(j_lo, j_hi + 1):
            gam = 0.5 * (p00 * d0 * d0 + p11 * d1 * d1) + p01 * d0 * d1
            k_lo, k_hi = _row_range(c2, beta, gam, p22, inv_p22, lr)
            if k_hi >= k_lo:
                row = plane[_wrap(jx, n1)]
                if gather:
                    r0, rd, r1, r2 = _gather_row(row, kstar, k_lo, k_hi, ks, ts, v_seed, r_fwd, r_bwd, m22)
                    sd += rd
                    s0 += r0
                    s10 += r0 * d0
                    s11 += r0 * d1
                    s12 += r1
                    s200 += r0 * d0 * d0
                    s211 += r0 * d1 * d1
                    s222 += r2
                    s201 += r0 * d0 * d1
                    s202 += r1 * d0
                    s212 += r1 * d1
                else:
                    _spread_row(row, kstar, k_lo, k_hi, ks, weight * v_seed, r_fwd, r_bwd, m22,
                                weight * shift)
            # next row: seeds and ratios follow the recurrence in d1
            v_seed *= r_seed
            r_seed *= m11
            r_fwd *= m12
            r_bwd /= m12
            beta += p12
            d1 += 1.0
    if gather:
        acc[0] += s0
        acc[1] += sd
        acc[2] += s10
        acc[3] += s11
        acc[4] += s12
        acc[5] += s200
        acc[6] += s211
        acc[7] += s222
        acc[8] += s201
        acc[9] += s202
        acc[10] += s212


# --------------------------------------------------------------------------- separable atoms
@numba.njit(cache=True, fastmath=False)
def _gauss_table(out, t0, p, n):
    """out[u] = exp(−½p(t0 + u)²) for u < n, by ratio recurrences outward from the peak.

    Values only decrease away from the peak; those below 1e-250 are set to 0
    (no denormals in the inner loops).  3 exponentials per table.
    """
    us = min(max(int(math.floor(0.5 - t0)), 0), n - 1)
    t = t0 + us
    v = math.exp(-0.5 * p * t * t)
    out[us] = v
    m = math.exp(-p)
    for direction in (1, -1):
        w = v
        r = math.exp(-p * (direction * t + 0.5))  # v(t ± 1)/v(t)
        u = us + direction
        while 0 <= u < n:
            w *= r
            r *= m
            if w < 1e-250:
                w = 0.0
                r = 0.0
            out[u] = w
            u += direction


@numba.njit(cache=True, fastmath=False)
def _term_range(table, n, cut):
    """First and last index with table > cut (table unimodal), or (0, −1)."""
    lo = 0
    while lo < n and table[lo] <= cut:
        lo += 1
    hi = n - 1
    while hi >= lo and table[hi] <= cut:
        hi -= 1
    return lo, hi


@numba.njit(cache=True, fastmath=False, inline="always")
def _spread_segment(row, gz, col0, u0, u1, scale, off, weight):
    """row[col] += weight·max(0, scale·gz[u] − off), u0 ≤ u ≤ u1, col = col0 + u − u0 wrapping."""
    n2 = row.shape[0]
    u = u0
    col = col0
    while u <= u1:
        seg = min(u1 - u + 1, n2 - col)
        for q in range(seg):
            row[numba.uint64(col + q)] += weight * max(scale * gz[numba.uint64(u + q)] - off, 0.0)
        u += seg
        col = 0


@numba.njit(cache=True, fastmath=False, inline="always")
def _gather_segment(row, gz, t1, t2, col0, u0, u1, scale):
    """Σ D v, Σ D, Σ D v t, Σ D v t² over v = scale·gz[u], u0 ≤ u ≤ u1 (columns as above).

    Inlined into :func:`_visit_separable`, whose re-association lets the
    sums vectorise (the order is fixed by the loop bounds: reproducible).
    """
    n2 = row.shape[0]
    r0 = 0.0
    rd = 0.0
    r1 = 0.0
    r2 = 0.0
    u = u0
    col = col0
    while u <= u1:
        seg = min(u1 - u + 1, n2 - col)
        for q in range(seg):
            uq = numba.uint64(u + q)
            dv = row[numba.uint64(col + q)]
            w = dv * (scale * gz[uq])
            rd += dv
            r0 += w
            r1 += w * t1[uq]
            r2 += w * t2[uq]
        u += seg
        col = 0
    return r0, rd, r1, r2


@numba.njit(cache=True, fastmath=False)
def _is_diagonal(amp, pq):
    """True when every non-zero term's quadratic form is diagonal (separable along the grid axes)."""
    for k in range(amp.shape[0]):
        if amp[k] != 0.0 and (pq[k, 3] != 0.0 or pq[k, 4] != 0.0 or pq[k, 5] != 0.0):
            return False
    return True


@numba.njit(cache=True, fastmath=False)
def _workspace(n_terms, half):
    """Scratch 1-D tables for :func:`_visit_separable` (boxes of any atom in ``half``)."""
    n = 1
    for j in range(half.shape[0]):
        for k in range(half.shape[1]):
            for r in range(3):
                n = max(n, int(2.0 * half[j, k, r]) + 2)
    return np.empty((3, n_terms, n)), np.empty((2, n))


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _visit_separable(grid, c, occ, amp, shift, pq, half, gather, acc, ws):
    """Spread all cut Gaussian terms of one atom with diagonal P_k, or gather their moments.

    With P diagonal, e^{−Q} = ex(d₀)·ey(d₁)·ez(t) (t = k − c₂): three 1-D
    tables per term (:func:`_gauss_table`, no exponential per point) and a
    point is inside term k's cut ellipsoid iff ex·ey·ez > cut = shift/|A|,
    on each row a run of columns around the peak of ez found by moving the
    previous row's ends.  Each term visits only its own points; the row
    loops vectorise.  Same density and moments as :func:`_visit_term` per term.
    Gathering adds to acc[i] (i-th non-zero term) [Σ D v, Σ D, Σ D v δ (3),
    Σ D v δδᵀ (00 11 22 01 02 12)] over the points with v > shift.
    """
    tables, tcol = ws
    t1 = tcol[0]
    t2 = tcol[1]
    n0, n1, n2 = grid.shape
    c0, c1, c2 = c[0], c[1], c[2]
    box_lo = np.empty(3, dtype=np.int64)
    box_n = np.empty(3, dtype=np.int64)
    for r in range(3):
        h = 0.0
        for k in range(amp.shape[0]):
            if amp[k] != 0.0:
                h = max(h, half[k, r])
        box_lo[r] = int(math.ceil(c[r] - h))
        box_n[r] = int(math.floor(c[r] + h)) - box_lo[r] + 1
    ni, nj, lw = box_n[0], box_n[1], box_n[2]
    for u in range(lw):
        t = box_lo[2] + u - c2
        t1[u] = t
        t2[u] = t * t
    col0 = _wrap(box_lo[2], n2)
    a = -1
    for k in range(amp.shape[0]):
        if amp[k] == 0.0:
            continue
        a += 1
        peak = abs(amp[k])
        off = shift[k]
        cut = off / peak
        weight = occ if amp[k] > 0.0 else -occ
        ex = tables[0, a]
        ey = tables[1, a]
        ez = tables[2, a]
        _gauss_table(ex, box_lo[0] - c0, pq[k, 0], ni)
        _gauss_table(ey, box_lo[1] - c1, pq[k, 1], nj)
        _gauss_table(ez, box_lo[2] - c2, pq[k, 2], lw)
        i0, i1 = _term_range(ex, ni, cut)
        j0, j1 = _term_range(ey, nj, cut)
        u0, u1 = _term_range(ez, lw, cut)
        if u1 < u0:
            continue
        us = min(max(int(math.floor(0.5 - (box_lo[2] - c2))), 0), lw - 1)  # peak of ez
        lo = us
        hi = us
        s0 = sd = s10 = s11 = s12 = 0.0
        s200 = s211 = s222 = s201 = s202 = s212 = 0.0
        for ii in range(i0, i1 + 1):
            e0 = ex[ii]
            if e0 <= cut:
                continue
            plane = grid[_wrap(box_lo[0] + ii, n0)]
            d0 = box_lo[0] + ii - c0
            for jj in range(j0, j1 + 1):
                e01 = e0 * ey[jj]
                if e01 <= cut:
                    continue
                # this row's points: e01·ez > cut, a run [lo, hi] around the peak (moved from the last row's)
                thr = cut / e01
                if ez[us] <= thr:
                    continue
                while lo > u0 and ez[lo - 1] > thr:
                    lo -= 1
                while ez[lo] <= thr:
                    lo += 1
                while hi < u1 and ez[hi + 1] > thr:
                    hi += 1
                while ez[hi] <= thr:
                    hi -= 1
                row = plane[_wrap(box_lo[1] + jj, n1)]
                col = _wrap(col0 + lo, n2)
                if gather:
                    d1 = box_lo[1] + jj - c1
                    r0, rd, r1, r2 = _gather_segment(row, ez, t1, t2, col, lo, hi, peak * e01)
                    sd += rd
                    s0 += r0
                    s10 += r0 * d0
                    s11 += r0 * d1
                    s12 += r1
                    s200 += r0 * d0 * d0
                    s211 += r0 * d1 * d1
                    s222 += r2
                    s201 += r0 * d0 * d1
                    s202 += r1 * d0
                    s212 += r1 * d1
                else:
                    _spread_segment(row, ez, col, lo, hi, peak * e01, off, weight)
        if gather:
            s = acc[a]
            s[0] += s0
            s[1] += sd
            s[2] += s10
            s[3] += s11
            s[4] += s12
            s[5] += s200
            s[6] += s211
            s[7] += s222
            s[8] += s201
            s[9] += s202
            s[10] += s212


@numba.njit(cache=True, fastmath=False)
def _spread_atoms(grid, atoms, centres, occ, amp, logr, shift, pq, half):
    ws = _workspace(amp.shape[1], half)
    dummy = np.zeros((1, 1))
    for j in atoms:
        if _is_diagonal(amp[j], pq[j]):
            _visit_separable(grid, centres[j], occ[j], amp[j], shift[j], pq[j], half[j], False, dummy, ws)
            continue
        for k in range(amp.shape[1]):
            peak = amp[j, k]
            if peak == 0.0:
                continue
            weight = occ[j] if peak > 0 else -occ[j]
            _visit_term(grid, centres[j], abs(peak), weight, logr[j, k], pq[j, k], half[j, k],
                        shift[j, k], False, dummy[0])


@numba.njit(cache=True, parallel=True, fastmath=False)
def spread(grid, centres, occ, amp, logr, shift, pq, half, order, slab_start):
    """Sum the cut Gaussian densities of all atoms into ``grid`` (zeroed here).

    Atoms ``order[slab_start[s]:slab_start[s+1]]`` form group s.  Groups
    0..S−1 (S even) are slabs along one grid axis at least twice as wide
    as their atoms' reach, so even slabs, then odd slabs, are filled in
    parallel without two threads writing the same plane; the last group
    (atoms reaching further) is done serially.
    """
    grid[...] = 0.0
    n_slabs = len(slab_start) - 2
    for parity in range(2):
        for q in prange(n_slabs // 2):
            s = 2 * q + parity
            _spread_atoms(grid, order[slab_start[s]:slab_start[s + 1]], centres, occ, amp, logr,
                          shift, pq, half)
    _spread_atoms(grid, order[slab_start[n_slabs]:slab_start[n_slabs + 1]], centres, occ, amp,
                  logr, shift, pq, half)


@dataclass(frozen=True)
class SlabPlan:
    """How :func:`spread` splits atoms: ``n_slabs`` slabs across grid ``axis``.

    Slab boundaries are planes ``origin + bounds`` (mod the axis length);
    atoms whose reach exceeds ``limit`` planes go to the serial group.
    """

    axis: int
    origin: int
    bounds: np.ndarray
    limit: int

    @property
    def n_slabs(self) -> int:
        return len(self.bounds)

    def groups(self, centres: np.ndarray, half: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Atom order and group starts for :func:`spread` (always race-free for any atoms)."""
        n_axis = shape[self.axis]
        reach = np.ceil(half[..., self.axis].max(axis=1)).astype(np.int64)
        plane = (np.floor(np.mod(centres[:, self.axis], n_axis)).astype(np.int64) - self.origin) % n_axis
        group = np.searchsorted(self.bounds, plane, side="right") - 1
        group[reach > self.limit] = self.n_slabs
        order = np.argsort(group, kind="stable")
        return order, np.searchsorted(group[order], np.arange(self.n_slabs + 2))


def atom_work(half: np.ndarray) -> np.ndarray:
    """Estimated spreading work per atom: Σ over its terms of the box's rows plus points/8.

    ``half`` (N, K, 3) box half-widths in grid units (0 for skipped terms).
    Each row costs a set-up comparable to ~8 vectorised points.
    """
    rows = (2.0 * half[..., 0] + 1.0) * (2.0 * half[..., 1] + 1.0)
    live = half.any(axis=2)
    return np.where(live, rows * (1.0 + (2.0 * half[..., 2] + 1.0) / 8.0), 0.0).sum(axis=1)


def _slab_bounds(plane: np.ndarray, work: np.ndarray, n_axis: int, width: int,
                 n_slabs: int) -> tuple[int, np.ndarray]:
    """Origin (start of the emptiest stretch) and slab starts of ≥ ``width`` planes
    holding similar amounts of ``work`` (per atom; 0 for atoms spread serially)."""
    load = np.bincount(plane, weights=work, minlength=n_axis)
    window = np.convolve(np.concatenate([load, load[:width]]), np.ones(width), "valid")[:n_axis]
    origin = int(np.argmin(window))
    cumulative = np.cumsum(np.roll(load, -origin))
    bounds = [0]
    for q in range(1, n_slabs):
        wanted = int(np.searchsorted(cumulative, q * cumulative[-1] / n_slabs))
        low = bounds[-1] + width
        high = n_axis - (n_slabs - q) * width
        bounds.append(min(max(wanted, low), high))
    return origin, np.array(bounds)


def _makespan(group: np.ndarray, work: np.ndarray, n_slabs: int, threads: int) -> float:
    """Estimated parallel time (in work units) of :func:`spread` for this grouping.

    Each parity phase hands its slabs to the threads in contiguous chunks
    (static scheduling of the ``prange``); the last group runs serially.
    """
    loads = np.bincount(group, weights=work, minlength=n_slabs + 1)
    total = loads[n_slabs]
    for parity in range(2):
        phase = loads[parity:n_slabs:2]
        chunk = -(-len(phase) // threads)
        total += max(phase[i:i + chunk].sum() for i in range(0, len(phase), chunk))
    return total


def plan_slabs(centres: np.ndarray, half: np.ndarray, shape: tuple[int, int, int],
               threads: int) -> SlabPlan | None:
    """The slab split with the smallest estimated parallel time, or None (serial is best).

    Tries each axis, slab widths 2·R+1 with R the 60th/75th/90th percentile
    of the atoms' reach (atoms reaching further are spread serially), and
    even slab counts up to 4 per thread; boundaries follow the atoms' work
    (:func:`atom_work`).
    """
    n = len(centres)
    if threads < 2 or n == 0:
        return None
    work = atom_work(half)
    best, plan = float(work.sum()), None
    for axis in range(3):
        n_axis = shape[axis]
        reach = np.ceil(half[..., axis].max(axis=1)).astype(np.int64)
        plane = np.floor(np.mod(centres[:, axis], n_axis)).astype(np.int64) % n_axis
        for pct in (60, 75, 90):
            limit = int(np.percentile(reach, pct))
            width = 2 * limit + 1
            small = reach <= limit
            for n_slabs in range(2, min(n_axis // width, 4 * threads) + 1, 2):
                origin, bounds = _slab_bounds(plane, np.where(small, work, 0.0), n_axis, width, n_slabs)
                candidate = SlabPlan(axis, origin, bounds, limit)
                group = np.searchsorted(bounds, (plane - origin) % n_axis, side="right") - 1
                group[~small] = n_slabs
                cost = _makespan(group, work, n_slabs, threads)
                if cost < best:
                    best, plan = cost, candidate
    return plan


def slab_groups(plan: SlabPlan | None, centres: np.ndarray, half: np.ndarray,
                shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Atom order and group starts for :func:`spread` (all serial when ``plan`` is None)."""
    if plan is None:
        n = len(centres)
        return np.arange(n), np.array([0, 0, n])
    return plan.groups(centres, half, shape)


@numba.njit(cache=True, fastmath=False)
def _atom_derivatives(dgrid, c, occ, amp, logr, shift, pq, wq, half, m, d_xyz, d_u, ws, acc):
    """Add one atom's derivatives (all its terms) to d_xyz (3,) and d_u (6,); return d_occ."""
    wm = np.empty((3, 3))
    wmat = np.empty((3, 3))
    s2 = np.empty((3, 3))
    t = np.empty((3, 3))
    acc[:, :] = 0.0
    if _is_diagonal(amp, pq):
        _visit_separable(dgrid, c, 1.0, amp, shift, pq, half, True, acc, ws)
    else:
        a = 0
        for k in range(amp.shape[0]):
            if amp[k] != 0.0:
                _visit_term(dgrid, c, abs(amp[k]), 1.0, logr[k], pq[k], half[k], shift[k], True, acc[a])
                a += 1
    d_occ = 0.0
    a = -1
    for k in range(amp.shape[0]):
        peak = amp[k]
        if peak == 0.0:
            continue
        a += 1
        s = acc[a]
        sign = 1.0 if peak > 0 else -1.0
        wgt = sign * occ
        # ρ = occ·sign·(v − shift), v = peak e^{-Q}: occ and the peak's det(U)^-1/2 multiply v − shift
        s0_scaled = s[0] - shift[k] * s[1]
        d_occ += sign * s0_scaled
        w = wq[k]
        wmat[0, 0], wmat[1, 1], wmat[2, 2] = w[0], w[1], w[2]
        wmat[0, 1] = wmat[1, 0] = w[3]
        wmat[0, 2] = wmat[2, 0] = w[4]
        wmat[1, 2] = wmat[2, 1] = w[5]
        s2[0, 0], s2[1, 1], s2[2, 2] = s[5], s[6], s[7]
        s2[0, 1] = s2[1, 0] = s[8]
        s2[0, 2] = s2[2, 0] = s[9]
        s2[1, 2] = s2[2, 1] = s[10]
        for r in range(3):
            for q in range(3):
                wm[r, q] = wmat[r, 0] * m[0, q] + wmat[r, 1] * m[1, q] + wmat[r, 2] * m[2, q]
        # ∂/∂x = wgt · W M S1
        for r in range(3):
            d_xyz[r] += wgt * (wm[r, 0] * s[2] + wm[r, 1] * s[3] + wm[r, 2] * s[4])
        # ∂/∂U = wgt · ½ (WM S2 (WM)ᵀ − W S0)
        for r in range(3):
            for q in range(3):
                t[r, q] = wm[r, 0] * s2[0, q] + wm[r, 1] * s2[1, q] + wm[r, 2] * s2[2, q]
        for slot in range(6):
            r = (0, 1, 2, 0, 0, 1)[slot]
            q = (0, 1, 2, 1, 2, 2)[slot]
            val = t[r, 0] * wm[q, 0] + t[r, 1] * wm[q, 1] + t[r, 2] * wm[q, 2]
            d_u[slot] += wgt * 0.5 * (val - wmat[r, q] * s0_scaled)
    return d_occ


GATHER_CHUNKS = 64  # atoms are gathered in this many chunks (one scratch space each)


@numba.njit(cache=True, parallel=True, fastmath=False)
def gather(dgrid, centres, occ, amp, logr, shift, pq, wq, half, m):
    """Derivatives of Σ_r D(r) ρ(r) with respect to each atom's parameters.

    D is the real grid ∂T/∂ρ(r).  Returns (d_occ (N,), d_xyz (N,3) per Å,
    d_u (N,6) = ∂/∂U_ab as matrix elements (order 00 11 22 01 02 12; a
    symmetric parameter U_ab, a≠b, has twice the off-diagonal value;
    isotropic B gets trace/8π²)).  Each atom's result is independent of the
    threads used.
    """
    n, nk = amp.shape
    d_occ = np.zeros(n)
    d_xyz = np.zeros((n, 3))
    d_u = np.zeros((n, 6))
    n_chunks = min(n, GATHER_CHUNKS)
    for q in prange(n_chunks):
        ws = _workspace(nk, half)
        acc = np.empty((nk, 11))
        for j in range(q * n // n_chunks, (q + 1) * n // n_chunks):
            d_occ[j] = _atom_derivatives(dgrid, centres[j], occ[j], amp[j], logr[j], shift[j],
                                         pq[j], wq[j], half[j], m, d_xyz[j], d_u[j], ws, acc)
    return d_occ, d_xyz, d_u


__all__ = ["EIGHT_PI2", "numba_threads", "index_to_cartesian", "grid_centres", "total_u", "sharpest_b",
           "gaussian_terms", "spread", "SlabPlan", "atom_work", "plan_slabs", "slab_groups", "gather"]


# --------------------------------------------------------------------------- form factors
class AtomCoefficients:
    """Form-factor Gaussians of a model's atoms, recomputed only when elements change.

    ``a``/``b`` (N, K+1): the table's K Gaussians plus its constant c as a
    Gaussian with b = 0 (a point scatterer blurred only by the atom's own
    displacement and B_add).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._element: np.ndarray | None = None
        self._charge: np.ndarray | None = None
        self.a = np.zeros((0, 0))
        self.b = np.zeros((0, 0))

    def update(self, table, element: np.ndarray, charge: np.ndarray) -> "AtomCoefficients":
        """Refresh for ``table`` and these atoms when anything differs from last time."""
        key = (id(table), len(element))
        if (key == self._key and self._element is not None
                and np.array_equal(self._element, element) and np.array_equal(self._charge, charge)):
            return self
        coef = table.coefficients(element, charge)
        n = len(element)
        self.a = np.concatenate([np.asarray(coef.a, dtype=np.float64).reshape(n, -1),
                                 np.asarray(coef.c, dtype=np.float64)[:, None]], axis=1)
        self.b = np.concatenate([np.asarray(coef.b, dtype=np.float64).reshape(n, -1),
                                 np.zeros((n, 1))], axis=1)
        self._key, self._element, self._charge = key, element.copy(), charge.copy()
        return self


__all__ += ["AtomCoefficients"]
