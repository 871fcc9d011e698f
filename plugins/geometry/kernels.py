"""Values and gradients of the covalent-geometry restraints (numba kernels).

Each ``*_kernel`` takes coordinates ``xyz`` (N, 3) in Å and index arrays from
:class:`~refinekit.plugins.geometry.topology.RestraintTables`, writes the
normalised residual r = (model − ideal)/σ of every restraint into ``resid``,
adds dT/dx = 2·r·∂r/∂x into ``grad`` (N, 3) when ``want_grad`` and the
Gauss–Newton diagonal 2·(∂r/∂x)² into ``curv`` (N, 3) when ``want_curv``, and
returns T = Σ r² (REFMAC's least-squares form; Murshudov et al., Acta Cryst.
D67, 355 (2011), §2.3).  Angles are in radians, chiral volumes in Å³.

The ``*_values`` helpers (numpy) give the raw model quantities for statistics.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(cache=True, fastmath=False, nogil=True)


@numba.njit(**_JIT)
def _push(grad, curv, want_grad, want_curv, i, r, d):
    """grad[i] += 2 r d; curv[i] += 2 d²."""
    if want_grad:
        for k in range(3):
            grad[i, k] += 2.0 * r * d[k]
    if want_curv:
        for k in range(3):
            curv[i, k] += 2.0 * d[k] * d[k]


@numba.njit(**_JIT)
def bonds_kernel(xyz, idx, ideal, sigma, grad, curv, want_grad, want_curv, resid):
    """Σ ((d − d0)/σ)² over bonds idx (M, 2), d in Å."""
    total = 0.0
    d = np.empty(3)
    v = np.empty(3)
    for m in range(idx.shape[0]):
        i, j = idx[m, 0], idx[m, 1]
        _sub(xyz, i, j, v)
        dist = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
        r = (dist - ideal[m]) / sigma[m]
        resid[m] = r
        total += r * r
        if want_grad or want_curv:
            for k in range(3):
                d[k] = v[k] / (dist * sigma[m])
            _push(grad, curv, want_grad, want_curv, i, r, d)
            for k in range(3):
                d[k] = -d[k]
            _push(grad, curv, want_grad, want_curv, j, r, d)
    return total


@numba.njit(**_JIT)
def _sub(xyz, i, j, out):
    """out = xyz[i] − xyz[j] without allocating."""
    out[0] = xyz[i, 0] - xyz[j, 0]
    out[1] = xyz[i, 1] - xyz[j, 1]
    out[2] = xyz[i, 2] - xyz[j, 2]


@numba.njit(**_JIT)
def _cross(a, b, out):
    out[0] = a[1] * b[2] - a[2] * b[1]
    out[1] = a[2] * b[0] - a[0] * b[2]
    out[2] = a[0] * b[1] - a[1] * b[0]


@numba.njit(**_JIT)
def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


@numba.njit(**_JIT)
def angles_kernel(xyz, idx, ideal, sigma, grad, curv, want_grad, want_curv, resid):
    """Σ ((θ − θ0)/σ)², θ (radians) at the middle atom of idx (M, 3).

    dθ/da = (cosθ·â − b̂)/(|a| sinθ) for a = x_i − x_j, b = x_k − x_j.
    """
    total = 0.0
    a = np.empty(3)
    b = np.empty(3)
    c = np.empty(3)
    da = np.empty(3)
    db = np.empty(3)
    dm = np.empty(3)
    for m in range(idx.shape[0]):
        i, j, k = idx[m, 0], idx[m, 1], idx[m, 2]
        _sub(xyz, i, j, a)
        _sub(xyz, k, j, b)
        _cross(a, b, c)
        la, lb = math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b))
        sin = math.sqrt(_dot(c, c))
        cos = _dot(a, b)
        theta = math.atan2(sin, cos)
        r = (theta - ideal[m]) / sigma[m]
        resid[m] = r
        total += r * r
        if want_grad or want_curv:
            s = max(sin / (la * lb), 1e-10)
            ct = math.cos(theta)
            for q in range(3):
                ua, ub = a[q] / la, b[q] / lb
                da[q] = (ct * ua - ub) / (la * s * sigma[m])
                db[q] = (ct * ub - ua) / (lb * s * sigma[m])
                dm[q] = -da[q] - db[q]
            _push(grad, curv, want_grad, want_curv, i, r, da)
            _push(grad, curv, want_grad, want_curv, k, r, db)
            _push(grad, curv, want_grad, want_curv, j, r, dm)
    return total


@numba.njit(**_JIT)
def torsions_kernel(xyz, idx, ideal, sigma, period, grad, curv, want_grad, want_curv, resid):
    """Σ (Δφ/σ)², Δφ = φ − φ0 reduced to [−π/n, π/n) for n = period.

    φ with the IUPAC sign; gradient of φ: Blondel & Karplus, J. Comput. Chem.
    17, 1132 (1996), eq. 27.
    """
    total = 0.0
    b1 = np.empty(3)
    b2 = np.empty(3)
    b3 = np.empty(3)
    n1 = np.empty(3)
    n2 = np.empty(3)
    d1 = np.empty(3)
    d2 = np.empty(3)
    d3 = np.empty(3)
    d4 = np.empty(3)
    for m in range(idx.shape[0]):
        p0, p1, p2, p3 = idx[m, 0], idx[m, 1], idx[m, 2], idx[m, 3]
        _sub(xyz, p1, p0, b1)
        _sub(xyz, p2, p1, b2)
        _sub(xyz, p3, p2, b3)
        _cross(b1, b2, n1)
        _cross(b2, b3, n2)
        lb2 = math.sqrt(_dot(b2, b2))
        phi = math.atan2(lb2 * _dot(b1, n2), _dot(n1, n2))
        width = 2.0 * math.pi / period[m]
        delta = (phi - ideal[m] + 0.5 * width) % width - 0.5 * width
        r = delta / sigma[m]
        resid[m] = r
        total += r * r
        if want_grad or want_curv:
            n1sq = max(_dot(n1, n1), 1e-20)
            n2sq = max(_dot(n2, n2), 1e-20)
            f12 = _dot(b1, b2) / (lb2 * lb2)
            f32 = _dot(b3, b2) / (lb2 * lb2)
            inv = 1.0 / sigma[m]
            for q in range(3):
                g1 = -lb2 / n1sq * n1[q]
                g4 = lb2 / n2sq * n2[q]
                d1[q] = g1 * inv
                d4[q] = g4 * inv
                d2[q] = (-g1 - f12 * g1 + f32 * g4) * inv
                d3[q] = (-g4 + f12 * g1 - f32 * g4) * inv
            _push(grad, curv, want_grad, want_curv, p0, r, d1)
            _push(grad, curv, want_grad, want_curv, p1, r, d2)
            _push(grad, curv, want_grad, want_curv, p2, r, d3)
            _push(grad, curv, want_grad, want_curv, p3, r, d4)
    return total


@numba.njit(**_JIT)
def chirals_kernel(xyz, idx, volume, both, sigma, grad, curv, want_grad, want_curv, resid):
    """Σ ((V − V0)/σ)², V = (x1−xc)·((x2−xc)×(x3−xc)) in Å³; idx columns c, 1, 2, 3.

    V0 is signed from the dictionary; for "both" V0 = sign(V)·|V0|.
    """
    total = 0.0
    a = np.empty(3)
    b = np.empty(3)
    e = np.empty(3)
    bc = np.empty(3)
    ca = np.empty(3)
    ab = np.empty(3)
    dc = np.empty(3)
    for m in range(idx.shape[0]):
        _sub(xyz, idx[m, 1], idx[m, 0], a)
        _sub(xyz, idx[m, 2], idx[m, 0], b)
        _sub(xyz, idx[m, 3], idx[m, 0], e)
        _cross(b, e, bc)
        _cross(e, a, ca)
        _cross(a, b, ab)
        v = _dot(a, bc)
        target = math.copysign(abs(volume[m]), v) if both[m] else volume[m]
        r = (v - target) / sigma
        resid[m] = r
        total += r * r
        if want_grad or want_curv:
            for q in range(3):
                bc[q] /= sigma
                ca[q] /= sigma
                ab[q] /= sigma
                dc[q] = -(bc[q] + ca[q] + ab[q])
            _push(grad, curv, want_grad, want_curv, idx[m, 0], r, dc)
            _push(grad, curv, want_grad, want_curv, idx[m, 1], r, bc)
            _push(grad, curv, want_grad, want_curv, idx[m, 2], r, ca)
            _push(grad, curv, want_grad, want_curv, idx[m, 3], r, ab)
    return total


@numba.njit(**_JIT)
def _smallest_eigenvector(a, out):
    """Unit eigenvector of the smallest eigenvalue of a symmetric 3×3 matrix.

    Eigenvalues in closed form (Smith, Commun. ACM 4, 168 (1961)); the vector
    is the largest cross product of two rows of (A − λI).
    """
    p1 = a[0, 1] ** 2 + a[0, 2] ** 2 + a[1, 2] ** 2
    q = (a[0, 0] + a[1, 1] + a[2, 2]) / 3.0
    p2 = (a[0, 0] - q) ** 2 + (a[1, 1] - q) ** 2 + (a[2, 2] - q) ** 2 + 2.0 * p1
    p = math.sqrt(p2 / 6.0)
    if p < 1e-300:
        out[0], out[1], out[2] = 0.0, 0.0, 1.0
        return
    b = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            b[i, j] = (a[i, j] - (q if i == j else 0.0)) / p
    det = (b[0, 0] * (b[1, 1] * b[2, 2] - b[1, 2] * b[2, 1])
           - b[0, 1] * (b[1, 0] * b[2, 2] - b[1, 2] * b[2, 0])
           + b[0, 2] * (b[1, 0] * b[2, 1] - b[1, 1] * b[2, 0]))
    r = min(max(det / 2.0, -1.0), 1.0)
    lam = q + 2.0 * p * math.cos(math.acos(r) / 3.0 + 2.0 * math.pi / 3.0)
    best = -1.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        r0 = a[i, 0] - (lam if i == 0 else 0.0)
        r1 = a[i, 1] - (lam if i == 1 else 0.0)
        r2 = a[i, 2] - (lam if i == 2 else 0.0)
        s0 = a[j, 0] - (lam if j == 0 else 0.0)
        s1 = a[j, 1] - (lam if j == 1 else 0.0)
        s2 = a[j, 2] - (lam if j == 2 else 0.0)
        c0, c1, c2 = r1 * s2 - r2 * s1, r2 * s0 - r0 * s2, r0 * s1 - r1 * s0
        norm = c0 * c0 + c1 * c1 + c2 * c2
        if norm > best:
            best = norm
            out[0], out[1], out[2] = c0, c1, c2
    if best < 1e-300:  # collinear atoms: any normal to the line would do; keep z
        out[0], out[1], out[2] = 0.0, 0.0, 1.0
        return
    scale = 1.0 / math.sqrt(best)
    for k in range(3):
        out[k] *= scale


@numba.njit(**_JIT)
def planes_kernel(xyz, atoms, ptr, sigma, grad, curv, want_grad, want_curv, resid):
    """Σ_planes Σ_k (n·(x_k − x̄)/σ_k)² about the weighted least-squares plane.

    Plane k's atoms are atoms[ptr[k]:ptr[k+1]].  With w = 1/σ², the minimum
    over planes of Σ w (n·(x − x̄))² is the smallest eigenvalue of the weighted
    scatter matrix (Schomaker et al., Acta Cryst. 12, 600 (1959)); by the
    envelope theorem its gradient is 2 w (n·(x − x̄)) n.  The curvature ignores
    the dependence of n and x̄ on x.
    """
    total = 0.0
    cen = np.empty(3)
    normal = np.empty(3)
    mat = np.empty((3, 3))
    d = np.empty(3)
    for p in range(ptr.shape[0] - 1):
        lo, hi = ptr[p], ptr[p + 1]
        wsum = 0.0
        cen[:] = 0.0
        for t in range(lo, hi):
            w = 1.0 / (sigma[t] * sigma[t])
            wsum += w
            for q in range(3):
                cen[q] += w * xyz[atoms[t], q]
        for q in range(3):
            cen[q] /= wsum
        mat[:, :] = 0.0
        for t in range(lo, hi):
            w = 1.0 / (sigma[t] * sigma[t])
            for q in range(3):
                for s in range(3):
                    mat[q, s] += w * (xyz[atoms[t], q] - cen[q]) * (xyz[atoms[t], s] - cen[s])
        _smallest_eigenvector(mat, normal)
        for t in range(lo, hi):
            dist = 0.0
            for q in range(3):
                dist += normal[q] * (xyz[atoms[t], q] - cen[q])
            r = dist / sigma[t]
            resid[t] = r
            total += r * r
            if want_grad or want_curv:
                for q in range(3):
                    d[q] = normal[q] / sigma[t]
                _push(grad, curv, want_grad, want_curv, atoms[t], r, d)
    return total


@numba.njit(**_JIT)
def repulsion_kernel(xyz, pi, pj, op, rot, trans, d0, sigma, weight, grad, curv,
                     want_grad, want_curv):
    """Σ w ((d − d0)/σ)² over pairs closer than d0; d = |x_i − (R_op x_j + t_op)| in Å."""
    total = 0.0
    v = np.empty(3)
    di = np.empty(3)
    dj = np.empty(3)
    for m in range(pi.shape[0]):
        i, j, g = pi[m], pj[m], op[m]
        for q in range(3):
            v[q] = xyz[i, q] - (rot[g, q, 0] * xyz[j, 0] + rot[g, q, 1] * xyz[j, 1]
                                + rot[g, q, 2] * xyz[j, 2] + trans[g, q])
        dist = math.sqrt(_dot(v, v))
        if dist >= d0[m]:
            continue
        r = (dist - d0[m]) / sigma[m]
        w = weight[m]
        total += w * r * r
        if want_grad or want_curv:
            sw = math.sqrt(w)
            for q in range(3):
                di[q] = sw * v[q] / (dist * sigma[m])
            for q in range(3):  # d|x_i − g x_j|/dx_j = −R^T u
                dj[q] = -(rot[g, 0, q] * di[0] + rot[g, 1, q] * di[1] + rot[g, 2, q] * di[2])
            _push(grad, curv, want_grad, want_curv, i, sw * r, di)
            _push(grad, curv, want_grad, want_curv, j, sw * r, dj)
    return total


# ------------------------------------------------------------------ numpy values
def bond_distances(xyz: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Distances (Å) between the atom pairs ``idx`` (M, 2)."""
    return np.linalg.norm(xyz[idx[:, 0]] - xyz[idx[:, 1]], axis=1)


def angle_values(xyz: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Angles i–j–k (radians) at the middle atom, idx (M, 3)."""
    a = xyz[idx[:, 0]] - xyz[idx[:, 1]]
    b = xyz[idx[:, 2]] - xyz[idx[:, 1]]
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b))


def torsion_values(xyz: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, IUPAC sign) of atoms idx (M, 4)."""
    b1 = xyz[idx[:, 1]] - xyz[idx[:, 0]]
    b2 = xyz[idx[:, 2]] - xyz[idx[:, 1]]
    b3 = xyz[idx[:, 3]] - xyz[idx[:, 2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=1) * np.einsum("ij,ij->i", b1, n2)
    return np.arctan2(y, np.einsum("ij,ij->i", n1, n2))


def wrap_periodic(delta: np.ndarray, period: np.ndarray) -> np.ndarray:
    """delta (radians) reduced to [−π/n, π/n) for n-fold periodicity."""
    width = 2.0 * np.pi / period
    return np.mod(delta + 0.5 * width, width) - 0.5 * width


def chiral_volumes(xyz: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Signed volumes (Å³) (x1−xc)·((x2−xc)×(x3−xc)); idx columns c, 1, 2, 3."""
    c = xyz[idx[:, 0]]
    return np.einsum("ij,ij->i", xyz[idx[:, 1]] - c,
                     np.cross(xyz[idx[:, 2]] - c, xyz[idx[:, 3]] - c))
