"""Floating origins: directions along which moving the whole model changes no intensity.

In a polar space group (P1, P2₁, C2, P4₃, P6₅, ...) the origin along the
polar axis is not fixed by symmetry, so a uniform translation of all atoms
along it leaves every |F| unchanged and reciprocal-space refinement can
drift freely along it.  The floating directions are the vectors v with
R v = v for every rotation R of the space group (International Tables
Vol. A, §8.1 / "allowed origin shifts").  Parameterizations keep the
centroid of the moved atoms fixed along them (a linear constraint, so
value and gradient stay exactly consistent).
"""

from __future__ import annotations

import gemmi
import numpy as np


def floating_directions(cell: gemmi.UnitCell, spacegroup: gemmi.SpaceGroup) -> np.ndarray:
    """Orthonormal Cartesian directions (k, 3) of the floating origin (k = 0..3)."""
    orth = np.array(cell.orth.mat.tolist())
    frac = np.array(cell.frac.mat.tolist())
    rows = []
    for op in spacegroup.operations().sym_ops:
        rot = np.array(op.rot, dtype=float) / op.DEN
        rows.append(orth @ rot @ frac - np.eye(3))
    stacked = np.vstack(rows)
    _, sing, vt = np.linalg.svd(stacked)
    rank = int(np.sum(sing > 1e-8))
    return vt[rank:].copy()


def fix_centroid(xyz: np.ndarray, reference_centroid: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``xyz`` shifted so its centroid matches ``reference_centroid`` along ``directions``."""
    if len(directions) == 0 or len(xyz) == 0:
        return xyz
    drift = (xyz.mean(axis=0) - reference_centroid) @ directions.T
    return xyz - drift @ directions


def project_gradient(grad: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`fix_centroid` applied to a per-atom gradient (n, 3)."""
    if len(directions) == 0 or len(grad) == 0:
        return grad
    mean = grad.mean(axis=0) @ directions.T
    return grad - mean @ directions
