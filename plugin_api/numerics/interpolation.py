"""Tricubic interpolation of a 3-D grid with analytic gradients (numba).

The interpolant is the tensor product of 1-D cubic Hermite segments whose
node slopes are estimated by finite differences of the grid values — the
tricubic scheme of Lekien & Marsden (2005), *Int. J. Numer. Meth. Eng.* 63,
455–471, with derivatives at the corners taken from the data:

* ``"catmull-rom"``: slopes by central differences, m_i = (f_{i+1} − f_{i−1})/2.
  This is Keys' cubic convolution with a = −½ (Keys 1981, IEEE Trans.
  Acoust. Speech Signal Process. 29, 1153; the Catmull–Rom spline),
  4 points per axis (64 per atom), C¹, exact for polynomials of degree ≤ 2.
* ``"hermite-fd4"``: slopes by 4th-order differences,
  m_i = (f_{i−2} − 8f_{i−1} + 8f_{i+1} − f_{i+2})/12; 6 points per axis
  (216 per atom), C¹, exact for polynomials of degree ≤ 3.

Hermite basis on t ∈ [0, 1): h00 = 2t³−3t²+1, h10 = t³−2t²+t,
h01 = −2t³+3t², h11 = t³−t².

Coordinates are *grid* coordinates u (unit = one grid step; u = 0 is the
first stored value).  ``periodic=True`` wraps indices (a full unit cell);
otherwise indices are clamped to the stored box (edge values replicated,
which keeps the interpolant C¹ and defined everywhere).  Interpolation of
the map at atom centres is the target of phenix.real_space_refine
(Afonine et al. 2018, Acta Cryst. D74, 531, §2.2).  The kernels are serial:
a few ms for 15k atoms, where thread start-up would dominate.
"""

from __future__ import annotations

import numba
import numpy as np

#: Interpolation kinds → kernel codes.
KINDS = {"catmull-rom": 0, "hermite-fd4": 1}


@numba.njit(cache=True, fastmath=False)
def _hermite(t: float):
    t2 = t * t
    t3 = t2 * t
    h00 = 2.0 * t3 - 3.0 * t2 + 1.0
    h10 = t3 - 2.0 * t2 + t
    h01 = -2.0 * t3 + 3.0 * t2
    h11 = t3 - t2
    d00 = 6.0 * t2 - 6.0 * t
    d10 = 3.0 * t2 - 4.0 * t + 1.0
    d01 = -6.0 * t2 + 6.0 * t
    d11 = 3.0 * t2 - 2.0 * t
    return h00, h10, h01, h11, d00, d10, d01, d11


@numba.njit(cache=True, fastmath=False)
def _weights_1d(t: float, kind: int, w: np.ndarray, dw: np.ndarray) -> None:
    """Stencil weights of value (w) and d/du (dw) at offset t ∈ [0,1).

    kind 0: offsets −1..2 stored in w[0:4]; kind 1: offsets −2..3 in w[0:6].
    """
    h00, h10, h01, h11, d00, d10, d01, d11 = _hermite(t)
    if kind == 0:
        w[0] = -0.5 * h10
        w[1] = h00 - 0.5 * h11
        w[2] = h01 + 0.5 * h10
        w[3] = 0.5 * h11
        dw[0] = -0.5 * d10
        dw[1] = d00 - 0.5 * d11
        dw[2] = d01 + 0.5 * d10
        dw[3] = 0.5 * d11
    else:
        c = 1.0 / 12.0
        w[0] = c * h10
        w[1] = c * (h11 - 8.0 * h10)
        w[2] = h00 - 8.0 * c * h11
        w[3] = h01 + 8.0 * c * h10
        w[4] = c * (8.0 * h11 - h10)
        w[5] = -c * h11
        dw[0] = c * d10
        dw[1] = c * (d11 - 8.0 * d10)
        dw[2] = d00 - 8.0 * c * d11
        dw[3] = d01 + 8.0 * c * d10
        dw[4] = c * (8.0 * d11 - d10)
        dw[5] = -c * d11


@numba.njit(cache=True, fastmath=False, inline="always")
def _index(i: int, n: int, periodic: bool) -> int:
    if periodic:
        i = i % n
        return i + n if i < 0 else i
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@numba.njit(cache=True, fastmath=False)
def _stencils(u, kind, shape, periodic, idx, w, dw):
    """Per atom and axis: the stencil's grid indices and value/derivative weights."""
    size = 4 if kind == 0 else 6
    first = -1 if kind == 0 else -2
    for a in range(u.shape[0]):
        for c in range(3):
            f = np.floor(u[a, c])
            start = int(f) + first
            for p in range(size):
                idx[a, c, p] = _index(start + p, shape[c], periodic)
            _weights_1d(u[a, c] - f, kind, w[a, c], dw[a, c])


@numba.njit(cache=True, fastmath=False)
def _interpolate(grid, u, kind, periodic, want_grad, val, grad):
    size = 4 if kind == 0 else 6
    n = u.shape[0]
    idx = np.empty((n, 3, 6), dtype=np.int64)
    w = np.empty((n, 3, 6))
    dw = np.empty((n, 3, 6))
    _stencils(u, kind, np.array(grid.shape), periodic, idx, w, dw)
    for a in range(n):
        wx, wy, wz = w[a, 0], w[a, 1], w[a, 2]
        dx, dy, dz = dw[a, 0], dw[a, 1], dw[a, 2]
        ix, iy, iz = idx[a, 0], idx[a, 1], idx[a, 2]
        v = 0.0
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        for p in range(size):
            i = ix[p]
            for q in range(size):
                j = iy[q]
                # inner sums over k: value and d/dk
                sz = 0.0
                sdz = 0.0
                for r in range(size):
                    f = grid[i, j, iz[r]]
                    sz += wz[r] * f
                    sdz += dz[r] * f
                v += wx[p] * wy[q] * sz
                if want_grad:
                    g0 += dx[p] * wy[q] * sz
                    g1 += wx[p] * dy[q] * sz
                    g2 += wx[p] * wy[q] * sdz
        val[a] = v
        if want_grad:
            grad[a, 0] = g0
            grad[a, 1] = g1
            grad[a, 2] = g2


def interpolate(grid: np.ndarray, u: np.ndarray, kind: str = "catmull-rom",
                periodic: bool = True, want_grad: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Tricubic values (and ∂/∂u, per grid step) of ``grid`` at grid coordinates ``u`` (N, 3).

    ``grid`` is indexed [i, j, k]; ``u[:, 0]`` runs along i.  Returns
    (values (N,), gradient (N, 3) or None).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown interpolation {kind!r}; expected one of {sorted(KINDS)}")
    grid = np.ascontiguousarray(grid)
    u = np.ascontiguousarray(u, dtype=np.float64).reshape(-1, 3)
    val = np.empty(len(u))
    grad = np.empty((len(u), 3)) if want_grad else np.empty((0, 3))
    _interpolate(grid, u, KINDS[kind], bool(periodic), bool(want_grad), val, grad)
    return val, (grad if want_grad else None)
