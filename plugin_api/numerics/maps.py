"""Shared helpers for density maps (real-space refinement, model maps, metrics).

Conventions (those of :class:`refinekit.plugin_api.MapData`):

* ``values[i, j, k]`` is the density at fractional coordinates
  ((origin + (i, j, k)) / grid_shape) of ``cell``;
* grid coordinates u (unit: one grid step, 0 = first stored value) relate to
  orthogonal xyz (Å) by u = G·xyz − origin with G = diag(grid_shape)·Frac;
* structure factors follow gemmi/the Fcalc engines, F(h) = Σ f exp(+2πi h·x),
  so ρ(x) = (1/V) Σ_h F(h) exp(−2πi h·x).  A model map built here from a
  Friedel-unique list H (no F000) is ρ(x) = (2/V) Re Σ_{h∈H} F_h e^{−2πi h·x};
* dT/dF follows :class:`refinekit.plugin_api.FTargetResult`
  (dT_dF = ∂T/∂A + i ∂T/∂B).

Sharpening/blurring multiplies F by exp(−B s²/4) (s = 1/d, Å⁻¹): B > 0 blurs,
B < 0 sharpens (as in e.g. Terwilliger et al. 2018, Acta Cryst. D74, 545).
"""

from __future__ import annotations

from dataclasses import replace

import gemmi
import numba
import numpy as np
import scipy.fft

from ..errors import InputError
from ..gradient import AtomGradient
from ..model import AtomModel, MapData

#: Resolution limits accepted for a map (Å).
MAX_RESOLUTION = 50.0
#: Threads for scipy.fft (it caches plans itself).
FFT_WORKERS = -1


# ----------------------------------------------------------------- geometry
def fractional_matrix(cell: gemmi.UnitCell) -> np.ndarray:
    """3×3 matrix mapping orthogonal xyz (Å) to fractional coordinates."""
    return np.array(cell.frac.mat.tolist(), dtype=np.float64)


def grid_matrix(m: MapData) -> np.ndarray:
    """G = diag(grid_shape)·Frac: grid steps per Å (so u = G·xyz − origin)."""
    return np.asarray(m.grid_shape, dtype=np.float64)[:, None] * fractional_matrix(m.cell)


def grid_coordinates(m: MapData, xyz: np.ndarray) -> np.ndarray:
    """Grid coordinates u (N, 3) of orthogonal positions ``xyz`` (Å), relative to the stored box."""
    return np.asarray(xyz, dtype=np.float64) @ grid_matrix(m).T - np.asarray(m.origin, dtype=np.float64)


def voxel_spacing(m: MapData) -> np.ndarray:
    """Distance (Å) between successive grid planes along a, b, c."""
    frac = fractional_matrix(m.cell)  # rows are a*, b*, c* (Å⁻¹)
    return 1.0 / (np.linalg.norm(frac, axis=1) * np.asarray(m.grid_shape, dtype=np.float64))


def grid_step(m: MapData) -> np.ndarray:
    """Length (Å) of one grid step along a, b, c (|a|/n_a, ...)."""
    orth = np.array(m.cell.orth.mat.tolist())  # columns are a, b, c
    return np.linalg.norm(orth, axis=0) / np.asarray(m.grid_shape, dtype=np.float64)


def covers_cell(m: MapData) -> bool:
    """True when the stored values span exactly one unit cell (periodic map)."""
    return tuple(m.values.shape) == tuple(m.grid_shape)


def box_cell(m: MapData) -> gemmi.UnitCell:
    """Unit cell spanned by the stored box (equal to ``m.cell`` for a full-cell map)."""
    c = m.cell
    f = np.asarray(m.values.shape, dtype=np.float64) / np.asarray(m.grid_shape, dtype=np.float64)
    return gemmi.UnitCell(c.a * f[0], c.b * f[1], c.c * f[2], c.alpha, c.beta, c.gamma)


# ----------------------------------------------------------------- checks
def require_model_inside(m: MapData, xyz: np.ndarray, what: str = "model") -> None:
    """Raise InputError when any atom lies outside the stored map box.

    The message names the axis and gives the model's extent and the box's
    extent along it in Å (fractional extent × cell edge).
    """
    frac = np.asarray(xyz, dtype=np.float64) @ fractional_matrix(m.cell).T
    lengths = (m.cell.a, m.cell.b, m.cell.c)
    shape = m.values.shape
    for axis, name in enumerate("abc"):
        lo_box = m.origin[axis] / m.grid_shape[axis]
        hi_box = (m.origin[axis] + shape[axis] - 1) / m.grid_shape[axis]
        lo, hi = frac[:, axis].min(), frac[:, axis].max()
        if lo < lo_box - 1e-9 or hi > hi_box + 1e-9:
            worst = int(np.argmin(frac[:, axis])) if lo < lo_box - 1e-9 else int(np.argmax(frac[:, axis]))
            raise InputError(
                f"the {what} lies outside the map box along {name}: atoms span "
                f"{lo * lengths[axis]:.2f} to {hi * lengths[axis]:.2f} Å but the map covers "
                f"{lo_box * lengths[axis]:.2f} to {hi_box * lengths[axis]:.2f} Å "
                f"(first offending atom: index {worst}); use a larger box or check the map origin",
                m.source or None)


def check_resolution(resolution: float | None, m: MapData) -> float:
    """Validate the map resolution d (Å) given by the user; return it as float.

    Refused: missing, not a number, ≤ 0, > 50 Å, or not coarser than the
    grid's Nyquist limit (d ≤ 2 × the longest grid step |a_i|/n_i), which is
    exactly when the reflection sphere fits the grid (see :func:`p1_hkl`).
    """
    where = m.source or None
    if resolution is None:
        raise InputError("map resolution is required (give the resolution in Å, "
                         "e.g. --resolution 3.0 or [data] resolution = 3.0)", where)
    try:
        d = float(resolution)
    except (TypeError, ValueError):
        raise InputError(f"map resolution must be a number in Å, got {resolution!r}", where) from None
    if not np.isfinite(d) or d <= 0:
        raise InputError(f"map resolution must be a positive number of Å, got {resolution!r}", where)
    if d > MAX_RESOLUTION:
        raise InputError(f"map resolution {d:g} Å is implausible (limit {MAX_RESOLUTION:g} Å)", where)
    nyquist = 2.0 * float(grid_step(m).max())
    if d <= nyquist * (1 + 1e-9):
        raise InputError(f"map resolution {d:g} Å is not coarser than the grid allows: grid step "
                         f"{nyquist / 2:.4f} Å gives a Nyquist limit of {nyquist:.4f} Å", where)
    return d


def check_values(values: np.ndarray, source: str = "") -> None:
    """Refuse empty, non-finite or constant maps (InputError)."""
    where = source or None
    if values.size == 0 or min(values.shape) == 0:
        raise InputError(f"the map has no grid points (shape {values.shape})", where)
    if not np.all(np.isfinite(values)):
        raise InputError("the map contains NaN or infinite values", where)
    if float(np.std(values, dtype=np.float64)) == 0.0:
        raise InputError(f"the map is constant (every value {float(values.flat[0]):g}); "
                         "it carries no density information", where)


# ----------------------------------------------------------------- Fourier space
def box_s2(cell: gemmi.UnitCell, shape: tuple[int, int, int]) -> np.ndarray:
    """s² (Å⁻²) for every index of an rfftn of a grid of ``shape`` spanning ``cell``."""
    idx = [scipy.fft.fftfreq(n, 1.0 / n) for n in shape[:2]] + [np.arange(shape[2] // 2 + 1)]
    h, k, l = np.meshgrid(*idx, indexing="ij")
    recip = fractional_matrix(cell)  # rows a*, b*, c*
    hkl = np.stack([h, k, l], axis=-1).astype(np.float64)
    s = hkl @ recip
    return np.einsum("...i,...i->...", s, s)


def apply_overall_b(m: MapData, b: float) -> MapData:
    """Blur (B > 0) or sharpen (B < 0) by exp(−B s²/4) in Fourier space; B in Å².

    The stored box is treated as periodic (exact for a full-cell map; for a
    cryo-EM box the box is the cell).  Returns a new MapData (float32).
    """
    if b == 0.0:
        return m
    cell = box_cell(m)
    shape = m.values.shape
    f = scipy.fft.rfftn(m.values.astype(np.float64), workers=FFT_WORKERS)
    f *= np.exp(-0.25 * b * box_s2(cell, shape))
    out = scipy.fft.irfftn(f, s=shape, workers=FFT_WORKERS).astype(np.float32)
    return replace(m, values=out)


def d99(m: MapData, fraction: float = 0.99) -> float:
    """Resolution d99 (Å) of a map: the d at which cutting its Fourier series keeps CC ≥ 0.99.

    Afonine et al. (2018), Acta Cryst. D74, 814–840, §2.2.3 ("d99"): a
    map's own estimate of its resolution, large for a blurred map whatever
    its nominal d.  By Parseval the correlation between the mean-removed map
    and its series truncated at s is √(P(<s)/P), P the power Σ|F|², so d99 is
    1/s at the first s where the cumulative power reaches ``fraction``².
    The stored box is treated as periodic (as in :func:`apply_overall_b`).
    """
    shape = m.values.shape
    f = scipy.fft.rfftn(m.values.astype(np.float64) - float(m.values.mean()), workers=FFT_WORKERS)
    power = f.real ** 2 + f.imag ** 2
    power[..., 1:(shape[2] + 1) // 2] *= 2.0  # planes standing for themselves and their Friedel mates
    s2 = box_s2(box_cell(m), shape).ravel()
    power = power.ravel()
    order = np.argsort(s2, kind="stable")
    cumulative = np.cumsum(power[order])
    if not cumulative[-1] > 0:
        raise InputError("the map is constant: it has no resolution", m.source or None)
    first = int(np.searchsorted(cumulative, fraction ** 2 * cumulative[-1]))
    return float(1.0 / np.sqrt(s2[order][min(first, len(order) - 1)]))


def p1_hkl(cell: gemmi.UnitCell, grid_shape: tuple[int, int, int], d_min: float) -> np.ndarray:
    """Friedel-unique P1 Miller indices with d ≥ d_min (no 000), shape (M, 3) int32.

    Unique half: l > 0, or l = 0 and k > 0, or l = k = 0 and h > 0.  Every
    index must fit on the grid without reaching Nyquist (|h| < n/2), else
    InputError (the resolution is too fine for the grid).
    """
    recip = fractional_matrix(cell)
    # bounding box of the sphere: h = a·s, so |h| ≤ |a|/d_min (a = column of Orth)
    orth = np.array(cell.orth.mat.tolist())
    lim = [int(np.floor(np.linalg.norm(orth[:, i]) / d_min)) + 1 for i in range(3)]
    kk, ll = np.meshgrid(np.arange(-lim[1], lim[1] + 1), np.arange(0, lim[2] + 1), indexing="ij")
    kk, ll = kk.ravel(), ll.ravel()
    s_max2 = 1.0 / d_min ** 2 * (1 + 1e-12)
    slabs = []
    for h in range(-lim[0], lim[0] + 1):  # one h-slab at a time keeps memory O(k·l)
        hkl = np.stack([np.full_like(kk, h), kk, ll], axis=1)
        s = hkl.astype(np.float64) @ recip
        s2 = np.einsum("ij,ij->i", s, s)
        keep = (s2 > 0) & (s2 <= s_max2)
        keep &= (ll > 0) | ((ll == 0) & ((kk > 0) | ((kk == 0) & (h > 0))))
        slabs.append(hkl[keep])
    hkl = np.concatenate(slabs)
    for i, n in enumerate(grid_shape):
        if len(hkl) and 2 * np.abs(hkl[:, i]).max() >= n:
            raise InputError(f"resolution {d_min:g} Å needs more than {n} grid points along "
                             f"{'abc'[i]} (Nyquist); use a coarser resolution")
    return hkl.astype(np.int32)


def _half_spectrum(values: np.ndarray, hkl: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """rfftn-shaped array with values at ``hkl`` (and Friedel mates on the l = 0 plane)."""
    y = np.zeros((shape[0], shape[1], shape[2] // 2 + 1), dtype=np.complex128)
    h, k, l = hkl[:, 0] % shape[0], hkl[:, 1] % shape[1], hkl[:, 2]
    y[h, k, l] = values
    plane = hkl[:, 2] == 0
    y[(-hkl[plane, 0]) % shape[0], (-hkl[plane, 1]) % shape[1], 0] = np.conj(values[plane])
    return y


def fc_to_map(fc: np.ndarray, hkl: np.ndarray, grid_shape: tuple[int, int, int],
              volume: float) -> np.ndarray:
    """ρ on the full-cell grid from Friedel-unique F (no F000): ρ = (2/V) Re Σ_H F e^{−2πi h·x}.

    Units: F in the table's units (electrons for X-rays) → ρ in units/Å³.
    Computed with one inverse real FFT: ρ = (N/V) irfftn(conj F̃), F̃ the
    Hermitian completion of F.
    """
    y = _half_spectrum(np.conj(fc), hkl, grid_shape)
    n = float(np.prod(grid_shape))
    return scipy.fft.irfftn(y, s=grid_shape, workers=FFT_WORKERS) * (n / volume)


def map_gradient_to_dF(g: np.ndarray, hkl: np.ndarray, volume: float) -> np.ndarray:
    """Adjoint of :func:`fc_to_map`: dT/dF (FTargetResult convention) from dT/dρ on the grid.

    With ρ = (2/V) Σ_H (A cos θ + B sin θ), θ = 2π h·x:
    dT/dA + i dT/dB = (2/V) Σ_x g(x) e^{+iθ} = (2/V) conj(rfftn(g))[h].
    """
    f = scipy.fft.rfftn(g, workers=FFT_WORKERS)
    shape = g.shape
    return (2.0 / volume) * np.conj(f[hkl[:, 0] % shape[0], hkl[:, 1] % shape[1], hkl[:, 2]])


def cut_box(full: np.ndarray, m: MapData) -> np.ndarray:
    """The part of a full-cell grid that ``m`` stores (indices wrapped)."""
    if covers_cell(m) and tuple(m.origin) == (0, 0, 0):
        return full
    idx = [(m.origin[i] + np.arange(m.values.shape[i])) % m.grid_shape[i] for i in range(3)]
    return full[np.ix_(*idx)]


def uncut_box(box: np.ndarray, m: MapData) -> np.ndarray:
    """Adjoint of :func:`cut_box`: scatter-add a stored-box array into a full-cell grid."""
    if covers_cell(m) and tuple(m.origin) == (0, 0, 0):
        return box
    full = np.zeros(m.grid_shape, dtype=box.dtype)
    idx = [(m.origin[i] + np.arange(m.values.shape[i])) % m.grid_shape[i] for i in range(3)]
    np.add.at(full, np.ix_(*idx), box)
    return full


# ----------------------------------------------------------------- masks
@numba.njit(cache=True, fastmath=False)
def _points_near(u, ginv, shape, periodic, reach, radius2, out_atom, out_flat):
    """For each atom, the stored-grid points within √radius2 Å; returns the count written (−1: arrays too small).

    The search box spans ±reach grid planes (reach = ⌈radius / plane spacing⌉).
    """
    n0, n1, n2 = shape[0], shape[1], shape[2]
    count = 0
    for a in range(u.shape[0]):
        c0 = int(np.floor(u[a, 0]))
        c1 = int(np.floor(u[a, 1]))
        c2 = int(np.floor(u[a, 2]))
        for i in range(c0 - reach[0], c0 + reach[0] + 2):
            if not periodic and (i < 0 or i >= n0):
                continue
            d0 = i - u[a, 0]
            for j in range(c1 - reach[1], c1 + reach[1] + 2):
                if not periodic and (j < 0 or j >= n1):
                    continue
                d1 = j - u[a, 1]
                for k in range(c2 - reach[2], c2 + reach[2] + 2):
                    if not periodic and (k < 0 or k >= n2):
                        continue
                    d2 = k - u[a, 2]
                    x = ginv[0, 0] * d0 + ginv[0, 1] * d1 + ginv[0, 2] * d2  # Å: ginv·(grid offset)
                    y = ginv[1, 0] * d0 + ginv[1, 1] * d1 + ginv[1, 2] * d2
                    z = ginv[2, 0] * d0 + ginv[2, 1] * d1 + ginv[2, 2] * d2
                    if x * x + y * y + z * z <= radius2:
                        if count >= out_atom.shape[0]:
                            return -1
                        ii = i % n0
                        jj = j % n1
                        kk = k % n2
                        out_atom[count] = a
                        out_flat[count] = (ii * n1 + jj) * n2 + kk
                        count += 1
    return count


def points_near_atoms(m: MapData, xyz: np.ndarray, radius: float,
                      periodic: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (atom index, flat index into ``m.values``) of grid points within ``radius`` Å.

    ``periodic`` defaults to :func:`covers_cell`; for a sub-box, points
    outside the stored box are dropped.
    """
    periodic = covers_cell(m) if periodic is None else periodic
    u = grid_coordinates(m, xyz)
    g = grid_matrix(m)
    ginv = np.linalg.inv(g)  # Å per grid step: xyz = ginv·u
    reach = np.ceil(radius / voxel_spacing(m)).astype(np.int64)
    shape = np.asarray(m.values.shape, dtype=np.int64)
    per_atom = int(np.prod(2 * reach + 2))
    size = max(1024, len(u) * per_atom // 2)
    while True:
        atom = np.empty(size, dtype=np.int64)
        flat = np.empty(size, dtype=np.int64)
        n = _points_near(u, ginv, shape, bool(periodic), reach, radius * radius, atom, flat)
        if n >= 0:
            return atom[:n], flat[:n]
        size = len(u) * per_atom


def mask_near_atoms(m: MapData, xyz: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask over ``m.values`` of grid points within ``radius`` Å of any atom."""
    _, flat = points_near_atoms(m, xyz, radius)
    mask = np.zeros(m.values.size, dtype=bool)
    mask[flat] = True
    return mask.reshape(m.values.shape)


# ----------------------------------------------------------------- correlation
def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length arrays (0 when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    da, db = a - a.mean(), b - b.mean()
    saa, sbb = float(da @ da), float(db @ db)
    if saa == 0.0 or sbb == 0.0:
        return 0.0
    return float(da @ db / np.sqrt(saa * sbb))


def correlation_and_gradient(obs: np.ndarray, model: np.ndarray) -> tuple[float, np.ndarray]:
    """CC(obs, model) and ∂CC/∂model (same shape as ``model``).

    ∂CC/∂m_n = (o_n − ō)/√(S_oo S_mm) − CC·(m_n − m̄)/S_mm, with S the
    centred sums of squares.
    """
    o = np.asarray(obs, dtype=np.float64)
    mdl = np.asarray(model, dtype=np.float64)
    do, dm = o - o.mean(), mdl - mdl.mean()
    soo, smm = float(np.vdot(do, do)), float(np.vdot(dm, dm))
    if soo == 0.0 or smm == 0.0:
        return 0.0, np.zeros_like(mdl)
    root = np.sqrt(soo * smm)
    cc = float(np.vdot(do, dm)) / root
    return cc, do / root - cc * dm / smm


# ----------------------------------------------------------------- model maps
class BoxModelMap:
    """Model density on a map's grid from an Fcalc engine, and its adjoint.

    The map's cell (for a cryo-EM box: the box, P 1) is the unit cell: the
    atoms are handed to ``engine.calc`` with that cell and the map's space
    group, for the Friedel-unique reflections with d ≥ ``d_min``
    (:func:`p1_hkl`); ρ_model = (2/V) Re Σ F e^{−2πi h·x} on the full-cell
    grid (a sharp resolution cut, no F000), cut to the stored box.  The
    adjoint maps ∂T/∂ρ (stored box) → ∂T/∂F → ``engine.gradient``, so no
    density is spread here (Agarwal 1978's route run backwards).
    """

    def __init__(self, engine, m: MapData, d_min: float, structure: gemmi.Structure):
        self.engine = engine
        self.map = m
        self.hkl = p1_hkl(m.cell, m.grid_shape, d_min)
        self.volume = m.cell.volume
        st = structure.clone()
        st.cell = m.cell
        st.spacegroup_hm = m.spacegroup.hm
        self.structure = st

    def boxed(self, model: AtomModel) -> AtomModel:
        """A view of ``model`` (same arrays) whose cell and space group are the map's."""
        return replace(model, structure=self.structure)

    def compute(self, model: AtomModel) -> np.ndarray:
        """ρ_model over the stored box (float64, shape of ``map.values``)."""
        fc = self.engine.calc(self.boxed(model), self.hkl)
        return cut_box(fc_to_map(fc, self.hkl, self.map.grid_shape, self.volume), self.map)

    def gradient(self, model: AtomModel, d_rho: np.ndarray) -> AtomGradient:
        """∂T/∂(atoms) from ∂T/∂ρ_model over the stored box."""
        full = uncut_box(np.asarray(d_rho, dtype=np.float64), self.map)
        dT_dF = map_gradient_to_dF(full, self.hkl, self.volume)
        return self.engine.gradient(self.boxed(model), self.hkl, dT_dF)
