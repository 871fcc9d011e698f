"""Flat bulk-solvent mask on a P1 grid of the unit cell, and its structure factors.

Definition (Jiang & Brünger 1994, J. Mol. Biol. 243, 100; the "probe + shrink"
variant used by cctbx/phenix, Afonine et al. 2013 Acta Cryst. D69, 625):

1. every grid point within r_vdw(atom) of any atom is *protein* (0);
2. every other point within r_vdw(atom) + r_probe of an atom is *boundary*;
3. all remaining points are *solvent* (1);
4. shrink: a boundary point becomes solvent when a solvent point of step 3
   lies within r_shrink of it, otherwise protein.

The result is the solvent region where a probe sphere of radius r_probe fits,
grown back towards the protein by r_shrink (never into the van der Waals
spheres).  Atoms are expanded with all space-group operations and the mask is
built for the whole cell, so it has the crystal's symmetry as long as the grid
is compatible with it (:func:`grid_shape` guarantees that).  Distances are
Cartesian (Å), with periodic wrap.

F_mask(h) = (V/N) Σ_x mask(x) exp(2πi h·x)  (Å³; multiply by k_sol in e/Å³).
"""

from __future__ import annotations

import math
import os
from functools import reduce

import gemmi
import numba
import numpy as np
import scipy.fft
import scipy.ndimage

from ..errors import InputError


# --------------------------------------------------------------------------- grid
def _smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def grid_shape(cell: gemmi.UnitCell, spacegroup: gemmi.SpaceGroup, spacing: float,
               min_shape: tuple[int, int, int] = (1, 1, 1)) -> tuple[int, int, int]:
    """Grid (n_a, n_b, n_c) with spacing ≤ ``spacing`` Å, FFT-friendly, symmetry-compatible.

    Each n is a product of 2, 3, 5, a multiple of the denominators of the
    translations along that axis, at least ``min_shape``; axes mixed by a
    rotation (a, b in tetragonal/hexagonal groups) get the same n.
    """
    if spacing <= 0:
        raise InputError(f"mask grid spacing must be positive, got {spacing}")
    lengths = (cell.a, cell.b, cell.c)
    factor = [1, 1, 1]
    group = [0, 1, 2]
    for op in spacegroup.operations():
        for i in range(3):
            t = op.tran[i] % gemmi.Op.DEN
            factor[i] = math.lcm(factor[i], gemmi.Op.DEN // math.gcd(t, gemmi.Op.DEN))
            for j in range(3):
                if i != j and op.rot[i][j] != 0:
                    gi, gj = group[i], group[j]
                    group = [min(gi, gj) if g in (gi, gj) else g for g in group]
    shape = [0, 0, 0]
    for g in set(group):
        axes = [i for i in range(3) if group[i] == g]
        step = reduce(math.lcm, (factor[i] for i in axes))
        need = max(max(math.ceil(lengths[i] / spacing), min_shape[i]) for i in axes)
        n = step * max(1, math.ceil(need / step))
        while not _smooth(n):
            n += step
        for i in axes:
            shape[i] = n
    return tuple(shape)


# --------------------------------------------------------------------------- atoms
def element_radii(elements, table: str = "vdw") -> np.ndarray:
    """Radii (Å) per element symbol: gemmi's van der Waals radii (``Element.vdw_r``)."""
    if table != "vdw":
        raise InputError(f"unknown radius table {table!r}; expected 'vdw'")
    cache: dict[str, float] = {}
    out = np.empty(len(elements))
    for i, sym in enumerate(elements):
        s = str(sym)
        if s not in cache:
            el = gemmi.Element(s)
            if el.atomic_number == 0:
                raise InputError(f"no van der Waals radius for element {s!r}")
            cache[s] = float(el.vdw_r)
        out[i] = cache[s]
    return out


def symmetry_expand(xyz: np.ndarray, cell: gemmi.UnitCell,
                    spacegroup: gemmi.SpaceGroup) -> np.ndarray:
    """Fractional coordinates (n_ops·N, 3) in [0, 1) of all symmetry copies."""
    frac = xyz @ np.array(cell.frac.mat.tolist()).T + np.array(cell.frac.vec.tolist())
    copies = []
    for op in spacegroup.operations():
        rot = np.array(op.rot, dtype=np.float64) / gemmi.Op.DEN
        tran = np.array(op.tran, dtype=np.float64) / gemmi.Op.DEN
        copies.append(frac @ rot.T + tran)
    out = np.concatenate(copies)
    return out - np.floor(out)


# --------------------------------------------------------------------------- kernels
@numba.njit(cache=True, parallel=True, fastmath=False)
def _mark_spheres(frac, radii, orth, recip_len, marks, value, only_solvent):
    """Set ``marks`` to ``value`` inside each sphere (radius Å) around ``frac``.

    With ``only_solvent`` only points currently 1 are changed.  Every thread
    writes the same value, so the parallel loop has no harmful race.
    """
    n0, n1, n2 = marks.shape
    for a in numba.prange(frac.shape[0]):
        r = radii[a]
        r2 = r * r
        fx, fy, fz = frac[a, 0], frac[a, 1], frac[a, 2]
        i_lo = int(math.floor((fx - r * recip_len[0]) * n0))
        i_hi = int(math.ceil((fx + r * recip_len[0]) * n0))
        j_lo = int(math.floor((fy - r * recip_len[1]) * n1))
        j_hi = int(math.ceil((fy + r * recip_len[1]) * n1))
        k_lo = int(math.floor((fz - r * recip_len[2]) * n2))
        k_hi = int(math.ceil((fz + r * recip_len[2]) * n2))
        for i in range(i_lo, i_hi + 1):
            dx = i / n0 - fx
            ii = i % n0
            for j in range(j_lo, j_hi + 1):
                dy = j / n1 - fy
                jj = j % n1
                for k in range(k_lo, k_hi + 1):
                    dz = k / n2 - fz
                    cx = orth[0, 0] * dx + orth[0, 1] * dy + orth[0, 2] * dz
                    cy = orth[1, 0] * dx + orth[1, 1] * dy + orth[1, 2] * dz
                    cz = orth[2, 0] * dx + orth[2, 1] * dy + orth[2, 2] * dz
                    if cx * cx + cy * cy + cz * cz <= r2:
                        kk = k % n2
                        if not only_solvent or marks[ii, jj, kk] == 1:
                            marks[ii, jj, kk] = value


@numba.njit(cache=True, parallel=True, fastmath=False)
def _shrink(marks, near, stencil, out):
    """Boundary points (-1) become solvent (1) when a solvent point is in ``stencil``.

    ``near`` is 0 where no solvent point lies in the stencil's bounding box,
    so those boundary points are protein without scanning the stencil.
    """
    n0, n1, n2 = marks.shape
    for i in numba.prange(n0):
        for j in range(n1):
            for k in range(n2):
                m = marks[i, j, k]
                if m >= 0:
                    out[i, j, k] = m
                    continue
                v = 0
                if near[i, j, k]:
                    for s in range(stencil.shape[0]):
                        if marks[(i + stencil[s, 0]) % n0, (j + stencil[s, 1]) % n1,
                                 (k + stencil[s, 2]) % n2] == 1:
                            v = 1
                            break
                out[i, j, k] = v


def _near_solvent(marks: np.ndarray, stencil: np.ndarray) -> np.ndarray:
    """1 where the stencil's bounding box (periodic) holds a solvent point, else 0."""
    near = (marks == 1).view(np.uint8)
    if len(stencil) == 0:
        return near
    ext = np.abs(stencil).max(axis=0)
    for axis in range(3):
        near = scipy.ndimage.maximum_filter1d(near, 2 * int(ext[axis]) + 1, axis=axis, mode="wrap")
    return near


def _stencil(orth: np.ndarray, shape: tuple[int, int, int], recip_len: np.ndarray,
             radius: float) -> np.ndarray:
    """Grid offsets (K, 3) within ``radius`` Å of the origin (origin excluded), nearest first."""
    ext = [int(math.ceil(radius * recip_len[i] * shape[i])) for i in range(3)]
    grids = np.meshgrid(*[np.arange(-e, e + 1) for e in ext], indexing="ij")
    offs = np.stack([g.ravel() for g in grids], axis=1)
    cart = (offs / np.array(shape)) @ orth.T
    dist = np.sqrt(np.einsum("ij,ij->i", cart, cart))
    keep = (dist <= radius) & (dist > 0)
    order = np.argsort(dist[keep], kind="stable")
    return np.ascontiguousarray(offs[keep][order].astype(np.int64))


def solvent_mask(cell: gemmi.UnitCell, spacegroup: gemmi.SpaceGroup, xyz: np.ndarray,
                 radii: np.ndarray, shape: tuple[int, int, int], r_probe: float = 1.0,
                 r_shrink: float = 0.8) -> np.ndarray:
    """Mask (int8, ``shape``): 1 = bulk solvent, 0 = protein (see module doc).

    ``xyz`` (N, 3) orthogonal Å of the asymmetric-unit atoms; ``radii`` (N,) Å.
    """
    orth = np.array(cell.orth.mat.tolist())
    frac_mat = np.array(cell.frac.mat.tolist())
    recip_len = np.sqrt(np.einsum("ij,ij->i", frac_mat, frac_mat))  # |a*|, |b*|, |c*|
    frac = symmetry_expand(np.asarray(xyz, dtype=np.float64), cell, spacegroup)
    n_ops = len(frac) // max(len(xyz), 1)
    r_core = np.tile(np.asarray(radii, dtype=np.float64), n_ops)
    marks = np.ones(shape, dtype=np.int8)
    _mark_spheres(frac, r_core, orth, recip_len, marks, np.int8(0), False)
    _mark_spheres(frac, r_core + r_probe, orth, recip_len, marks, np.int8(-1), True)
    out = np.empty_like(marks)
    stencil = _stencil(orth, shape, recip_len, r_shrink)
    _shrink(marks, _near_solvent(marks, stencil), stencil, out)
    return out


# --------------------------------------------------------------------------- F_mask
def mask_structure_factors(mask: np.ndarray, cell: gemmi.UnitCell,
                           hkl: np.ndarray) -> np.ndarray:
    """F(h) = (V/N) Σ_x mask(x) exp(2πi h·x) at each Miller index (Å³).

    The grid must hold every index: n_i > 2|h_i|.  A mask is transformed
    only when it is rebuilt, so a one-off scipy (pocketfft) transform is used
    rather than a measured pyFFTW plan, whose planning would cost more.
    """
    shape = mask.shape
    hkl = np.asarray(hkl, dtype=np.int64)
    if np.any(2 * np.abs(hkl).max(axis=0) >= np.array(shape)):
        raise InputError(f"mask grid {shape} too coarse for Miller indices up to "
                         f"{np.abs(hkl).max(axis=0).tolist()}")
    spectrum = scipy.fft.rfftn(mask.astype(np.float64), workers=os.cpu_count() or 1)
    # rfftn computes Σ m exp(-2πi h·x) for l >= 0; use Friedel symmetry for l < 0.
    flip = hkl[:, 2] < 0
    idx = np.where(flip[:, None], -hkl, hkl)
    vals = spectrum[idx[:, 0] % shape[0], idx[:, 1] % shape[1], idx[:, 2]]
    vals = np.where(flip, vals, np.conj(vals))
    return vals * (cell.volume / mask.size)
