"""Space-group operations as arrays, and symmetry expansion of Miller indices.

A structure factor of the whole crystal is a sum over the space group's
operations (R_s, t_s) (centring translations included):

    F(h) = Σ_j Σ_s g_j(R_sᵀ h) exp(2πi h·(R_s x_j + t_s))
         = Σ_s exp(2πi h·t_s) F₁(R_sᵀ h),

where F₁ is the P1 transform of the atoms *as given* (an asymmetric unit,
their own anisotropic factors g_j unrotated).  So F(h) needs F₁ only at the
|G| rotated indices R_sᵀ h, with the phase shifts exp(2πi h·t_s)
(International Tables Vol. B, 1.4.2).  Fractional coordinates throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np


@dataclass(frozen=True)
class SymOps:
    """All operations of a space group: x' = R x + t in fractional coordinates.

    ``rot`` (S, 3, 3) int, ``tran`` (S, 3) float (fractions of a cell edge).
    """

    rot: np.ndarray
    tran: np.ndarray

    @classmethod
    def from_spacegroup(cls, sg: gemmi.SpaceGroup) -> "SymOps":
        """Every operation of ``sg`` (symmetry × centring), identity first."""
        ops = list(sg.operations())
        den = gemmi.Op.DEN
        rot = np.array([op.rot for op in ops], dtype=np.int64) // den
        tran = np.array([op.tran for op in ops], dtype=np.float64) / den
        return cls(rot, tran)

    def __len__(self) -> int:
        return len(self.rot)


def expand_hkl(ops: SymOps, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotated indices k_hs = R_sᵀ h (M, S, 3) and phases exp(2πi h·t_s) (M, S).

    With these, F(h) = Σ_s phase[h, s] · F₁(k[h, s]) for the P1 transform F₁
    of the atoms given (see the module docstring).
    """
    hkl = np.asarray(hkl, dtype=np.int64)
    k = np.einsum("sji,mj->msi", ops.rot, hkl)
    phase = np.exp(2j * np.pi * (hkl.astype(np.float64) @ ops.tran.T))
    return k, phase


def reciprocal_s2(cell: gemmi.UnitCell, hkl: np.ndarray) -> np.ndarray:
    """s² = 1/d² (Å⁻²) of each Miller index."""
    frac = np.array(cell.frac.mat.tolist())
    s = np.asarray(hkl, dtype=np.float64) @ frac
    return np.einsum("ij,ij->i", s, s)


__all__ = ["SymOps", "expand_hkl", "reciprocal_s2"]


def as_hkl(hkl: np.ndarray) -> np.ndarray:
    """Miller indices as a contiguous (M, 3) int64 array; InputError otherwise."""
    from ..errors import InputError

    arr = np.asarray(hkl)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"Miller indices must have shape (M, 3), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError("Miller indices must be integers")
    return np.ascontiguousarray(arr, dtype=np.int64)


def geometry_key(hkl: np.ndarray, cell: gemmi.UnitCell, sg: gemmi.SpaceGroup) -> tuple:
    """Hashable identity of (reflections, cell, space group) for caches."""
    return (hkl.shape, hash(hkl.tobytes()), tuple(round(v, 6) for v in cell.parameters), sg.hall)


__all__ += ["as_hkl", "geometry_key"]
