"""Riding hydrogens: each H tied to the heavy atom it is bonded to.

Parents are found geometrically (the nearest non-H atom within
``max_distance`` Å of a compatible alternative conformation), so
parameterizations need no restraint dictionary.  Used by ``b-iso`` for
riding B values (B_H = r·B_parent with r fixed at setup, as SHELXL's
Uiso(H) = 1.2·Ueq(parent) riding model; Sheldrick, Acta Cryst. A64, 112
(2008)).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..model import AtomModel


def altlocs(model: AtomModel) -> np.ndarray:
    """Alternative-location letter of every atom ('' when none)."""
    st = model.structure[0]
    out = np.empty(model.n_atoms, dtype=object)
    for i, (ci, ri, ai) in enumerate(model.atom_ref):
        alt = st[int(ci)][int(ri)][int(ai)].altloc
        out[i] = "" if alt == "\0" else alt
    return out


def hydrogen_parents(model: AtomModel, max_distance: float = 1.3) -> np.ndarray:
    """Index of each atom's parent heavy atom; −1 for non-H atoms and orphan H."""
    parents = np.full(model.n_atoms, -1, dtype=np.int64)
    is_h = model.is_hydrogen
    heavy = np.flatnonzero(~is_h)
    hyd = np.flatnonzero(is_h)
    if len(hyd) == 0 or len(heavy) == 0:
        return parents
    alt = altlocs(model)
    dist, nearest = cKDTree(model.xyz[heavy]).query(model.xyz[hyd], k=min(4, len(heavy)),
                                                    distance_upper_bound=max_distance)
    dist, nearest = dist.reshape(len(hyd), -1), nearest.reshape(len(hyd), -1)
    for row, h in enumerate(hyd):
        for d, k in zip(dist[row], nearest[row]):
            if not np.isfinite(d):
                break
            p = heavy[k]
            if alt[p] == "" or alt[h] == "" or alt[p] == alt[h]:
                parents[h] = p
                break
    return parents
