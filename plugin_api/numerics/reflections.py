"""Reciprocal-space bookkeeping shared by every reflection plugin.

One place for: symmetry factors (ε, centric flags), free-R flag conventions
and stable generation, resolution binning, Friedel-pair merging, the
R-factor every plugin reports, and the Rice/Woolfson likelihood primitives
with the per-shell σA (D, σ_Δ²) fit shared by the ML targets.  Uses numpy,
scipy.special/optimize and gemmi.

Conventions
-----------
* ``hkl`` is an (M, 3) integer array; ``d`` is the resolution in Å.
* ``free`` / test-set masks are boolean arrays, True for the R-free (test) set.
* ε is the multiplicity of a reflection in the point group *without* lattice
  centring (International Tables Vol. B §2.1; the ε of Wilson statistics), so
  <|F_h|²> = ε_h Σ_N for a random-atom structure.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

import gemmi
import numpy as np
from scipy.special import i0e, i1e, roots_legendre

from ..errors import InputError
from ..model import ReflectionColumns, ReflectionData

__all__ = [
    "epsilon_and_centric", "interpret_free_flags", "generate_free_flags", "free_flags_from_column",
    "canonical_hkl", "resolution_bins", "merge_friedel", "find_anomalous_pairs",
    "RFactors", "r_factors", "log_i0", "bessel_ratio", "log_cosh", "rice_core",
    "rice_data_term", "rice_fisher_information", "SigmaaParameters", "fit_sigmaa", "free_set_for",
    "figure_of_merit", "sigmaa_map_coefficients", "map_coefficient_columns",
]


# --------------------------------------------------------------------------- symmetry
def _as_hkl(hkl: np.ndarray) -> np.ndarray:
    arr = np.asarray(hkl)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"hkl must have shape (M, 3), got {arr.shape}")
    return arr.astype(np.int32, copy=False)


def epsilon_and_centric(hkl: np.ndarray, spacegroup: gemmi.SpaceGroup) -> tuple[np.ndarray, np.ndarray]:
    """(ε, centric) for each reflection.

    ε (int) counts the point-group operations (lattice centring excluded)
    that leave h invariant; a reflection is centric when some operation maps
    h to −h.  Uses gemmi's vectorised ``GroupOps`` helpers.
    """
    arr = np.ascontiguousarray(_as_hkl(hkl))
    ops = spacegroup.operations()
    eps = np.asarray(ops.epsilon_factor_without_centering_array(arr), dtype=np.int32)
    centric = np.asarray(ops.centric_flag_array(arr), dtype=bool)
    return eps, centric


def canonical_hkl(hkl: np.ndarray, spacegroup: gemmi.SpaceGroup) -> np.ndarray:
    """A symmetry- and Friedel-invariant representative of every reflection.

    Among the images h·R of all point-group rotations and their Friedel
    mates −h·R, the lexicographically largest (h, k, l) is returned.  It is
    a pure function of the equivalence class, so it does not depend on the
    asymmetric-unit convention of the file it came from.
    """
    arr = _as_hkl(hkl).astype(np.int64)
    rots = np.array([op.rot for op in spacegroup.operations().sym_ops], dtype=np.int64)
    rots //= gemmi.Op.DEN
    images = np.einsum("mj,rjk->rmk", arr, rots)          # h' = h R
    images = np.concatenate([images, -images], axis=0)    # (2R, M, 3)
    key = ((images[..., 0] + 4096) * 8192 + (images[..., 1] + 4096)) * 8192 + images[..., 2] + 4096
    best = np.argmax(key, axis=0)
    return images[best, np.arange(len(arr))]


# --------------------------------------------------------------------------- free flags
FREE_CONVENTIONS = ("auto", "ccp4", "phenix", "mmcif")


def interpret_free_flags(values: np.ndarray, convention: str = "auto",
                         source: str | None = None) -> np.ndarray:
    """Boolean test-set mask from stored free-R flags.

    Conventions:

    * ``"ccp4"`` — FreeR_flag 0..N−1 (usually 0..19); 0 is the test set;
    * ``"phenix"`` — 0/1 (also CNS TEST, SHELX style), 1 is the test set;
    * ``"mmcif"`` — ``_refln.status`` strings: ``'f'`` free (test), ``'o'``
      work; anything else (``'x'`` unmeasured, ``'<'``, ``'-'``...) is
      not in the test set;
    * ``"auto"`` — strings → ``mmcif``; integers with a maximum above 1 →
      ``ccp4``; only 0 and 1 present → the *less frequent* value is the test
      set (phenix writes 1 for the ~5 % test set, CCP4 files with two
      values have 0 for the small test set; this is how servalcat and
      phenix guess too).

    Missing values (NaN, negative) are never test reflections.  Raises
    InputError when the result puts every reflection in the work set or
    every one in the test set.
    """
    if convention not in FREE_CONVENTIONS:
        raise InputError(f"unknown free-flag convention {convention!r}; expected one of {FREE_CONVENTIONS}",
                         source)
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        if convention not in ("auto", "mmcif"):
            raise InputError(f"free flags are strings (sf-mmCIF status) but convention {convention!r} "
                             "expects integers", source)
        mask = np.char.strip(arr.astype(str)) == "f"
        return _checked(mask, "status 'f'", source)
    num = np.asarray(arr, dtype=np.float64)
    present = np.isfinite(num) & (num >= 0)
    if convention == "mmcif":
        raise InputError("convention 'mmcif' expects status strings ('o', 'f'), got numbers", source)
    if convention == "auto":
        vals = np.unique(num[present])
        if vals.size and vals.max() > 1:
            convention = "ccp4"
        else:
            n1 = int(np.count_nonzero(present & (num == 1)))
            n0 = int(np.count_nonzero(present & (num == 0)))
            test_value = 1.0 if n1 <= n0 else 0.0
            return _checked(present & (num == test_value), f"flag == {int(test_value)} (auto, minority value)",
                            source)
    test_value = 0.0 if convention == "ccp4" else 1.0
    return _checked(present & (num == test_value), f"flag == {int(test_value)} ({convention})", source)


def _checked(mask: np.ndarray, rule: str, source: str | None) -> np.ndarray:
    n_test = int(np.count_nonzero(mask))
    if n_test == 0:
        raise InputError(f"free-R flags put no reflection in the test set (rule: {rule}); "
                         "generate flags or choose another convention", source)
    if n_test == len(mask):
        raise InputError(f"free-R flags put every reflection in the test set (rule: {rule})", source)
    return mask


def free_flags_from_column(values: np.ndarray, hkl: np.ndarray, spacegroup: gemmi.SpaceGroup,
                           convention: str = "auto", label: str = "",
                           source: str | None = None) -> tuple[np.ndarray, str]:
    """(test-set mask, how it was obtained) from a stored free-R flag column.

    A column that holds a single value for every reflection with a flag (all
    0, as some programs write when no test set was chosen, all 1, or only
    'o'/'x' statuses) defines no test set: read as CCP4 flags an all-zero
    column would put every reflection in the test set, read as PHENIX flags
    none.  Such a column is set aside and a test set is generated with
    :func:`generate_free_flags` (5 %, stable per reflection); the returned
    description says so, for the log.  Any other column goes through
    :func:`interpret_free_flags` (which raises InputError on an empty or
    complete test set).
    """
    arr = np.asarray(values)
    name = f"column {label}" if label else "the free-R flag column"
    if arr.dtype.kind in "USO":
        status = np.char.strip(arr.astype(str))
        if not np.any(status == "f"):
            found = ", ".join(repr(v) for v in np.unique(status)[:5])
            return (generate_free_flags(hkl, spacegroup),
                    f"generated 5 % test set ({name} has no status 'f', only {found})")
        return interpret_free_flags(status, convention, source), f"{label or 'status'} 'f'"
    num = np.asarray(arr, dtype=np.float64)
    present = np.isfinite(num) & (num >= 0)
    distinct = np.unique(num[present])
    if distinct.size <= 1:
        what = f"the single value {distinct[0]:g}" if distinct.size else "no valid flag"
        return (generate_free_flags(hkl, spacegroup),
                f"generated 5 % test set ({name} holds {what} for every reflection: no test set)")
    return interpret_free_flags(num, convention, source), label or "free-R flags"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective 64-bit mixer."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def generate_free_flags(hkl: np.ndarray, spacegroup: gemmi.SpaceGroup,
                        fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    """Test-set mask with ≈``fraction`` of reflections, stable per reflection.

    The flag of a reflection is a hash of its canonical (symmetry- and
    Friedel-reduced, :func:`canonical_hkl`) index and ``seed``, so it does
    not depend on the order of the input, on a resolution cut or on which
    symmetry mate the file stores; adding data at higher resolution keeps
    the old test set.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"free-set fraction must be in (0, 1), got {fraction}")
    canon = canonical_hkl(hkl, spacegroup).astype(np.int64) + 4096
    packed = (canon[:, 0] << 26) | (canon[:, 1] << 13) | canon[:, 2]
    mixed = _splitmix64(packed.astype(np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64))[0])
    uniform = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform < fraction


# --------------------------------------------------------------------------- binning
def resolution_bins(d: np.ndarray, n_bins: int | None = None, min_per_bin: int = 200,
                    max_bins: int = 20) -> np.ndarray:
    """Bin index (0 = lowest resolution) of each reflection in equal-volume shells.

    Shell edges are equally spaced in 1/d³ (equal reciprocal-space volume,
    hence ≈ equal counts for complete data) between the data's extremes.
    When ``n_bins`` is None it is ``N // min_per_bin`` clipped to
    [1, ``max_bins``].  Reflections with infinite d (000) go to bin 0.
    """
    d = np.asarray(d, dtype=np.float64)
    finite = np.isfinite(d) & (d > 0)
    if not finite.any():
        return np.zeros(len(d), dtype=np.int64)
    if n_bins is None:
        n_bins = int(np.clip(np.count_nonzero(finite) // max(min_per_bin, 1), 1, max_bins))
    s3 = np.zeros_like(d)
    s3[finite] = d[finite] ** -3.0
    lo, hi = s3[finite].min(), s3[finite].max()
    if hi <= lo:
        return np.zeros(len(d), dtype=np.int64)
    idx = np.floor((s3 - lo) / (hi - lo) * n_bins).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


# --------------------------------------------------------------------------- anomalous
_PAIR_PATTERNS = [
    (r"^(?P<base>.*)\(\+\)$", r"^(?P<base>.*)\(-\)$"),           # I(+) / I(-)
    (r"^(?P<base>.*)plus$", r"^(?P<base>.*)minus$"),             # Iplus / Iminus
    (r"^(?P<base>.*)_plus(?P<tail>.*)$", r"^(?P<base>.*)_minus(?P<tail>.*)$"),  # pdbx_I_plus_sigma
]


def find_anomalous_pairs(labels: list[str]) -> list[tuple[str, str]]:
    """Pairs (plus, minus) of Friedel-mate column labels among ``labels``.

    Recognises ``X(+)``/``X(-)`` (CCP4), ``Xplus``/``Xminus`` and the
    sf-mmCIF ``pdbx_X_plus[...]``/``pdbx_X_minus[...]`` names.
    """
    pairs = []
    names = set(labels)
    for label in labels:
        for plus_re, minus_re in _PAIR_PATTERNS:
            m = re.match(plus_re, label, flags=re.IGNORECASE)
            if not m:
                continue
            base, tail = m.group("base"), m.groupdict().get("tail") or ""
            for cand in names:
                mm = re.match(minus_re, cand, flags=re.IGNORECASE)
                if mm and mm.group("base") == base and (mm.groupdict().get("tail") or "") == tail:
                    pairs.append((label, cand))
                    break
            break
    return pairs


def merge_friedel(plus: np.ndarray, sigma_plus: np.ndarray | None, minus: np.ndarray,
                  sigma_minus: np.ndarray | None,
                  centric: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean of Friedel mates (intensities or amplitudes) and its σ.

    Both present: x = (x⁺ + x⁻)/2, σ = √(σ⁺² + σ⁻²)/2 (independent errors);
    one present: that one; none: NaN.  With ``centric`` given, a centric
    reflection whose two values are equal is one measurement written twice
    (Friedel's law holds exactly for it; merging programs copy it into both
    columns), so it keeps x⁺ and σ⁺ instead of a σ smaller by √2.  When
    both σ arrays are None (no σ columns) the returned σ is None.
    """
    plus, minus = np.asarray(plus, float), np.asarray(minus, float)
    no_sigma = sigma_plus is None and sigma_minus is None
    sp = np.full(plus.shape, np.nan) if sigma_plus is None else np.asarray(sigma_plus, float)
    sm = np.full(minus.shape, np.nan) if sigma_minus is None else np.asarray(sigma_minus, float)
    has_p, has_m = np.isfinite(plus), np.isfinite(minus)
    both = has_p & has_m
    if centric is not None:
        same = both & np.asarray(centric, bool) & (np.abs(plus - minus) <= 1e-6 * np.abs(plus))
        has_m = has_m & ~same
        both = both & ~same
    mean = np.where(both, 0.5 * (plus + minus), np.where(has_p, plus, minus))
    sig = np.where(both, 0.5 * np.sqrt(sp ** 2 + sm ** 2), np.where(has_p, sp, sm))
    mean = np.where(has_p | has_m, mean, np.nan)
    sig = np.where(has_p | has_m, sig, np.nan)
    return mean, (None if no_sigma else sig)


# --------------------------------------------------------------------------- R factors
@dataclass
class RFactors:
    """R-work / R-free overall and per shell (NaN where a set is empty)."""

    r_work: float
    r_free: float
    scale: float
    bin_r_work: np.ndarray
    bin_r_free: np.ndarray
    bin_n_work: np.ndarray
    bin_n_free: np.ndarray


def _r(fo: np.ndarray, fm: np.ndarray) -> float:
    den = float(np.sum(np.abs(fo)))
    return float(np.sum(np.abs(np.abs(fo) - fm)) / den) if den > 0 else float("nan")


def r_factors(f_obs: np.ndarray, f_model_abs: np.ndarray, free: np.ndarray,
              bins: np.ndarray | None = None, scale: bool = True) -> RFactors:
    """R = Σ| |Fo| − k|Fm| | / Σ|Fo| for the work and free sets, overall and per bin.

    ``k`` is the least-squares scale Σ|Fo||Fm| / Σ|Fm|² on the work set when
    ``scale`` is True, else 1 (Fmodel already scaled).  Reflections with a
    non-finite Fo or Fm are skipped.
    """
    fo = np.asarray(f_obs, float)
    fm = np.abs(np.asarray(f_model_abs))
    free = np.asarray(free, bool)
    ok = np.isfinite(fo) & np.isfinite(fm)
    work = ok & ~free
    test = ok & free
    k = 1.0
    if scale:
        den = float(np.sum(fm[work] ** 2))
        k = float(np.sum(np.abs(fo[work]) * fm[work]) / den) if den > 0 else 1.0
    fm = k * fm
    bins = np.zeros(len(fo), dtype=np.int64) if bins is None else np.asarray(bins)
    n_bins = int(bins.max()) + 1 if len(bins) else 0
    brw, brf, nw, nf = (np.full(n_bins, np.nan), np.full(n_bins, np.nan),
                        np.zeros(n_bins, int), np.zeros(n_bins, int))
    for b in range(n_bins):
        sel_w, sel_f = work & (bins == b), test & (bins == b)
        nw[b], nf[b] = np.count_nonzero(sel_w), np.count_nonzero(sel_f)
        if nw[b]:
            brw[b] = _r(fo[sel_w], fm[sel_w])
        if nf[b]:
            brf[b] = _r(fo[sel_f], fm[sel_f])
    return RFactors(r_work=_r(fo[work], fm[work]) if work.any() else float("nan"),
                    r_free=_r(fo[test], fm[test]) if test.any() else float("nan"),
                    scale=k, bin_r_work=brw, bin_r_free=brf, bin_n_work=nw, bin_n_free=nf)


# --------------------------------------------------------------------------- likelihood primitives
def log_i0(x: np.ndarray) -> np.ndarray:
    """ln I₀(x) for x ≥ 0 without overflow (scipy's exponentially scaled i0e)."""
    return np.log(i0e(x)) + x


def bessel_ratio(x: np.ndarray) -> np.ndarray:
    """m(x) = I₁(x)/I₀(x), stable for all x ≥ 0 (ratio of i1e/i0e)."""
    return i1e(x) / i0e(x)


def log_cosh(x: np.ndarray) -> np.ndarray:
    """ln cosh(x) without overflow."""
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - np.log(2.0)


def rice_core(f: np.ndarray, a: np.ndarray, sigma2: np.ndarray, centric: np.ndarray,
              want_derivs: bool = True):
    """Core of ln p(|F| = f | a, Σ) for the Rice (acentric) / Woolfson (centric) law.

    p(f) for an amplitude whose complex value is distributed about a point of
    modulus a (= D|Fc|) with total variance Σ (Luzzati 1952; Srinivasan &
    Ramachandran 1965; Read 1986 eq. 9 and 10):

        acentric  p = (2f/Σ) exp(−(f² + a²)/Σ) I₀(2fa/Σ)
        centric   p = √(2/(πΣ)) exp(−(f² + a²)/2Σ) cosh(fa/Σ)

    Returned ``core`` equals ln p minus the terms that depend on f only
    (ln 2f acentric, ½ ln(2/π) centric): add :func:`rice_data_term` for a
    normalised density.  With ``want_derivs`` also ∂core/∂a and ∂core/∂Σ.
    Shapes broadcast.
    """
    f, a, sigma2, cen = np.broadcast_arrays(np.asarray(f, float), np.asarray(a, float),
                                            np.asarray(sigma2, float), np.asarray(centric, bool))
    core = np.empty(f.shape)
    d_a = np.empty(f.shape) if want_derivs else None
    d_s = np.empty(f.shape) if want_derivs else None
    for is_centric, sel in ((False, ~cen), (True, cen)):
        if not sel.any():
            continue
        ff, aa, ss = f[sel], a[sel], sigma2[sel]
        q = (ff * ff + aa * aa) / ss
        with np.errstate(divide="ignore", invalid="ignore"):
            if is_centric:
                x = ff * aa / ss
                core[sel] = -0.5 * np.log(ss) - 0.5 * q + log_cosh(x)
            else:
                x = 2.0 * ff * aa / ss
                i0 = i0e(x)  # once for ln I₀ and I₁/I₀
                core[sel] = -np.log(ss) - q + (np.log(i0) + x)
        if want_derivs:
            if is_centric:
                t = np.tanh(x)
                d_a[sel] = (-aa + ff * t) / ss
                d_s[sel] = (-0.5 + 0.5 * q - x * t) / ss
            else:
                m = i1e(x) / i0
                d_a[sel] = (-2.0 * aa + 2.0 * ff * m) / ss
                d_s[sel] = (-1.0 + q - x * m) / ss
    if not want_derivs:
        return core
    return core, d_a, d_s


def rice_data_term(f: np.ndarray, centric: np.ndarray) -> np.ndarray:
    """The f-only part of ln p dropped by :func:`rice_core` (−inf at f = 0, acentric)."""
    with np.errstate(divide="ignore"):
        return np.where(centric, 0.5 * np.log(2.0 / np.pi), np.log(2.0 * np.asarray(f, float)))


def _fisher_table(centric: bool, a_max: float = 40.0, n: int = 801):
    """h(a) = E[(∂ ln p/∂a)²]·Σ for unit Σ on a grid of a (Rice or Woolfson), by quadrature."""
    nodes, weights = roots_legendre(400)
    grid = np.linspace(0.0, a_max, n)[:, None]
    # the density is negligible beyond a + 12 (unit variance); integrate r over [0, a + 12]
    hi = grid + 12.0
    r = 0.5 * hi * (nodes[None, :] + 1.0)
    w = 0.5 * hi * weights[None, :]
    core, d_a, _ = rice_core(r, grid, 1.0, centric)
    p = np.exp(core + rice_data_term(r, centric))
    return grid[:, 0], np.sum(w * p * d_a ** 2, axis=1)


_FISHER: dict[bool, tuple[np.ndarray, np.ndarray]] = {}


def rice_fisher_information(a: np.ndarray, sigma2: np.ndarray, centric: np.ndarray) -> np.ndarray:
    """Expected information E[(∂ ln p/∂a)²] of the Rice/Woolfson law, per reflection.

    Equals h(a/√Σ)/Σ with h tabulated once by quadrature; h → 2 (acentric)
    and 1 (centric) for a ≫ √Σ, the limits used beyond the table.
    """
    cen = np.asarray(centric, bool)
    x = np.asarray(a, float) / np.sqrt(sigma2)
    out = np.empty(np.broadcast(x, cen).shape)
    for flag, limit in ((False, 2.0), (True, 1.0)):
        if flag not in _FISHER:
            _FISHER[flag] = _fisher_table(flag)
        grid, table = _FISHER[flag]
        sel = cen == flag
        out[sel] = np.interp(x[sel], grid, table, right=limit)
    return out / sigma2


# --------------------------------------------------------------------------- σA parameters
@dataclass
class SigmaaParameters:
    """D and σ_Δ² (``s``, per unit ε) at shell centres, interpolated in s² = 1/d².

    Read (1986) Acta Cryst. A42, 140; Murshudov et al. (1997) Acta Cryst. D53,
    240.  ``d`` and ``s`` are interpolated linearly in s² (ln s for σ_Δ²),
    held constant beyond the outer shells.
    """

    s2_centres: np.ndarray
    d_values: np.ndarray
    s_values: np.ndarray
    n_used: np.ndarray
    used_set: str

    def at(self, d_spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(D, σ_Δ²) for reflections of resolution ``d_spacing`` (Å)."""
        s2 = 1.0 / np.asarray(d_spacing, float) ** 2
        dd = np.interp(s2, self.s2_centres, self.d_values)
        ss = np.exp(np.interp(s2, self.s2_centres, np.log(self.s_values)))
        return dd, ss


def fit_sigmaa(nll: Callable[[np.ndarray, float, float], tuple[float, float, float]], d_spacing: np.ndarray, fo_sq_over_eps: np.ndarray, fc_abs: np.ndarray,
               fo_abs: np.ndarray, eps: np.ndarray, used_set: str,
               min_per_bin: int = 100, max_bins: int = 20) -> SigmaaParameters:
    """Maximum-likelihood D and σ_Δ² per equal-volume shell.

    ``nll(sel, D, S) -> (value, ∂value/∂D, ∂value/∂S)`` is the negative
    log-likelihood summed over reflections ``sel`` (an index array) for
    scalar D and S; ``fo_sq_over_eps``, ``fc_abs``, ``fo_abs`` and ``eps``
    give the moment estimates that start each fit.  Each shell is fitted
    independently over (D ≥ 0, ln S) by L-BFGS-B.
    """
    from scipy.optimize import minimize

    bins = resolution_bins(d_spacing, min_per_bin=min_per_bin, max_bins=max_bins)
    n_bins = int(bins.max()) + 1
    s2 = 1.0 / d_spacing ** 2
    centres, dvals, svals, counts = [], [], [], []
    for b in range(n_bins):
        sel = np.flatnonzero(bins == b)
        if len(sel) == 0:
            continue
        fc2 = float(np.sum(fc_abs[sel] ** 2))
        d0 = float(np.clip(np.sum(fo_abs[sel] * fc_abs[sel]) / fc2, 0.05, 2.0)) if fc2 > 0 else 0.5
        mean_fo2 = float(np.mean(fo_sq_over_eps[sel]))
        s0 = max(mean_fo2 - d0 ** 2 * float(np.mean(fc_abs[sel] ** 2 / eps[sel])), 0.05 * mean_fo2, 1e-12)

        def fun(p, sel=sel):
            v, gd, gs = nll(sel, p[0], np.exp(p[1]))
            return v, np.array([gd, gs * np.exp(p[1])])

        res = minimize(fun, np.array([d0, np.log(s0)]), jac=True, method="L-BFGS-B",
                       bounds=[(0.0, 5.0), (np.log(s0) - 20.0, np.log(s0) + 20.0)])
        centres.append(float(np.mean(s2[sel])))
        dvals.append(float(res.x[0]))
        svals.append(float(np.exp(res.x[1])))
        counts.append(len(sel))
    return SigmaaParameters(np.array(centres), np.array(dvals), np.array(svals),
                            np.array(counts), used_set)


def free_set_for(context, working) -> tuple[ReflectionData, np.ndarray, np.ndarray]:
    """Free reflections of ``context.data`` in the working set's resolution range.

    Returns (free ReflectionData, k_total (M,), F_part (M,)) from the
    context's scales, so F_model = k_total·(F_calc + F_part).
    """
    data = context.data
    d_max, d_min = working.resolution()
    sel = np.asarray(data.free, bool) & (data.d >= d_min - 1e-9) & (data.d <= d_max + 1e-9)
    free = data.subset(sel)
    if len(free) == 0:
        return free, np.zeros(0), np.zeros(0, complex)
    k, f_part = context.fmodel_scales(free)
    return free, k, f_part


def sigmaa_fitting_set(free_lik, work_lik, fc_free: np.ndarray, d_free: np.ndarray,
                       work_fc: Callable[[], np.ndarray], d_work: np.ndarray, min_free: int,
                       log: Callable[[str], None] | None = None):
    """The reflections σA (D, σ_Δ) is fitted on: the free set, or work + free when it is small.

    ``free_lik`` / ``work_lik`` are likelihood dataclasses of one class whose
    fields are all per-reflection arrays; ``fc_free``/``d_free`` are |F_c| and d (Å) of the free ones;
    ``work_fc()`` gives |F_c| of the working ones (called only when pooling).
    Returns (likelihood, |F_c|, d, "free" or "all").  Fitting on the free set
    keeps the estimate unbiased by the refinement (Pannu & Read 1996, Acta
    Cryst. A52, 659); with fewer than ``min_free`` free reflections the
    working set is pooled in rather than fit a handful of points per bin
    (said through ``log`` when given).
    """
    if len(fc_free) >= min_free:
        return free_lik, fc_free, d_free, "free"
    if log is not None:
        log(f"only {len(fc_free)} free reflections (< min_free {min_free}); D and sigma_delta "
            "fitted on all reflections")
    pooled = type(free_lik)(*(np.concatenate([getattr(work_lik, f.name), getattr(free_lik, f.name)])
                              for f in dataclasses.fields(free_lik)))
    return pooled, np.concatenate([work_fc(), fc_free]), np.concatenate([d_work, d_free]), "all"


# --------------------------------------------------------------------------- σA map coefficients
def figure_of_merit(f_obs: np.ndarray, a: np.ndarray, sigma2: np.ndarray,
                    centric: np.ndarray) -> np.ndarray:
    """Figure of merit m = <cos Δφ> of the Rice/Woolfson law (Read 1986, Acta Cryst. A42, 140;
    Sim 1959, Acta Cryst. 12, 813, for the acentric/centric weights).

    With X = 2·Fo·a/Σ (a = D·|F_model|, Σ the total variance of the
    likelihood, :func:`rice_core`): acentric m = I₁(X)/I₀(X), centric
    m = tanh(X/2).  m ∈ [0, 1); dimensionless.
    """
    x = 2.0 * np.asarray(f_obs, float) * np.asarray(a, float) / np.asarray(sigma2, float)
    return np.where(np.asarray(centric, bool), np.tanh(0.5 * x), bessel_ratio(x))


def sigmaa_map_coefficients(f_obs: np.ndarray, sigma_f: np.ndarray, f_model: np.ndarray,
                            d: np.ndarray, s: np.ndarray, eps: np.ndarray, centric: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σA-weighted coefficients (FWT, DELFWT complex; FOM real) per reflection.

    Read (1986) Acta Cryst. A42, 140: with model phases φ = arg F_model,
    a = D·|F_model| and the variance of the amplitude likelihood
    Σ = ε·σ_Δ² + (2 acentric | 1 centric)·σ_F² (Pannu & Read 1996),

    * acentric: FWT = (2m·Fo − a)·e^{iφ}, DELFWT = (m·Fo − a)·e^{iφ};
    * centric: FWT = m·Fo·e^{iφ}, DELFWT = (m·Fo − a)·e^{iφ} (REFMAC,
      servalcat and phenix convention: no model bias to remove along a
      fixed phase line);
    * Fo missing (NaN): FWT = a·e^{iφ} (fill-in), DELFWT = 0, FOM = 0.

    ``f_obs``, ``sigma_f`` and ``f_model`` on the same scale (F_model
    already includes k_total); ``s`` is σ_Δ² per unit ε.  A negative
    coefficient (2mFo < a) comes out as the opposite phase.
    """
    fm = np.asarray(f_model, complex)
    fm_abs = np.abs(fm)
    phase = np.where(fm_abs > 0, fm / np.where(fm_abs > 0, fm_abs, 1.0), 1.0)
    fo = np.asarray(f_obs, float)
    have = np.isfinite(fo)
    fo0 = np.where(have, fo, 0.0)
    cen = np.asarray(centric, bool)
    sig_f = np.nan_to_num(np.asarray(sigma_f, float))
    a = np.asarray(d, float) * fm_abs
    sigma2 = np.asarray(eps, float) * np.asarray(s, float) + np.where(cen, 1.0, 2.0) * sig_f ** 2
    fom = np.where(have, figure_of_merit(fo0, a, sigma2, cen), 0.0)
    m_fo = fom * fo0
    fwt = np.where(have, np.where(cen, m_fo, 2.0 * m_fo - a), a) * phase
    delfwt = np.where(have, m_fo - a, 0.0) * phase
    return fwt, delfwt, fom


def map_coefficient_columns(data: ReflectionData, fwt: np.ndarray, delfwt: np.ndarray,
                            f_calc: np.ndarray, fom: np.ndarray) -> ReflectionColumns:
    """The standard MTZ map-coefficient columns for ``data``'s reflections.

    FWT/PHWT, DELFWT/PHDELWT, FC/PHIC (amplitudes; phases in degrees) and
    FOM (type W), the labels REFMAC writes and Coot recognises.
    """
    deg = np.degrees
    return ReflectionColumns(data.hkl, data.cell, data.spacegroup, [
        ("FWT", "F", np.abs(fwt)), ("PHWT", "P", deg(np.angle(fwt))),
        ("DELFWT", "F", np.abs(delfwt)), ("PHDELWT", "P", deg(np.angle(delfwt))),
        ("FC", "F", np.abs(f_calc)), ("PHIC", "P", deg(np.angle(f_calc))),
        ("FOM", "W", np.asarray(fom, float))])
